"""Shared by the peer benchmark scripts: the workload exactly as `embedrank bench` builds it, the
latency summary it prints, and running `embedrank bench --json`.

Documents: a BEIR corpus.jsonl, each `(title + " " + text).strip()` or the stripped text when the
title is empty (what BEIR's SentenceBERT wrapper and embedrank's eval loader feed the model), first
N in file order. Queries: queries.jsonl beside the corpus, in file order.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np


def load_docs(path, limit):
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            title, text = d.get("title") or "", d["text"]
            docs.append(f"{title} {text}".strip() if title else text.strip())
            if len(docs) >= limit:
                break
    return docs


def load_queries(corpus_path, queries_path=None):
    path = queries_path or os.path.join(os.path.dirname(os.path.abspath(corpus_path)), "queries.jsonl")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                t = json.loads(line)["text"]
                if t.strip():
                    out.append(t)
    return out


def latency_summary(seconds):
    """Same numbers as embedrank's bench::stats (numpy's linear percentiles), in ms."""
    ms = np.sort(np.asarray(seconds, dtype=np.float64) * 1e3)
    return {
        "n": int(ms.size),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms[0]),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms[-1]),
    }


def time_runs(fn, runs):
    """Wall time of `runs` calls of fn(), after the caller's own warm-up."""
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return walls


def latencies(fn, queries, n):
    for q in queries[:3]:
        fn(q)  # warm-up, as embedrank does
    out = []
    for i in range(n):
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - t0)
    return out


def result(name, real_tokens, texts, walls, lat, **extra):
    wall = float(np.median(walls))
    r = {
        "name": name,
        "texts": texts,
        "real_tokens": int(real_tokens),
        "runs": [{"wall_s": w, "tokens_per_s": real_tokens / w, "texts_per_s": texts / w} for w in walls],
        "wall_s": wall,
        "tokens_per_s": float(np.median([real_tokens / w for w in walls])),
        "texts_per_s": float(np.median([texts / w for w in walls])),
        "latency": latency_summary(lat) if lat else None,
    }
    r.update(extra)
    return r


def run_embedrank(binary, args, env_extra=None):
    """Run `embedrank bench ... --json` and return its report."""
    env = dict(os.environ)
    env.update(env_extra or {})
    cmd = [binary, "bench", *args, "--json"]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"embedrank bench failed with exit code {p.returncode}")
    r = json.loads(p.stdout)
    r["name"] = "embedrank"
    return r


def print_table(rows, baseline="embedrank"):
    """One line per runner; the ratio column is embedrank's tokens/s over that runner's."""
    base = next((r for r in rows if r["name"] == baseline), None)
    head = f"{baseline} x"
    print(f"{'runner':<34} {'tokens/s':>10} {'texts/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {head:>15}")
    for r in rows:
        lat = r.get("latency") or {}
        ratio = base["tokens_per_s"] / r["tokens_per_s"] if base and r["tokens_per_s"] > 0 else float("nan")
        f = lambda k: f"{lat[k]:8.2f}" if k in lat else f"{'-':>8}"
        print(
            f"{r['name']:<34} {r['tokens_per_s']:10.0f} {r['texts_per_s']:8.1f} {f('p50_ms')} {f('p95_ms')} "
            f"{f('p99_ms')} {ratio:15.2f}"
        )
