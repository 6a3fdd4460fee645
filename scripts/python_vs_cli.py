#!/usr/bin/env python3
"""Encode throughput of the Python package against the CLI on the same texts (docs/python.md).

The CLI's compute time is its wall time on N texts less its wall time on one text (process start and
model load); the package's is the `encode` call alone. Best of --repeat runs each, alternating.
Also checks that both give the same bits.

    .venv/bin/python scripts/python_vs_cli.py [--cli target/debug/embedrank] [-n 2000]
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import embedrank

ROOT = Path(__file__).resolve().parents[1]


def corpus(n: int) -> list:
    words = "the quick brown fox jumps over a lazy dog while embeddings of short and long texts are computed".split()
    return [" ".join(words[(i * 7 + k) % len(words)] for k in range(8 + (i * 13) % 120)) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=str(ROOT / "target/debug/embedrank"))
    ap.add_argument("-m", "--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache/hub"))
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = corpus(a.n)
    tmp = Path(tempfile.mkdtemp())
    for name, items in (("all.jsonl", texts), ("one.jsonl", texts[:1])):
        (tmp / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in items))

    def cli(inp: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            [a.cli, "-q", "embed", "-m", a.model, "--cache-dir", a.cache_dir, "--input", str(tmp / inp),
             "--format", "npy", "-o", str(tmp / inp.replace(".jsonl", ".npy"))],
            check=True,
        )
        return time.perf_counter() - t0

    emb = embedrank.Embedder(a.model, cache_dir=a.cache_dir)
    cli_s, py_s = [], []
    for _ in range(a.repeat):
        cli_s.append(cli("all.jsonl") - cli("one.jsonl"))
        t0 = time.perf_counter()
        ours = emb.encode(texts)
        py_s.append(time.perf_counter() - t0)
    same = np.array_equal(ours.view(np.uint32), np.load(tmp / "all.npy").view(np.uint32))
    c, p = min(cli_s), min(py_s)
    print(f"{a.n} texts, {a.model}: CLI {a.n / c:.0f} texts/s ({c:.2f} s), Python {a.n / p:.0f} texts/s ({p:.2f} s), "
          f"ratio {c / p:.3f}; identical bits: {same}")


if __name__ == "__main__":
    main()
