#!/usr/bin/env python3
"""Golden fixtures of checkpoints SAVED by the current transformers / sentence-transformers (issue 16).

For each case: load the source model with the current libraries, apply the case's config change, save it
the way a user saves a fine-tune (SentenceTransformer.save / CrossEncoder.save) into a temp dir, reload
the SAVED copy and compute reference outputs (float32, CPU, every text alone: batch of one, no padding).
Writes tests/fixtures/saved/<case>/: every non-weight file the libraries wrote (README.md dropped, large
tokenizer files only when they differ and are small), plus tensors.json (saved safetensors header and
the mapping to the source tensors), manifest.json (what was written, sha256, tokenizer comparisons) and
reference.json (outputs). See tests/fixtures/saved/README.md.

usage (the reference venv, requirements in scripts/reference/requirements-saved.txt):
  /work/main/.cache/refvenv/bin/python scripts/reference/saved_golden.py [--tiny DIR] [--hub DIR] [--out DIR]
"""
import argparse
import ast
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

ap = argparse.ArgumentParser()
ap.add_argument("--tiny", default=os.path.join(ROOT, ".cache", "tiny"), help="tiny models (cargo tests write them)")
ap.add_argument("--hub", default=os.path.join(ROOT, ".cache", "hub"), help="HF hub cache holding all-MiniLM-L6-v2")
ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "saved"))
ap.add_argument("--only", default=None, help="comma-separated case names")
args = ap.parse_args()

# Offline and single-threaded before torch / HF imports: the hub copy is local, and one thread keeps the
# float reductions in one order from run to run.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = args.hub
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy  # noqa: E402
import safetensors  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from sentence_transformers import CrossEncoder, SentenceTransformer  # noqa: E402

torch.set_num_threads(1)
torch.set_grad_enabled(False)
torch.manual_seed(0)

TINY_MARKER = ".complete-v1"
QWEN3_EMBED = "tiny-qwen3-embedding"  # src/synth.rs tiny::QWEN3_EMBED
BERT_CROSS_ENCODER = "tiny-bert-cross-encoder"  # src/synth.rs tiny::BERT_CROSS_ENCODER
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
EOD = "<|endoftext|>"


