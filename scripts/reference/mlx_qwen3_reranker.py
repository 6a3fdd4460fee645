#!/usr/bin/env python3
"""The tiny random Qwen3 reranker (tests' `.cache/tiny/tiny-Qwen3-Reranker`, made by
`cargo run --example make_tiny_models`) quantized by `mlx_lm.convert` (4-bit, group 64), scored by
mlx-lm: sigmoid(logit[yes] - logit[no]) at the last token of the official Qwen3-Reranker prompt,
one pair at a time (no padding). Writes tests/fixtures/mlx/qwen3_reranker_mlx.json with the scores
and the sha256 of every tensor mlx_lm.convert wrote (the Rust test converts the same model with
`embedrank convert` and must match them).

usage: mlx_qwen3_reranker.py TINY_DIR   (needs pip install mlx mlx-cpu mlx-lm transformers)
"""
import hashlib
import json
import os
import sys
import tempfile

import mlx.core as mx
import mlx_lm
import numpy as np
from mlx_lm import convert, load
from transformers import AutoTokenizer

tiny = os.path.join(sys.argv[1], "tiny-Qwen3-Reranker")
root = os.path.join(os.path.dirname(__file__), "..", "..")

PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
          "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Mix flour, water, salt and yeast; knead, let it rise, then bake.",
    "a",
    "Ünïcödé façade — 日本語 text 🚀",
]

out = os.path.join(tempfile.mkdtemp(prefix="mlx-qwen3-rr-"), "q4")
convert(tiny, mlx_path=out, quantize=True, q_group_size=64, q_bits=4)
model, _ = load(out)
tok = AutoTokenizer.from_pretrained(tiny)
yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
pre = tok.encode(PREFIX, add_special_tokens=False)
suf = tok.encode(SUFFIX, add_special_tokens=False)
scores = []
for q in QUERIES:
    row = []
    for d in DOCS:
        body = f"<Instruct>: {TASK}\n<Query>: {q}\n<Document>: {d}"
        ids = pre + tok(body)["input_ids"] + suf
        logits = model(mx.array([ids]))[0, -1].astype(mx.float32)
        diff = float(logits[yes] - logits[no])
        row.append({"raw": diff, "score": float(1 / (1 + np.exp(-diff))), "tokens": len(ids)})
    scores.append(row)
w = mx.load(os.path.join(out, "model.safetensors"))
digests = {k: hashlib.sha256(np.array(v.view(mx.uint8)).tobytes()).hexdigest() for k, v in sorted(w.items())}
cfg = json.load(open(os.path.join(out, "config.json")))
res = {
    "source": f"mlx {mx.__version__}, mlx-lm {mlx_lm.__version__}, CPU",
    "quantization": cfg["quantization"],
    "instruction": TASK,
    "queries": QUERIES,
    "documents": DOCS,
    "scores": scores,
    "digests": digests,
}
path = os.path.join(root, "tests", "fixtures", "mlx", "qwen3_reranker_mlx.json")
with open(path, "w") as f:
    json.dump(res, f, ensure_ascii=False, indent=1)
print(f"wrote {path}: {len(digests)} tensors, quantization {cfg['quantization']}")
