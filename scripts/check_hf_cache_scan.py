#!/usr/bin/env python3
"""Check that huggingface_hub's own cache scan sees a repo as a valid cache entry: listed, with the
revision's ref, every file's blob present with the right size, no scan warnings, and
`try_to_load_from_cache` finding config.json. Used by tests/pull.rs on caches written by `embedrank pull`.

usage: check_hf_cache_scan.py CACHE_DIR REPO_ID [--revision main]
Exit 0 when valid, 1 otherwise (reasons on stderr); needs `pip install huggingface_hub`.
"""
import argparse
import json
import os
import sys

from huggingface_hub import scan_cache_dir, try_to_load_from_cache


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("repo_id")
    ap.add_argument("--revision", default="main")
    a = ap.parse_args()
    info = scan_cache_dir(a.cache)
    problems = [f"scan warning: {w}" for w in info.warnings]
    repos = [r for r in info.repos if r.repo_id == a.repo_id and r.repo_type == "model"]
    if not repos:
        problems.append(f"{a.repo_id} not found by scan_cache_dir (found: {[r.repo_id for r in info.repos]})")
    files = 0
    for repo in repos:
        revs = [r for r in repo.revisions if a.revision in r.refs or r.commit_hash == a.revision]
        if not revs:
            problems.append(f"no revision with ref {a.revision} (refs: {[sorted(r.refs) for r in repo.revisions]})")
        for rev in revs:
            if rev.nb_files == 0:
                problems.append(f"revision {rev.commit_hash} has no files")
            for f in rev.files:
                files += 1
                if not os.path.isfile(f.blob_path):
                    problems.append(f"{f.file_name}: blob {f.blob_path} missing")
                elif os.path.getsize(f.blob_path) != f.size_on_disk:
                    problems.append(f"{f.file_name}: size mismatch")
    hit = try_to_load_from_cache(a.repo_id, "config.json", cache_dir=a.cache, revision=a.revision)
    if not isinstance(hit, str) or not os.path.isfile(hit):
        problems.append(f"try_to_load_from_cache(config.json) returned {hit!r}")
    for p in problems:
        print(p, file=sys.stderr)
    print(json.dumps({"repo": a.repo_id, "valid": not problems, "files": files}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
