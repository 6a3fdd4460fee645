#!/usr/bin/env python3
"""Do embedrank on CUDA and sentence-transformers agree on a checkpoint saved by THIS machine's
transformers? For BERT-class models (the Qwen3 shapes are checked by gpu_peers.py): a seeded random
BERT-base-shaped model (12 x 768, CLS pooling + Normalize, bge-base / arctic-embed-m layout) is made
with transformers, saved with `save_pretrained` and sentence-transformers `save()` (as a user's
fine-tune is), then every document is embedded by both, bf16 and f32, and the cosines printed.
Exits 3 when bf16 falls under 0.999 or f32 under 0.9999.

usage (GPU machine): python3 bench/gpu_agree.py --embedrank BIN --tokenizer-dir DIR --input corpus.jsonl
  --tokenizer-dir holds a BERT WordPiece tokenizer (all-MiniLM-L6-v2's tokenizer.json, vocab.txt, ...)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402


def make_bert(out, tok_dir, seed=0):
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072, max_position_embeddings=512)
    raw = os.path.join(out, "raw")
    transformers.BertModel(cfg).eval().save_pretrained(raw)
    for f in os.listdir(tok_dir):
        if f.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(os.path.join(tok_dir, f), raw)
    word = models.Transformer(raw, max_seq_length=512)
    st = SentenceTransformer(modules=[word, models.Pooling(768, pooling_mode="cls"), models.Normalize()])
    dest = os.path.join(out, "bert-base-shape")
    st.save(dest)
    shutil.rmtree(raw)
    print(f"bert-base shape saved by transformers {transformers.__version__}; config keys: "
          + ", ".join(sorted(json.load(open(os.path.join(dest, "config.json"))))))
    return dest


def embedrank_vectors(binary, model_dir, texts, dtype):
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.jsonl")
        with open(inp, "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        cmd = [binary, "embed", "--model", model_dir, "--device", "cuda", "--dtype", dtype, "--input", inp,
               "--format", "json"]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit(f"embedrank embed failed with exit code {p.returncode}")
        return np.array([d["embedding"] for d in json.loads(p.stdout)["data"]], dtype=np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedrank", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/agree")
    a = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    os.makedirs(a.out, exist_ok=True)
    model = make_bert(a.out, a.tokenizer_dir)
    docs = common.load_docs(a.input, a.limit)
    failed = False
    for dtype, torch_dtype, bar in [("bf16", torch.bfloat16, 0.999), ("f32", torch.float32, 0.9999)]:
        st = SentenceTransformer(model, device="cuda", model_kwargs={"dtype": torch_dtype})
        ref = st.encode(docs, batch_size=32).astype(np.float64)
        mine = embedrank_vectors(a.embedrank, model, docs, dtype)
        cos = (ref * mine).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(mine, axis=1)
        ok = cos.min() >= bar
        failed |= not ok
        print(f"bert-base shape {dtype}: {len(docs)} documents, min cosine {cos.min():.6f}, mean {cos.mean():.6f}, "
              f"under {bar}: {(cos < bar).sum()} -> {'pass' if ok else 'FAIL'}", flush=True)
        del st
        torch.cuda.empty_cache()
    # Every compute path of this machine (CPU paths and CUDA) on the same checkpoint.
    p = subprocess.run([a.embedrank, "check", "--backends", "--device", "cuda", model], text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(p.stdout)
    failed |= p.returncode != 0
    sys.exit(3 if failed else 0)


if __name__ == "__main__":
    main()
