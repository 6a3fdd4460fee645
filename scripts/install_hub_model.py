#!/usr/bin/env python3
"""Install a folder of model files into a Hugging Face hub cache, in the layout huggingface_hub
writes: blobs named by etag (sha256 for LFS-type files, git blob sha1 for the rest), relative
snapshot symlinks, refs/<revision>. Idempotent: re-running with the same files changes nothing.

usage: install_hub_model.py SRC_DIR ORG/NAME HUB_CACHE [--revision main]
"""
import argparse
import hashlib
import os
import sys

LFS_EXT = {".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".pt", ".gguf", ".ot", ".npz"}


def etag(path):
    data = open(path, "rb").read()
    if os.path.splitext(path)[1] in LFS_EXT or len(data) > 10 * 1024 * 1024:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("repo_id")
    ap.add_argument("cache")
    ap.add_argument("--revision", default="main")
    a = ap.parse_args()
    files = []
    for root, _, names in os.walk(a.src):
        for n in names:
            full = os.path.join(root, n)
            rel = os.path.relpath(full, a.src)
            if rel.startswith(".") or "__pycache__" in rel:
                continue
            files.append((rel, full))
    files.sort()
    tags = [(rel, full, etag(full)) for rel, full in files]
    commit = hashlib.sha1("".join(f"{r}\0{t}\n" for r, _, t in tags).encode()).hexdigest()
    repo = os.path.join(a.cache, "models--" + a.repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    for rel, full, tag in tags:
        blob = os.path.join(repo, "blobs", tag)
        if not os.path.exists(blob):
            tmp = blob + ".incomplete"
            with open(full, "rb") as fi, open(tmp, "wb") as fo:
                fo.write(fi.read())
            os.replace(tmp, blob)
        link = os.path.join(repo, "snapshots", commit, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        target = os.path.relpath(blob, os.path.dirname(link))
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)
    ref = os.path.join(repo, "refs", a.revision)
    os.makedirs(os.path.dirname(ref), exist_ok=True)
    with open(ref + ".tmp", "w") as f:
        f.write(commit)
    os.replace(ref + ".tmp", ref)
    print(os.path.join(repo, "snapshots", commit))


if __name__ == "__main__":
    sys.exit(main())
