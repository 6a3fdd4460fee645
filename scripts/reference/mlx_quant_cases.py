#!/usr/bin/env python3
"""MLX affine quantization reference cases, written to tests/fixtures/mlx/quant_cases.safetensors.

For every bits (2, 3, 4, 5, 6, 8) x group size (32, 64, 128): a seeded random weight W [4, 128]
(float32; plus bfloat16 copies for 4- and 8-bit), `mx.quantize` -> packed/scales/biases,
`mx.dequantize` -> deq, and `mx.quantized_matmul(x, ..., transpose=True)` for a random x [2, 128].
Needs `pip install mlx mlx-cpu` (MLX runs on Linux CPU). Tensor names: `<case>.<what>` with case
`b{bits}_g{gs}_{dtype}`; metadata records the MLX version.
"""
import os

import mlx.core as mx
import numpy as np

N, K, M = 4, 128, 2
root = os.path.join(os.path.dirname(__file__), "..", "..")
out_dir = os.path.join(root, "tests", "fixtures", "mlx")
os.makedirs(out_dir, exist_ok=True)

rng = np.random.default_rng(20260401)
tensors = {}
for bits in (2, 3, 4, 5, 6, 8):
    for gs in (32, 64, 128):
        dtypes = ["f32", "bf16"] if bits in (4, 8) else ["f32"]
        for dt in dtypes:
            case = f"b{bits}_g{gs}_{dt}"
            # Row scales vary so groups have different ranges; a few outliers exercise the sign rule.
            w = rng.standard_normal((N, K)).astype(np.float32) * rng.uniform(0.01, 0.2, (N, 1)).astype(np.float32)
            w[0, 5] = 0.9
            w[1, 7] = -0.9
            x = rng.standard_normal((M, K)).astype(np.float32)
            wm = mx.array(w)
            if dt == "bf16":
                wm = wm.astype(mx.bfloat16)
            q, s, b = mx.quantize(wm, group_size=gs, bits=bits)
            deq = mx.dequantize(q, s, b, group_size=gs, bits=bits).astype(mx.float32)
            xm = mx.array(x).astype(wm.dtype)
            y = mx.quantized_matmul(xm, q, s, b, transpose=True, group_size=gs, bits=bits).astype(mx.float32)
            tensors[f"{case}.w"] = wm
            tensors[f"{case}.packed"] = q
            tensors[f"{case}.scales"] = s
            tensors[f"{case}.biases"] = b
            tensors[f"{case}.deq"] = deq
            tensors[f"{case}.x"] = mx.array(x)
            tensors[f"{case}.y"] = y
path = os.path.join(out_dir, "quant_cases.safetensors")
mx.save_safetensors(path, tensors, metadata={"mlx": mx.__version__, "script": "scripts/reference/mlx_quant_cases.py"})
print(f"wrote {path}: {len(tensors) // 7} cases, {os.path.getsize(path)} bytes")
