#!/usr/bin/env python3
"""Compare two embedrank outputs of the same inputs (CPU vs CUDA) for bench/gpu_quant.sh.

usage:
  gpu_quant_compare.py embed LABEL A.npy B.npy MIN_COSINE      # row-wise cosine, min and mean
  gpu_quant_compare.py rerank LABEL A.json B.json MAX_ABS_DIFF # per-document score difference, same order
                                                              # (beyond near-ties)
  gpu_quant_compare.py bench BF16.json QUANT.json              # time ratio of two `bench --json` results
Prints one line per comparison; exits 1 when a bound is missed (the shell script counts failures).
"""
import json
import sys

import numpy as np


def embed(label, a, b, bound):
    x, y = np.load(a).astype(np.float64), np.load(b).astype(np.float64)
    if x.shape != y.shape:
        print(f"FAIL {label}: shapes {x.shape} vs {y.shape}")
        return False
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    ok = cos.min() >= bound
    print(f"{'ok  ' if ok else 'FAIL'} {label}: {len(cos)} texts, cosine min {cos.min():.6f} mean {cos.mean():.6f} "
          f"(bound {bound})")
    return ok


def rerank(label, a, b, bound):
    def scores(p):
        with open(p) as f:
            return {r["index"]: r["relevance_score"] for r in json.load(f)["results"]}

    x, y = scores(a), scores(b)
    diff = max(abs(x[i] - y[i]) for i in x)
    # Order must agree wherever the reference's gap exceeds twice the bound (near-ties may swap).
    same_order = all(y[i] > y[j] for i in x for j in x if x[i] - x[j] > 2 * bound)
    ok = diff <= bound and same_order
    print(f"{'ok  ' if ok else 'FAIL'} {label}: {len(x)} documents, max |score diff| {diff:.2e} (bound {bound}), "
          f"same order: {same_order}")
    return ok


def bench(a, b):
    def load(p):
        with open(p) as f:
            v = json.load(f)
        return v["results"][0] if "results" in v else v

    x, y = load(a), load(b)
    ratio = y["wall_s"] / x["wall_s"]
    for name, r in [("bf16 ", x), ("4-bit", y)]:
        lat = r.get("latency") or {}
        print(f"{name} {r['model']}: {r['tokens_per_s']:.0f} tokens/s, {r['wall_s']:.2f} s per pass "
              f"({r['real_tokens']} real tokens, {r['texts']} texts, batch {r['batch_size']}), "
              f"p50 {lat.get('p50_ms', float('nan')):.2f} ms, load {r['load_s']:.1f} s, MFU {100 * (r.get('mfu') or 0):.1f}%")
    ok = ratio <= 1.5
    print(f"{'ok  ' if ok else 'MISS'} 4-bit / bf16 time per pass: {ratio:.3f}x (target <= 1.5x)")
    return ok


def main():
    kind = sys.argv[1]
    if kind == "embed":
        ok = embed(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif kind == "rerank":
        ok = rerank(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif kind == "bench":
        ok = bench(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
