#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 from sentence-transformers (float32, CPU), written to
tests/fixtures/minilm_golden.json. Run after scripts/fetch-test-models.sh, in a venv with
sentence-transformers (scripts/reference/requirements.txt)."""
import json
import os
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, os.path.dirname(__file__))
from golden_texts import TEXTS  # noqa: E402

root = os.path.join(os.path.dirname(__file__), "..", "..")
hub = os.path.join(root, ".cache", "hub", "models--sentence-transformers--all-MiniLM-L6-v2")
commit = open(os.path.join(hub, "refs", "main")).read().strip()
model = SentenceTransformer(os.path.join(hub, "snapshots", commit), device="cpu")
torch.manual_seed(0)
emb = model.encode(TEXTS, batch_size=16, convert_to_numpy=True)
lens = [len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]) for t in TEXTS]
out = {
    "source": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, float32 CPU",
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "max_seq_length": model.max_seq_length,
    "texts": TEXTS,
    "token_counts": lens,
    "embeddings": [[float(f"{x:.7g}") for x in row] for row in emb.tolist()],
}
path = os.path.join(root, "tests", "fixtures", "minilm_golden.json")
with open(path, "w") as f:
    json.dump(out, f, ensure_ascii=False)
print(f"wrote {path}: {len(TEXTS)} texts, max tokens {max(lens)}")