def golden_texts():
    """TASK, QUERIES, DOCS, RR_QUERY, RR_DOCS from tiny_golden.py (that script runs on import, so only its
    constant assignments are evaluated here, to keep one copy of the texts)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_golden.py")
    tree = ast.parse(open(path, encoding="utf-8").read())
    want = {"TASK", "QUERIES", "DOCS", "RR_QUERY", "RR_DOCS"}
    ns = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in want for t in node.targets):
            exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), ns)
    missing = want - ns.keys()
    if missing:
        sys.exit(f"tiny_golden.py lacks {sorted(missing)}")
    return ns


G = golden_texts()
VERSIONS = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "sentence_transformers": sentence_transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "safetensors": safetensors.__version__,
    "numpy": numpy.__version__,
}

# Qwen3 cases: config_kwargs given to SentenceTransformer (-> AutoConfig.from_pretrained overrides), as a
# user changing the rope of their fine-tune would. `reference`: False = config files only (we refuse it).
QWEN3_CASES = {
    "qwen3-embed-default": dict(config_kwargs={}, reference=True,
                                expect_rope={"rope_theta": 1000000.0, "rope_type": "default"}),
    "qwen3-embed-linear": dict(config_kwargs={"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}},
                               reference=True),
    "qwen3-embed-dynamic": dict(config_kwargs={"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0}},
                                reference=True),
    # Extra: max_position_embeddings 16, so every text longer than 16 tokens runs the NTK rescaling (each
    # text from a fresh rotary state; see reset_dynamic_rope).
    "qwen3-embed-dynamic-long": dict(config_kwargs={"max_position_embeddings": 16,
                                                    "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000000.0}},
                                     # ST caps max_seq_length at max_position_embeddings (16); ask for 48 as a user would.
                                     reload_kwargs={"processor_kwargs": {"model_max_length": 48}},
                                     reference=True),
    "qwen3-embed-yarn": dict(config_kwargs={"rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                                                "original_max_position_embeddings": 16, "rope_theta": 1000000.0}},
                             reference=True),
    "qwen3-embed-llama3": dict(config_kwargs={"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                                                  "rope_theta": 1000000.0}},
                               reference=True),
    # Extra: with original_max_position_embeddings 16 every frequency of head_dim 16 is either smoothed or
    # divided (2*pi > 16/4); 64 leaves the highest frequency unchanged, smooths the next, divides the rest: all three llama3
    # branches run.
    "qwen3-embed-llama3-wide": dict(config_kwargs={"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
                                                                       "rope_theta": 1000000.0}},
                                    reference=True),
    "qwen3-embed-longrope": dict(config_kwargs={"rope_parameters": {
        "rope_type": "longrope", "rope_theta": 1000000.0, "original_max_position_embeddings": 16,
        "short_factor": [1.0, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0, 2.5],
        "long_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]}}, reference=False),
    "qwen3-embed-sliding": dict(config_kwargs={"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1,
                                               "layer_types": ["full_attention", "sliding_attention"]}, reference=False),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def f7(x):
    """7 significant digits (float32 carries ~7.2)."""
    return float(f"{float(x):.7g}")


def rows7(t):
    return [[f7(v) for v in row] for row in t]


def dump_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def json_diff(a, b, path="", out=None, limit=40):
    """Paths where two JSON values differ (saved a vs source b), with short renderings."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append({"path": f"{path}/{k}", "saved": "<absent>", "source": short(b[k])})
            elif k not in b:
                out.append({"path": f"{path}/{k}", "saved": short(a[k]), "source": "<absent>"})
            elif a[k] != b[k]:
                json_diff(a[k], b[k], f"{path}/{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                json_diff(x, y, f"{path}/{i}", out, limit)
    else:
        out.append({"path": path or "/", "saved": short(a), "source": short(b)})
    return out


def short(v):
    s = json.dumps(v, ensure_ascii=False)
    return v if len(s) <= 200 else s[:200] + "..."


def safetensors_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def map_source_name(name, source_names):
    """The source tensor a saved tensor came from: same name, else a `bert.` / `model.` prefix added or
    dropped (the only renames transformers does for these architectures)."""
    cands = [name]
    for p in ("bert.", "model."):
        cands.append(p + name)
        if name.startswith(p):
            cands.append(name[len(p):])
    for c in cands:
        if c in source_names:
            return c
    return None


def tensors_report(saved_file, source_file):
    hdr = safetensors_header(saved_file)
    src_hdr = safetensors_header(source_file)
    out = {"saved_metadata": hdr.get("__metadata__"), "source_metadata": src_hdr.get("__metadata__"),
           "saved_file_sha256": sha256(saved_file), "source_file_sha256": sha256(source_file),
           "tensors": {}}
    src_names = {k for k in src_hdr if k != "__metadata__"}
    used = set()
    renamed = 0
    with safe_open(saved_file, "pt") as s, safe_open(source_file, "pt") as src:
        for name in sorted(k for k in hdr if k != "__metadata__"):
            meta = hdr[name]
            e = {"dtype": meta["dtype"], "shape": meta["shape"]}
            sn = map_source_name(name, src_names)
            e["source_name"] = sn
            if sn is None:
                e["identical"] = False
            else:
                used.add(sn)
                renamed += sn != name
                a, b = s.get_tensor(name), src.get_tensor(sn)
                e["identical"] = a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
            out["tensors"][name] = e
    out["all_identical"] = all(e["identical"] for e in out["tensors"].values())
    out["renamed"] = renamed
    out["source_only"] = {k: {"dtype": src_hdr[k]["dtype"], "shape": src_hdr[k]["shape"]} for k in sorted(src_names - used)}
    return out


def tokenizer_report(saved_dir, source_dir, committed_dir):
    """tokenizer.json / vocab.txt: identical to the source's? Commit the saved tokenizer.json only if it
    differs and is < 2 MB; else record how it differs (and a top-level patch that turns the source into it)."""
    rep = {}
    for f in ("tokenizer.json", "vocab.txt"):
        s, o = os.path.join(saved_dir, f), os.path.join(source_dir, f)
        e = {"saved_written": os.path.exists(s), "source_exists": os.path.exists(o)}
        if e["saved_written"]:
            e["saved_sha256"], e["saved_size"] = sha256(s), os.path.getsize(s)
        if e["source_exists"]:
            e["source_sha256"], e["source_size"] = sha256(o), os.path.getsize(o)
        if e["saved_written"] and e["source_exists"]:
            e["byte_identical"] = e["saved_sha256"] == e["source_sha256"]
            if f == "tokenizer.json" and not e["byte_identical"]:
                a, b = json.load(open(s, encoding="utf-8")), json.load(open(o, encoding="utf-8"))
                e["json_equal"] = a == b
                e["differing_top_level_keys"] = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                e["diff"] = json_diff(a, b)
                # Small enough to carry: the saved values of every differing top-level key except the
                # vocabulary, so a test can rebuild the saved file from the source one.
                if "model" not in e["differing_top_level_keys"]:
                    e["patch_from_source"] = {k: a.get(k) for k in e["differing_top_level_keys"]}
                    rebuilt = dict(b)
                    rebuilt.update(e["patch_from_source"])
                    e["patch_reproduces_saved_json"] = rebuilt == a
        e["committed"] = False
        if f == "tokenizer.json" and e.get("byte_identical") is False and e["saved_size"] < 2 * 1024 * 1024:
            shutil.copyfile(s, os.path.join(committed_dir, f))
            e["committed"] = True
        rep[f] = e
    return rep


WEIGHT_OR_BIG = {"model.safetensors", "tokenizer.json", "vocab.txt", "README.md"}


def copy_library_files(saved_dir, case_dir):
    """Copy every non-weight file the libraries wrote; list everything they wrote."""
    files = {}
    for root, _, names in os.walk(saved_dir):
        for n in sorted(names):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, saved_dir)
            e = {"size": os.path.getsize(p), "sha256": sha256(p)}
            if rel in WEIGHT_OR_BIG:
                e["committed"] = False
                e["why"] = {"model.safetensors": "weights: see tensors.json",
                            "README.md": "model card written by sentence-transformers (dropped)"}.get(rel, "see manifest tokenizer")
            else:
                dst = os.path.join(case_dir, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(p, dst)
                e["committed"] = True
            files[rel] = e
    return dict(sorted(files.items()))


def fresh_case_dir(case):
    d = os.path.join(args.out, case)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def finish_case(case, case_dir, saved_dir, source_dir, source_label, reference):
    manifest = {
        "case": case,
        "source": source_label,
        "versions": VERSIONS,
        "library_files": copy_library_files(saved_dir, case_dir),
        "tokenizer": tokenizer_report(saved_dir, source_dir, case_dir),
    }
    dump_json(os.path.join(case_dir, "manifest.json"), manifest)
    dump_json(os.path.join(case_dir, "tensors.json"),
              tensors_report(os.path.join(saved_dir, "model.safetensors"), os.path.join(source_dir, "model.safetensors")))
    if reference is not None:
        dump_json(os.path.join(case_dir, "reference.json"), reference)
    print(f"{case}: wrote {case_dir}", flush=True)


# ---------------------------------------------------------------- Qwen3 embedder cases

def qwen3_recipe_ids(tok, text, max_length, eod):
    """Official Qwen3-Embedding recipe, as embedrank runs it: the content is truncated to max_length - 1
    tokens and <|endoftext|> appended unless the tokenizer's template already did."""
    ids = tok(text, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    if not ids or ids[-1] != eod:
        ids = ids[: max_length - 1] + [eod]
    return ids


def st_forward(model, ids):
    """The saved ST model's own module pipeline (Transformer -> Pooling(lasttoken) -> Normalize) on given
    ids, batch of one, no padding."""
    feats = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    return model(feats)["sentence_embedding"][0]


def reset_dynamic_rope(auto_model):
    """transformers' dynamic NTK rope is stateful: a sequence longer than max_position_embeddings regrows
    inv_freq, which then stays until a sequence shorter than max_position_embeddings comes. Put it back to
    the fresh-model state so each text's reference depends on that text alone."""
    rot = auto_model.rotary_emb
    if "dynamic" in rot.rope_type:
        rot.register_buffer("inv_freq", rot.original_inv_freq.clone(), persistent=False)
        rot.max_seq_len_cached = rot.original_max_seq_len


def same_ids_as_source(tok, source_dir, full_texts):
    """Do the source tokenizer.json (tokenizers library, no transformers) and the saved tokenizer give the
    same ids on every text (untruncated)?"""
    src = tokenizers.Tokenizer.from_file(os.path.join(source_dir, "tokenizer.json"))
    src.no_truncation()
    src.no_padding()
    bad = [i for i, t in enumerate(full_texts) if src.encode(t).ids != tok(t)["input_ids"]]
    return {"texts_checked": len(full_texts), "mismatching_text_indices": bad}


def same_pair_ids_as_source(tok, source_dir, q, docs):
    src = tokenizers.Tokenizer.from_file(os.path.join(source_dir, "tokenizer.json"))
    src.no_truncation()
    src.no_padding()
    bad = [i for i, d in enumerate(docs) if src.encode(q, d).ids != tok(q, d)["input_ids"]]
    return {"pairs_checked": len(docs), "mismatching_pair_indices": bad}


def rope_report(auto_model):
    rot = auto_model.rotary_emb
    return {"rope_type": rot.rope_type, "attention_scaling": f7(rot.attention_scaling),
            "inv_freq": [f7(v) for v in rot.inv_freq.tolist()]}


def qwen3_case(case, spec, tmp):
    src = os.path.join(args.tiny, QWEN3_EMBED)
    m = SentenceTransformer(src, device="cpu", config_kwargs=spec["config_kwargs"] or None)
    saved = os.path.join(tmp, case)
    m.save(saved)
    del m
    case_dir = fresh_case_dir(case)
    st_default_max = None
    if spec.get("reload_kwargs"):
        st_default_max = SentenceTransformer(saved, device="cpu").max_seq_length
    m2 = SentenceTransformer(saved, device="cpu", **spec.get("reload_kwargs", {}))
    m2.eval()
    am = m2[0].auto_model
    cfg_saved = json.load(open(os.path.join(saved, "config.json")))
    want = spec.get("expect_rope") or spec["config_kwargs"].get("rope_parameters")
    if want is not None and cfg_saved.get("rope_parameters") != want:
        sys.exit(f"{case}: saved rope_parameters {cfg_saved.get('rope_parameters')} != {want}")
    if am.config.rope_parameters.get("rope_type") != am.rotary_emb.rope_type:
        sys.exit(f"{case}: reloaded rotary runs {am.rotary_emb.rope_type}, config says {am.config.rope_parameters}")
    reference = None
    if spec["reference"]:
        reference = qwen3_reference(m2, case, src)
        reference["reload_kwargs"] = spec.get("reload_kwargs")
        reference["st_default_max_length"] = st_default_max if st_default_max is not None else reference["max_length"]
    finish_case(case, case_dir, saved, src, f"tiny/{QWEN3_EMBED}", reference)
    return saved


def qwen3_reference(m2, case, source_dir):
    tok = m2.tokenizer
    eod = tok.convert_tokens_to_ids(EOD)
    max_length = m2.max_seq_length
    texts = G["QUERIES"] + G["DOCS"]
    nq = len(G["QUERIES"])
    prompt_q = m2.prompts["query"]
    prompt_d = m2.prompts.get("document", "")
    am = m2[0].auto_model
    rope_init = rope_report(am)
    dynamic = "dynamic" in am.rotary_emb.rope_type
    ids_all, embs, st_ids, st_embs, inv_freqs = [], [], [], [], []
    checked = 0
    fulls = []
    for i, t in enumerate(texts):
        name = "query" if i < nq else "document"
        full = (prompt_q if i < nq else prompt_d) + t
        fulls.append(full)
        ids = qwen3_recipe_ids(tok, full, max_length, eod)
        reset_dynamic_rope(am)
        e = st_forward(m2, ids)
        inv_freqs.append([f7(v) for v in am.rotary_emb.inv_freq.tolist()])
        # The plain sentence-transformers encode(), as an ST user gets it (this tokenizer appends no EOS).
        reset_dynamic_rope(am)
        se = m2.encode([t], prompt_name=name, batch_size=1, convert_to_tensor=True)[0]
        sids = tok(full, truncation=True, max_length=max_length)["input_ids"]
        # Cross-check st_forward against encode() itself where the recipe fits: encode(text + EOS).
        if len(ids) < max_length:
            reset_dynamic_rope(am)
            ee = m2.encode([t + EOD], prompt_name=name, batch_size=1, convert_to_tensor=True)[0]
            d = (ee - e).abs().max().item()
            if d > 1e-6:
                sys.exit(f"{case}: encode(text+EOS) differs from the module pipeline by {d}")
            checked += 1
        ids_all.append(ids)
        embs.append(e.tolist())
        st_ids.append(sids)
        st_embs.append(se.tolist())
    reset_dynamic_rope(am)
    if rope_report(am) != rope_init:
        sys.exit(f"{case}: rotary state changed during the run")
    cfg = am.config
    return {
        "source": f"tiny/{QWEN3_EMBED}",
        "case": case,
        "versions": VERSIONS,
        "recipe": "official Qwen3-Embedding: prompt + text, truncated to max_length - 1 tokens, <|endoftext|> "
                  "appended; the reloaded SentenceTransformer's module pipeline (Transformer -> Pooling lasttoken -> "
                  "Normalize) on each text alone; float32 CPU",
        "texts": texts,
        "n_queries": nq,
        "prompt": {"query": prompt_q, "document": prompt_d, "applies_to": "the first n_queries texts get prompt.query"},
        "max_length": max_length,
        "eos_token_id": eod,
        "rope_parameters": cfg.rope_parameters,
        "rope_runtime": rope_init,
        "rope_inv_freq_per_text": inv_freqs if dynamic else None,
        "source_tokenizer_ids": same_ids_as_source(tok, source_dir, fulls),
        "token_ids": ids_all,
        "embeddings": rows7(embs),
        "encode_crosscheck_texts": checked,
        "st_encode": {
            "what": "SentenceTransformer.encode(text, prompt_name=query|document) on the reloaded copy: no EOS appended "
                    "(this tokenizer.json's template does not add one), last token = last content token",
            "token_ids": st_ids,
            "embeddings": rows7(st_embs),
        },
    }


def sliding_check(saved_default, saved_sliding):
    """Does transformers apply Qwen3's sliding window? Compare both saved copies on one long text."""
    a = SentenceTransformer(saved_default, device="cpu")
    b = SentenceTransformer(saved_sliding, device="cpu")
    tok = a.tokenizer
    eod = tok.convert_tokens_to_ids(EOD)
    out = {}
    for label, text in (("short (3 tokens)", "Short doc."), ("long", G["DOCS"][1])):
        ids = qwen3_recipe_ids(tok, text, a.max_seq_length, eod)
        ea, eb = st_forward(a, ids), st_forward(b, ids)
        out[label] = {"tokens": len(ids), "max_abs_diff_vs_default": f7((ea - eb).abs().max().item()),
                      "cosine_vs_default": f7(torch.dot(ea, eb).item())}
    cfg = b[0].auto_model.config
    out["reloaded_layer_types"] = cfg.layer_types
    out["reloaded_sliding_window"] = cfg.sliding_window
    return out


# ---------------------------------------------------------------- BERT cases

def minilm_case(tmp):
    case = "bert-minilm-st6"
    m = SentenceTransformer(MINILM, device="cpu", cache_folder=args.hub)
    src = m[0].auto_model.config._name_or_path  # the snapshot folder
    src = src if os.path.isdir(src) else snapshot_dir()
    saved = os.path.join(tmp, case)
    m.save(saved)
    case_dir = fresh_case_dir(case)
    m2 = SentenceTransformer(saved, device="cpu")
    m2.eval()
    texts = G["QUERIES"] + G["DOCS"]
    ids_all, embs, maxdiff = [], [], 0.0
    for t in texts:
        enc = m2.tokenizer(t, truncation=True, max_length=m2.max_seq_length)
        ids_all.append(enc["input_ids"])
        e = m2.encode([t], batch_size=1, convert_to_tensor=True)[0]
        o = m.encode([t], batch_size=1, convert_to_tensor=True)[0]
        maxdiff = max(maxdiff, (e - o).abs().max().item())
        embs.append(e.tolist())
    reference = {
        "source": f"hub:{MINILM}",
        "case": case,
        "versions": VERSIONS,
        "recipe": "SentenceTransformer(saved).encode(text) on each text alone (mean pooling, normalize); float32 CPU",
        "texts": texts,
        "n_queries": len(G["QUERIES"]),
        "prompt": {"query": m2.prompts.get("query", ""), "document": m2.prompts.get("document", ""),
                   "applies_to": "none (both prompts are empty)"},
        "max_length": m2.max_seq_length,
        "token_ids": ids_all,
        "embeddings": rows7(embs),
        "max_abs_diff_vs_hub_copy": maxdiff,
        "source_tokenizer_ids": same_ids_as_source(m2.tokenizer, src, texts),
    }
    finish_case(case, case_dir, saved, src, f"hub:{MINILM}", reference)


def snapshot_dir():
    snaps = os.path.join(args.hub, "models--sentence-transformers--all-MiniLM-L6-v2", "snapshots")
    names = sorted(os.listdir(snaps))
    if len(names) != 1:
        sys.exit(f"expected one snapshot under {snaps}, found {names}")
    return os.path.join(snaps, names[0])


def cross_encoder_case(tmp):
    case = "bert-cross-encoder"
    src = os.path.join(args.tiny, BERT_CROSS_ENCODER)
    ce = CrossEncoder(src, device="cpu", max_length=64)
    saved = os.path.join(tmp, case)
    ce.save(saved)
    case_dir = fresh_case_dir(case)
    ce2 = CrossEncoder(saved, device="cpu")
    ce2.eval()
    q = G["RR_QUERY"]
    docs = G["RR_DOCS"]
    ids_all, tt_all, logits, scores, orig = [], [], [], [], []
    for d in docs:
        enc = ce2.tokenizer(q, d, truncation=True, max_length=ce2.max_seq_length)
        ids_all.append(enc["input_ids"])
        tt_all.append(enc["token_type_ids"])
        logits.append(float(ce2.predict([(q, d)], activation_fn=torch.nn.Identity(), convert_to_numpy=True, batch_size=1)[0]))
        scores.append(float(ce2.predict([(q, d)], convert_to_numpy=True, batch_size=1)[0]))
        orig.append(float(ce.predict([(q, d)], activation_fn=torch.nn.Identity(), convert_to_numpy=True, batch_size=1)[0]))
    for lg, sc in zip(logits, scores):
        if abs(1 / (1 + math.exp(-lg)) - sc) > 1e-6:
            sys.exit(f"{case}: default activation is not sigmoid ({lg} -> {sc})")
    reference = {
        "source": f"tiny/{BERT_CROSS_ENCODER}",
        "case": case,
        "versions": VERSIONS,
        "recipe": "CrossEncoder(saved).predict([(query, document)]) on each pair alone; logits = activation "
                  "Identity, scores = the saved default activation (Sigmoid); float32 CPU",
        "query": q,
        "documents": docs,
        "max_length": ce2.max_seq_length,
        "activation_fn": type(ce2.activation_fn).__module__ + "." + type(ce2.activation_fn).__name__,
        "token_ids": ids_all,
        "token_type_ids": tt_all,
        "logits": [f7(v) for v in logits],
        "scores": [f7(v) for v in scores],
        "max_abs_logit_diff_vs_source_copy": max(abs(a - b) for a, b in zip(logits, orig)),
        "source_tokenizer_ids": same_pair_ids_as_source(ce2.tokenizer, src, q, docs),
    }
    finish_case(case, case_dir, saved, src, f"tiny/{BERT_CROSS_ENCODER}", reference)


def main():
    if not os.path.exists(os.path.join(args.tiny, TINY_MARKER)):
        sys.exit(f"{args.tiny}/{TINY_MARKER} missing: run a golden cargo test first (it writes the tiny models)")
    only = set(args.only.split(",")) if args.only else None
    want = lambda c: only is None or c in only  # noqa: E731
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="saved_golden.") as tmp:
        saved = {}
        for case, spec in QWEN3_CASES.items():
            if want(case):
                saved[case] = qwen3_case(case, spec, tmp)
        if "qwen3-embed-default" in saved and "qwen3-embed-sliding" in saved:
            dump_json(os.path.join(args.out, "qwen3-embed-sliding", "sliding_check.json"),
                      sliding_check(saved["qwen3-embed-default"], saved["qwen3-embed-sliding"]))
        if want("bert-minilm-st6"):
            minilm_case(tmp)
        if want("bert-cross-encoder"):
            cross_encoder_case(tmp)


main()
