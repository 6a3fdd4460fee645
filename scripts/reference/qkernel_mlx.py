#!/usr/bin/env python3
"""Reference for the MLX affine quantizer and dequantizer in src/weights/qkernel/ (Rust `quantize`,
`dequantize_rows`, `matmul`), written to tests/fixtures/qkernel_mlx.json.

For every bits in {2,3,4,5,6,8} and group size in {32,64,128}: MLX's own `mx.quantize` of a seeded
random f32 matrix (with edge-case groups: constant, all-zero, mostly-negative, mostly-positive,
tiny range), its `mx.dequantize`, and `mx.quantized_matmul` against a seeded activation matrix.

Needs: pip install mlx mlx-cpu (MLX's CPU backend runs on Linux).
"""
import json
import os

import mlx.core as mx
import numpy as np

N, K, M = 6, 256, 2


def weight(rng):
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.05
    w[1, :32] = 0.25  # constant group
    w[2, :32] = 0.0  # all zero group
    w[3, :] -= 0.08  # negative-dominated rows: the min edge is exact
    w[4, :] += 0.08  # positive-dominated rows: the max edge is exact
    w[5, 32:64] = rng.standard_normal(32).astype(np.float32) * 1e-6  # tiny range
    return w


def f32s(a):
    """Shortest decimal that round-trips each float32, to keep the fixture small."""
    return [float(str(v)) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def main():
    rng = np.random.default_rng(8)
    w = weight(rng)
    x = rng.standard_normal((M, K)).astype(np.float32)
    cases = []
    for bits in (2, 3, 4, 5, 6, 8):
        for gs in (32, 64, 128):
            q, s, b = mx.quantize(mx.array(w), group_size=gs, bits=bits)
            deq = mx.dequantize(q, s, b, group_size=gs, bits=bits)
            y = mx.quantized_matmul(mx.array(x), q, s, b, transpose=True, group_size=gs, bits=bits)
            mx.eval(q, s, b, deq, y)
            cases.append(
                {
                    "bits": bits,
                    "group_size": gs,
                    "packed": np.array(q).astype(np.uint32).reshape(-1).tolist(),
                    "scales": f32s(s),
                    "biases": f32s(b),
                    "dequantized": f32s(deq),
                    "matmul": f32s(y),
                }
            )
    out = {
        "mlx_version": mx.__version__,
        "n": N,
        "k": K,
        "m": M,
        "weight": f32s(w),
        "x": f32s(x),
        "cases": cases,
    }
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "qkernel_mlx.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(f"wrote {os.path.normpath(path)} ({len(cases)} cases, mlx {mx.__version__})")


if __name__ == "__main__":
    main()
