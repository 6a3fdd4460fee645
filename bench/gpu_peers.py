#!/usr/bin/env python3
"""GPU peer against `embedrank bench`: sentence-transformers in bf16 with sdpa attention, on the same
checkpoint (a random-weight Qwen3-Embedding shape from make_qwen3_shapes.py), same documents, same
batch size, same GPU, same run. Prints real tokens/s, texts/s, single-query latency, MFU (useful FLOPs,
same formula as embedrank's bench::flops, over 989 TFLOP/s) and embedrank's speed over the peer.

It first checks that both runners compute the same thing: every document it times, embedded by
`embedrank embed` (bf16) and by sentence-transformers in bf16 and in float32 (the exact answer); min /
mean / 1st-percentile cosine and the count under 0.999 are printed for each pair, and the run fails
(exit 3) when embedrank's minimum against the float32 reference is under 0.999.

usage (on the GPU machine; see bench/gpu_run.sh):
  python3 bench/gpu_peers.py --model-dir DIR --input corpus.jsonl --embedrank /path/to/embedrank
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402

PEAK_TFLOPS = 989.0


def useful_flops(cfg, lengths):
    """Mirror of embedrank::bench::flops for Qwen3: linear layers + causal attention, real tokens only."""
    h, i, hd, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"], cfg["num_hidden_layers"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_token = 2 * L * (h * q + 2 * h * kv + q * h + 3 * h * i)
    return sum(per_token * n + 4 * L * q * n * (n + 1) / 2 for n in lengths)


def embedrank_vectors(binary, model_dir, texts, env):
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.jsonl")
        with open(inp, "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        cmd = [binary, "embed", "--model", model_dir, "--device", "cuda", "--dtype", "bf16", "--input", inp,
               "--format", "json"]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f"embedrank embed failed with exit code {p.returncode}")
        return np.array([d["embedding"] for d in json.loads(p.stdout)["data"]], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-requests", type=int, default=100)
    ap.add_argument("--embedrank", required=True)
    ap.add_argument("--embedrank-args", default="", help="extra arguments for embedrank bench")
    ap.add_argument("--baseline", metavar="BIN",
                    help="another embedrank binary (e.g. the main branch's) benched the same way, as a row")
    ap.add_argument("--skip", action="append", default=[], choices=["embedrank", "st", "check"])
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    st_version = sentence_transformers.__version__

    env = dict(os.environ)
    with open(os.path.join(a.model_dir, "config.json")) as f:
        cfg = json.load(f)
    docs = common.load_docs(a.input, a.limit)
    queries = common.load_queries(a.input)
    gpu = torch.cuda.get_device_name(0)
    rows = []

    st = SentenceTransformer(
        a.model_dir, device="cuda", model_kwargs={"dtype": torch.bfloat16, "attn_implementation": "sdpa"}
    )
    lengths = [len(x) for x in st.tokenizer(docs, truncation=True, max_length=st.max_seq_length)["input_ids"]]
    real_tokens = sum(lengths)
    flops = useful_flops(cfg, lengths)
    bs = a.batch_size

    check = None
    if "check" not in a.skip and "embedrank" not in a.skip:
        def cosines(x, y):
            # Both normalized here in f64: ST's own Normalize runs in bf16, so its norms are not exactly 1.
            return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

        ref = st.encode(docs, batch_size=bs).astype(np.float64)
        mine = embedrank_vectors(a.embedrank, a.model_dir, docs, env).astype(np.float64)
        # The exact answer: the same checkpoint in float32. bf16 against bf16 mixes both sides'
        # rounding; each bf16 runner against f32 says how exact it is.
        st32 = SentenceTransformer(a.model_dir, device="cuda", model_kwargs={"dtype": torch.float32})
        ref32 = st32.encode(docs, batch_size=bs).astype(np.float64)
        del st32
        torch.cuda.empty_cache()
        pairs = {"embedrank bf16 vs ST bf16": cosines(ref, mine), "embedrank bf16 vs ST f32": cosines(ref32, mine),
                 "ST bf16 vs ST f32": cosines(ref32, ref)}
        check = {"documents": len(docs)}
        for name, cos in pairs.items():
            key = name.replace(" ", "_")
            check[key] = {"min": float(cos.min()), "mean": float(cos.mean()), "p1": float(np.percentile(cos, 1)),
                          "under_0_999": int((cos < 0.999).sum())}
            print(f"check: {name} ({st_version}, every one of {len(docs)} timed documents): min cosine "
                  f"{cos.min():.5f}, mean {cos.mean():.5f}, 1st percentile {np.percentile(cos, 1):.5f}, "
                  f"{int((cos < 0.999).sum())} under 0.999", flush=True)
        check["min_cosine"] = check["embedrank_bf16_vs_ST_f32"]["min"]

    if "embedrank" not in a.skip:
        args = ["--model", a.model_dir, "--device", "cuda", "--dtype", "bf16", "--input", a.input,
                "--limit", str(a.limit), "--batch-size", str(bs), "--runs", str(a.runs),
                "--latency-requests", str(a.latency_requests), *a.embedrank_args.split()]
        r = common.run_embedrank(a.embedrank, args)
        rows.append(r)
        if a.baseline:
            r = common.run_embedrank(a.baseline, args)
            r["name"] = "embedrank baseline"
            rows.append(r)

    if "st" not in a.skip:
        # A whole pass to warm up: the first pass over new shapes is up to 2x slower (kernel selection),
        # which embedrank (no autotuning) does not pay.
        st.encode(docs, batch_size=bs)
        torch.cuda.reset_peak_memory_stats()
        walls = common.time_runs(lambda: st.encode(docs, batch_size=bs, convert_to_numpy=True), a.runs)
        lat = common.latencies(lambda q: st.encode([q], batch_size=1), queries, a.latency_requests)
        wall = float(np.median(walls))
        rows.append(common.result(
            f"sentence-transformers {st_version} bf16 sdpa", real_tokens, len(docs), walls, lat,
            achieved_tflops=flops / wall / 1e12, mfu=flops / wall / 1e12 / PEAK_TFLOPS,
            gpu_peak_alloc_bytes=torch.cuda.max_memory_allocated(),
        ))

    for r in rows:
        if r["real_tokens"] != real_tokens:
            print(f"WARNING: {r['name']} counted {r['real_tokens']} real tokens, the tokenizer {real_tokens}",
                  file=sys.stderr)
    print(f"\n{os.path.basename(a.model_dir.rstrip('/'))} on {gpu}: {len(docs)} documents, {real_tokens} real tokens, "
          f"batch {bs}, median of {a.runs} runs, latency: one query x {a.latency_requests}")
    common.print_table(rows)
    for r in rows:
        if r.get("mfu") is not None:
            print(f"{r['name']}: {r['achieved_tflops']:.1f} TFLOP/s useful, MFU {100 * r['mfu']:.1f}% of {PEAK_TFLOPS:.0f}")
    if a.json:
        import transformers
        with open(a.json, "w") as f:
            json.dump({"gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
                       "sentence_transformers": st_version, "config_keys": sorted(cfg), "check": check,
                       "time": time.time(), "results": rows}, f, indent=1)
    if check is not None and check["min_cosine"] < 0.999:
        print(f"FAIL: embedrank bf16 is not within 0.999 of the float32 reference (min {check['min_cosine']:.5f})")
        sys.exit(3)


if __name__ == "__main__":
    main()
