#!/usr/bin/env python3
"""CPU peers against `embedrank bench`, same workload, same machine, same run.

Runs all-MiniLM-L6-v2 (or another BERT-style sentence-transformers embedder) through
  1. embedrank (`embedrank bench --json`, a subprocess),
  2. sentence-transformers on PyTorch (`model.encode`, which sorts by length and batches),
  3. ONNX Runtime on a model this script exports (torch.onnx, then ORT's BERT graph fusions),
    with the best pipeline we could write: fast-tokenizer batch encode, sort by token length,
    batches padded to their longest row, mean pooling + normalization in numpy,
all with CPU threads = cores (or --threads), batch 32, tokenization included in the time, runs
interleaved (one pass of each runner per round, so load changes hit all alike), and
prints real tokens/s, texts/s, single-query latency, and embedrank's speed over each peer.
Real tokens: after truncation to the model's max length, special tokens included, no padding;
the script checks that every runner sees the same token count.

usage (from the repo root, after `cargo build --release`):
  .venv/bin/python bench/cpu_peers.py --input ../shared/data/scifact/corpus.jsonl
Needs: sentence-transformers, onnxruntime, onnx, onnxscript (pip install into .venv).
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_dir(repo_id, cache_dir):
    if os.path.isdir(repo_id):
        return repo_id
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True)


def export_onnx(src, out_dir, threads):
    """Export the BERT encoder to ONNX (last_hidden_state) and apply ORT's BERT fusions."""
    import onnx
    import torch
    from transformers import AutoConfig, AutoModel

    fused = os.path.join(out_dir, "model.fused.onnx")
    if os.path.exists(fused):
        return fused
    os.makedirs(out_dir, exist_ok=True)
    cfg = AutoConfig.from_pretrained(src)
    bert = AutoModel.from_pretrained(src, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        # Keyword arguments: BertModel.forward's positional order changed across transformers versions.
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    model = Encoder().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    raw = os.path.join(out_dir, "model.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            raw,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
            | {"last_hidden_state": {0: "batch", 1: "seq"}},
            opset_version=17,
            dynamo=False,
        )
    onnx.checker.check_model(raw)
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        raw, model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size
    )
    tmp = fused + ".partial"
    opt.save_model_to_file(tmp)
    os.replace(tmp, fused)  # never leave a half-written model that a later run would take as done
    print(f"exported {fused}: fused ops {opt.get_fused_operator_statistics()}", file=sys.stderr)
    return fused


