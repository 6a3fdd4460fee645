#!/usr/bin/env python3
"""Reference outputs of the tiny random models (made by `cargo run --example make_tiny_models`,
seed 42) from transformers / sentence-transformers, float32 CPU, following each model card's
official recipe. Writes tests/fixtures/tiny_golden.json.

usage: tiny_golden.py TINY_DIR
"""
import json
import os
import sys

import sentence_transformers
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

tiny = sys.argv[1]
root = os.path.join(os.path.dirname(__file__), "..", "..")
torch.set_grad_enabled(False)

TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERIES = ["What is the capital of China?", "Explain gravity", "how to bake bread", "Rust borrow checker"]
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and is responsible for the movement of planets around the sun.",
    "Mix flour, water, salt and yeast; knead, let it rise, then bake at 230 °C.",
    "The borrow checker enforces ownership rules at compile time.",
    "a",
    "Ünïcödé façade — 日本語 text 🚀",
    "word " * 80,
    "Short doc.",
    "Another document about the weather in Paris, which is mild in spring and hot in summer.",
    "  spaced   out   text  ",
    "The Eiffel Tower is in Paris.",
    "Quantum computers use qubits.",
]


def detailed(task, q):
    return f"Instruct: {task}\nQuery:{q}"


def qwen3_embed(name, texts, max_length):
    path = os.path.join(tiny, name)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModel.from_pretrained(path, torch_dtype=torch.float32).eval()
    eod = tok.convert_tokens_to_ids("<|endoftext|>")
    enc = tok(texts, padding=False, truncation=True, max_length=max_length)
    ids = []
    for row in enc["input_ids"]:
        # Append <|endoftext|> unless the tokenizer's template already did (the fixed upstream tokenizer).
        if not row or row[-1] != eod:
            row = row[: max_length - 1] + [eod]
        ids.append(row)
    batch = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    out = model(**batch).last_hidden_state
    pooled = out[:, -1]  # left padding: the last position is every row's last real token
    return pooled, [len(r) for r in ids], ids


def embed_case(name):
    texts = [detailed(TASK, q) for q in QUERIES] + DOCS
    pooled, lens, ids = qwen3_embed(name, texts, 48)
    full = F.normalize(pooled, p=2, dim=1)
    mrl = F.normalize(pooled[:, :32], p=2, dim=1)
    return {"texts": QUERIES + DOCS, "n_queries": len(QUERIES), "token_ids": ids,
            "embeddings": full.tolist(), "embeddings_dim32": mrl.tolist()}


PREFIX = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
RR_QUERY = "What is the capital of France?"
RR_DOCS = DOCS[:4] + ["Paris is the capital of France.", "France's capital city is Paris, on the Seine.", "Berlin is in Germany.", "word " * 120]
RR_MAX = 160


def rerank_inputs(tok, instruction, query, docs):
    prefix_ids = tok.encode(PREFIX, add_special_tokens=False)
    suffix_ids = tok.encode(SUFFIX, add_special_tokens=False)
    pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {d}" for d in docs]
    enc = tok(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
              max_length=RR_MAX - len(prefix_ids) - len(suffix_ids))
    for i, ele in enumerate(enc["input_ids"]):
        enc["input_ids"][i] = prefix_ids + ele + suffix_ids
    ids = [list(x) for x in enc["input_ids"]]
    return tok.pad(enc, padding=True, return_tensors="pt", max_length=RR_MAX), ids


def reranker_case():
    path = os.path.join(tiny, "tiny-Qwen3-Reranker")
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    out = {}
    for key, instr in [("default", TASK), ("custom", "Find the sentence that names a city")]:
        inputs, ids = rerank_inputs(tok, instr, RR_QUERY, RR_DOCS)
        logits = model(**inputs).logits[:, -1, :]
        pair = torch.stack([logits[:, no], logits[:, yes]], dim=1)
        scores = torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()
        out[key] = {"instruction": instr, "scores": scores.tolist(), "raw": (logits[:, yes] - logits[:, no]).tolist(), "token_ids": ids}
    return out


def seq_cls_case():
    path = os.path.join(tiny, "tiny-qwen3-reranker-seq-cls")
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForSequenceClassification.from_pretrained(path, torch_dtype=torch.float32).eval()
    inputs, _ = rerank_inputs(tok, TASK, RR_QUERY, RR_DOCS)
    logits = model(**inputs).logits[:, 0]
    return {"scores": torch.sigmoid(logits).tolist(), "raw": logits.tolist()}


def cross_encoder_case():
    from sentence_transformers import CrossEncoder
    path = os.path.join(tiny, "tiny-bert-cross-encoder")
    ce = CrossEncoder(path, device="cpu", max_length=64)
    pairs = [(RR_QUERY, d) for d in RR_DOCS]
    scores = ce.predict(pairs, convert_to_numpy=True)
    raw = ce.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    return {"max_length": 64, "scores": scores.tolist(), "raw": raw.tolist()}


out = {
    "source": f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, float32 CPU",
    "embed": embed_case("tiny-qwen3-embedding"),
    "embed_eos_template": embed_case("tiny-qwen3-embedding-eos-template"),
    "rerank_query": RR_QUERY,
    "rerank_docs": RR_DOCS,
    "rerank_max_length": RR_MAX,
    "reranker": reranker_case(),
    "seq_cls": seq_cls_case(),
    "cross_encoder": cross_encoder_case(),
}
path = os.path.join(root, "tests", "fixtures", "tiny_golden.json")
with open(path, "w") as f:
    json.dump(out, f, ensure_ascii=False)
print("wrote", path)
