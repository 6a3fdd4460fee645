#!/usr/bin/env python3
"""MLX's own quantized all-MiniLM-L6-v2 as the reference for embedrank's loader and `convert`.

Writes tests/fixtures/mlx/minilm_mlx.json with, for 4-bit and 8-bit (group 64):
- sha256 of every tensor of the checkpoint made by `mlx_embeddings.convert` (float16, as its default);
  the Rust test converts the same model with `embedrank convert --dtype f16` and must match them all;
- MLX's embeddings of the golden texts for the 4-bit checkpoint (max_length 256 = the model's
  max_seq_length), and cosine (mean/min) of MLX's 4-bit / 8-bit embeddings vs MLX's float ones.

With `--check DIR...` it also loads checkpoints made by `embedrank convert` in mlx-embeddings and
checks every parameter MLX loaded (codes, scales, biases, other tensors) equals both the file and
MLX's own conversion, and records the result under "embedrank_convert_checked".

Needs: pip install mlx mlx-cpu mlx-embeddings; the test model from scripts/fetch-test-models.sh.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, os.path.dirname(__file__))
from golden_texts import TEXTS  # noqa: E402

root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
hub = os.path.join(root, ".cache", "hub", "models--sentence-transformers--all-MiniLM-L6-v2")
src = os.path.join(hub, "snapshots", open(os.path.join(hub, "refs", "main")).read().strip())
MAX_LEN = 256


def digests(path):
    w = mx.load(os.path.join(path, "model.safetensors"))
    return {k: hashlib.sha256(np.array(v.view(mx.uint8) if v.dtype != mx.bfloat16 else v.view(mx.uint16)).tobytes()).hexdigest()
            for k, v in sorted(w.items())}


def embed(path):
    from mlx_embeddings.utils import load
    model, tok = load(path)
    out = []
    for i in range(0, len(TEXTS), 8):
        batch = TEXTS[i:i + 8]
        enc = tok(batch, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="np")
        res = model(mx.array(enc["input_ids"]), attention_mask=mx.array(enc["attention_mask"]))
        out.append(np.array(res.text_embeds.astype(mx.float32)))
    return model, np.concatenate(out)


def cos_stats(a, b):
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"mean": float(c.mean()), "min": float(c.min())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", nargs="*", default=[], help="embedrank-converted folders to load in MLX")
    args = ap.parse_args()
    from mlx_embeddings.convert import convert
    import mlx_embeddings

    tmp = tempfile.mkdtemp(prefix="mlx-minilm-")
    _, float_emb = embed(src)
    result = {
        "source": f"mlx {mx.__version__}, mlx-embeddings {mlx_embeddings.__version__}, CPU",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_length": MAX_LEN,
        "texts": TEXTS,
    }
    mlx_models = {}
    for bits in (4, 8):
        out = os.path.join(tmp, f"minilm-{bits}bit")
        convert(src, mlx_path=out, quantize=True, q_group_size=64, q_bits=bits)
        model, emb = embed(out)
        mlx_models[bits] = out
        result[f"q{bits}"] = {
            "group_size": 64,
            "dtype": "float16",
            "digests": digests(out),
            "cosine_vs_mlx_float": cos_stats(emb, float_emb),
        }
        if bits == 4:
            result["q4"]["embeddings"] = [[float(f"{x:.5g}") for x in row] for row in emb.tolist()]
    checked = []
    for d in args.check:
        from mlx_embeddings.utils import load
        model, _ = load(d)
        loaded = dict(tree_flatten(model.parameters()))
        file = mx.load(os.path.join(d, "model.safetensors"))
        cfg = json.load(open(os.path.join(d, "config.json")))
        bits = cfg["quantization"]["bits"]
        ref = mx.load(os.path.join(mlx_models[bits], "model.safetensors")) if bits in mlx_models else {}
        bad = []
        for k, v in file.items():
            if k not in loaded:
                bad.append(f"{k}: not a parameter of the MLX model")
                continue
            if loaded[k].dtype != v.dtype or not mx.array_equal(loaded[k], v):
                bad.append(f"{k}: MLX loaded different values or dtype")
            if ref and (k not in ref or not mx.array_equal(ref[k], v)):
                bad.append(f"{k}: differs from mlx_embeddings.convert")
        missing = [k for k in loaded if k not in file]
        entry = {"dir": os.path.basename(os.path.normpath(d)), "bits": bits, "tensors": len(file),
                 "problems": bad + [f"{k}: missing from file" for k in missing]}
        print(f"{d}: {len(file)} tensors, {len(entry['problems'])} problems", *entry["problems"][:10], sep="\n  ")
        checked.append(entry)
    result["embedrank_convert_checked"] = checked
    path = os.path.join(root, "tests", "fixtures", "mlx", "minilm_mlx.json")
    with open(path, "w") as f:
        json.dump(result, f, ensure_ascii=False)
    print(f"wrote {path}; 4-bit vs float {result['q4']['cosine_vs_mlx_float']}, 8-bit {result['q8']['cosine_vs_mlx_float']}")


if __name__ == "__main__":
    main()