class OrtEmbedder:
    def __init__(self, path, tokenizer, max_length, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.tok = tokenizer
        self.max_length = max_length
        self.names = {i.name for i in self.sess.get_inputs()}

    def encode(self, texts, batch_size):
        enc = self.tok(texts, truncation=True, max_length=self.max_length, add_special_tokens=True)
        ids, types = enc["input_ids"], enc["token_type_ids"]
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out = np.empty((len(texts), 0), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            l = len(ids[rows[0]])
            a = np.zeros((len(rows), l), dtype=np.int64)
            t = np.zeros_like(a)
            m = np.zeros_like(a)
            for r, i in enumerate(rows):
                n = len(ids[i])
                a[r, :n], t[r, :n], m[r, :n] = ids[i], types[i], 1
            feeds = {"input_ids": a, "attention_mask": m, "token_type_ids": t}
            h = self.sess.run(None, {k: v for k, v in feeds.items() if k in self.names})[0]
            mf = m[:, :, None].astype(np.float32)
            v = (h * mf).sum(1) / np.clip(mf.sum(1), 1e-9, None)
            v /= np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), v.shape[1]), dtype=np.float32)
            out[rows] = v
        return out


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--cache-dir", default=os.path.join(REPO, ".cache/hub"))
    ap.add_argument("--input", default=os.path.join(REPO, "../shared/data/scifact/corpus.jsonl"))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-requests", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--embedrank", default=os.path.join(REPO, "target/release/embedrank"))
    ap.add_argument("--embedrank-args", default="", help="extra arguments for embedrank bench, e.g. '--dtype bf16'")
    ap.add_argument("--int8", action="store_true",
                    help="also run `embedrank --dtype int8` (8-bit weights and activations, integer dot products)")
    ap.add_argument("--onnx-dir", default=os.path.join(REPO, ".cache/onnx"))
    ap.add_argument("--skip", action="append", default=[], choices=["embedrank", "st", "ort"])
    ap.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    a = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    from sentence_transformers import SentenceTransformer

    src = model_dir(a.model, a.cache_dir)
    docs = common.load_docs(a.input, a.limit)
    queries = common.load_queries(a.input)
    st = SentenceTransformer(src, device="cpu")
    max_len = st.max_seq_length
    lengths = [len(x) for x in st.tokenizer(docs, truncation=True, max_length=max_len)["input_ids"]]
    real_tokens = sum(lengths)
    bs = a.batch_size

    # Runners: name -> (one timed pass, one latency request). Warm-up happens here.
    passes, lat_fns, extra = {}, {}, {}
    # embedrank variants: name -> extra `bench` arguments; each is a runner of its own.
    variants = {} if "embedrank" in a.skip else {"embedrank": a.embedrank_args.split()}
    if a.int8 and "embedrank" not in a.skip:
        variants["embedrank int8"] = a.embedrank_args.split() + ["--dtype", "int8"]
    er_reports = {name: [] for name in variants}
    for name, extra_args in variants.items():
        if not os.path.exists(a.embedrank):
            sys.exit(f"{a.embedrank} not found: run `cargo build --release` or pass --embedrank")
        er_args = ["--model", src, "--input", a.input, "--limit", str(a.limit), "--batch-size", str(bs)]
        er_args += ["--runs", "1"] + extra_args
        er_env = {"RAYON_NUM_THREADS": str(a.threads)}

        def embedrank_pass(er_args=er_args, er_env=er_env, reports=er_reports[name]):
            # Its own process each round (loads in well under a second); latency only in the first.
            n = a.latency_requests if not reports else 0
            reports.append(common.run_embedrank(a.embedrank, er_args + ["--latency-requests", str(n)], er_env))
            return reports[-1]["runs"][0]["wall_s"]

        passes[name] = embedrank_pass
    ref = None
    if "st" not in a.skip:
        st_name = f"sentence-transformers {torch.__version__}"
        st.encode(docs[:bs], batch_size=bs)
        ref = st.encode(docs, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True)
        passes[st_name] = lambda: timed(lambda: st.encode(docs, batch_size=bs, convert_to_numpy=True))
        lat_fns[st_name] = lambda q: st.encode([q], batch_size=1)
    if ref is not None:
        # Agreement: every embedrank variant's embeddings of the same documents against sentence-transformers.
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            inp = os.path.join(tmp, "docs.jsonl")
            with open(inp, "w") as f:
                for d in docs:
                    f.write(json.dumps({"text": d}) + "\n")
            for name, extra_args in variants.items():
                out = os.path.join(tmp, "out.npy")
                cmd = [a.embedrank, "embed", "--model", src, "--input", inp, "--format", "npy", "-o", out, "-q"]
                cmd += [x for x in extra_args if x != "--runs"]
                print("+", " ".join(cmd), file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True, env=dict(os.environ, RAYON_NUM_THREADS=str(a.threads)))
                v = np.load(out)
                extra[name] = {"min_cosine_vs_st": float((v * ref).sum(1).min()),
                               "mean_cosine_vs_st": float((v * ref).sum(1).mean())}
    if "ort" not in a.skip:
        import onnxruntime as ort

        ort_name = f"onnxruntime {ort.__version__}"
        path = export_onnx(src, os.path.join(a.onnx_dir, a.model.strip("/").replace("/", "--")), a.threads)
        emb = OrtEmbedder(path, st.tokenizer, max_len, a.threads)
        v = emb.encode(docs, bs)
        if ref is not None:
            extra[ort_name] = {"min_cosine_vs_st": float((v * ref).sum(1).min())}
        passes[ort_name] = lambda: timed(lambda: emb.encode(docs, bs))
        lat_fns[ort_name] = lambda q: emb.encode([q], 1)

    # Rounds interleave the runners, so a change in machine load hits all of them alike.
    walls = {name: [] for name in passes}
    for _ in range(a.runs):
        for name, fn in passes.items():
            walls[name].append(fn())
    rows = []
    for name in passes:
        if name in variants:
            reports = er_reports[name]
            r = dict(reports[0])
            r.update(common.result(name, r["real_tokens"], r["texts"], walls[name], None, **extra.get(name, {})))
            r["latency"] = reports[0]["latency"]
            r["peak_rss_bytes"] = max(x["peak_rss_bytes"] or 0 for x in reports) or None
        else:
            lat = common.latencies(lat_fns[name], queries, a.latency_requests)
            r = common.result(name, real_tokens, len(docs), walls[name], lat, **extra.get(name, {}))
        rows.append(r)

    for r in rows:
        if r["real_tokens"] != real_tokens:
            print(f"WARNING: {r['name']} counted {r['real_tokens']} real tokens, the tokenizer {real_tokens}",
                  file=sys.stderr)
    print(f"\n{a.model}: {len(docs)} documents of {a.input}, {real_tokens} real tokens (max length {max_len}), "
          f"batch {bs}, {a.threads} threads, median of {a.runs} interleaved runs; latency: one query, "
          f"{a.latency_requests} requests; load average {os.getloadavg()[0]:.2f}")
    for r in rows:
        if "min_cosine_vs_st" in r:
            mean = f", mean {r['mean_cosine_vs_st']:.6f}" if "mean_cosine_vs_st" in r else ""
            print(f"{r['name']}: min cosine to sentence-transformers {r['min_cosine_vs_st']:.6f}{mean}")
    common.print_table(rows)
    for name in list(variants)[1:]:
        print()
        common.print_table(rows, baseline=name)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "threads": a.threads, "time": time.time(), "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
