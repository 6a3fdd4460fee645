#!/usr/bin/env python3
"""f32 vs MLX 8-bit vs 4-bit on CPU, side by side in one run (issue 8's table).

For all-MiniLM-L6-v2 (.cache/hub) and the Qwen3-Embedding-0.6B shape (.cache/full/Qwen3-Embedding-0.6B:
real config, seeded random weights), quantized by `embedrank convert` (group 64) into .cache/quant/,
this runs `embedrank bench --json` once per variant per round, interleaved (f32, q8, q4, f32, q8, q4, ...)
so a change in machine load hits every variant alike, and prints the median over rounds of
  - throughput: real tokens/s embedding SciFact documents at batch 32 (whole model, tokenization included);
  - latency: p50 of single-query requests (batch 1, SciFact queries, no prompt);
with each variant's ratio to f32 of the same model. Standard library only.

Every variant runs with the same padded-token budget per forward pass, `--max-batch-tokens` (default
1024, what the engine uses for quantized models on the CPU anyway), so the ratios compare the kernels
and not the batching. `--f32-default-budget` adds a row for f32 at the engine's default budget (16384),
what a user of a float model gets today; long documents then go through attention in larger padded
batches, which costs more on this CPU than the kernels do.

    python3 bench/quant_cpu.py                      # defaults: 3 rounds, 256 MiniLM / 32 Qwen3 documents
    python3 bench/quant_cpu.py --rounds 5 --qwen-limit 200 --json .cache/results/quant-cpu.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("EMBEDRANK_BIN", "target/release/embedrank"))
    ap.add_argument("--no-build", action="store_true", help="use --bin as it is")
    ap.add_argument("--input", default=os.path.join(ROOT, "..", "shared", "data", "scifact", "corpus.jsonl"))
    ap.add_argument("--models", default="minilm,qwen3-0.6b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--minilm-limit", type=int, default=256)
    ap.add_argument("--qwen-limit", type=int, default=32)
    ap.add_argument("--latency", type=int, default=20, help="single-query requests per bench call")
    ap.add_argument("--max-batch-tokens", type=int, default=1024, help="padded tokens per forward pass, every variant")
    ap.add_argument("--f32-default-budget", action="store_true", help="add f32 at the engine's default budget")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--json", help="write every bench result here")
    ap.add_argument("--table", metavar="FILE", nargs="+", help="only reprint the table of --json files (rounds pooled)")
    a = ap.parse_args()
    if a.table:
        from_json(a.table)
        return

    binary = os.path.join(ROOT, a.bin) if not os.path.isabs(a.bin) else a.bin
    if not a.no_build:
        sh(["cargo", "build", "--release", "--bin", "embedrank"])
    hub = os.path.join(ROOT, ".cache", "hub")
    models = {
        "minilm": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", a.minilm_limit),
        "qwen3-0.6b": ("Qwen3-Embedding-0.6B", os.path.join(ROOT, ".cache", "full", "Qwen3-Embedding-0.6B"), a.qwen_limit),
    }
    wanted = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in models]
    if unknown:
        sys.exit(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(models)})")
    variants = {}
    for key in wanted:
        name, src, _ = models[key]
        variants[key] = [("f32", src, a.max_batch_tokens)]
        if a.f32_default_budget:
            variants[key].append(("f32, default budget", src, None))
        for bits in (8, 4):
            out = os.path.join(ROOT, ".cache", "quant", f"{name}-{bits}bit" + ("" if a.group_size == 64 else f"-g{a.group_size}"))
            if not os.path.exists(os.path.join(out, "config.json")):
                sh([binary, "convert", src, "--cache-dir", hub, "--bits", str(bits), "--group-size", str(a.group_size),
                    "--out", out, "-q"])
            variants[key].append((f"{bits}-bit", out, a.max_batch_tokens))

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    results = {key: {v: [] for v, _, _ in variants[key]} for key in wanted}
    t0 = time.time()
    for r in range(a.rounds):
        for key in wanted:
            for label, model, budget in variants[key]:
                cmd = [binary, "bench", "--model", model, "--cache-dir", hub, "--input", a.input,
                       "--limit", str(models[key][2]), "--batch-size", "32", "--runs", "1",
                       "--latency-requests", str(a.latency), "--json", "-q"]
                if budget:
                    cmd += ["--max-batch-tokens", str(budget)]
                out = sh(cmd, env=env, capture_output=True, text=True)
                rep = json.loads(out.stdout)
                results[key][label].append(rep)
                print(f"round {r + 1}/{a.rounds} {key} {label}: {rep['tokens_per_s']:.0f} tokens/s, "
                      f"p50 {rep['latency']['p50_ms']:.2f} ms", file=sys.stderr, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "group_size": a.group_size, "max_batch_tokens": a.max_batch_tokens,
                       "results": results, "wall_s": time.time() - t0}, f, indent=1)

    print_table(results, models, a.rounds, a.group_size, a.max_batch_tokens)
    print(f"(wall {time.time() - t0:.0f} s; per-round numbers on stderr and in --json)")


def print_table(results, models, rounds, group_size, budget):
    """Ratios are taken within each round (variants of one round ran minutes apart, rounds further
    apart), then the median over rounds; the spread is the lowest and highest round's ratio."""
    threads = next(iter(next(iter(results.values())).values()))[0].get("threads")
    print(f"\nembedrank CPU, {threads} threads: f32 vs MLX affine 8-bit / 4-bit (group {group_size}), "
          f"median of {rounds} interleaved rounds, {budget} padded tokens per forward pass")
    print("| model | weights | docs (real tokens) | tokens/s, batch 32 | × f32 (rounds' range) "
          "| 1-query p50 ms | f32 p50 / this p50 (range) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for key, variants in results.items():
        base = variants["f32"]
        for v, reps in variants.items():
            tps = statistics.median(x["tokens_per_s"] for x in reps)
            p50 = statistics.median(x["latency"]["p50_ms"] for x in reps)
            speed = [x["tokens_per_s"] / b["tokens_per_s"] for x, b in zip(reps, base)]
            lat = [b["latency"]["p50_ms"] / x["latency"]["p50_ms"] for x, b in zip(reps, base)]
            rss = statistics.median((x.get("peak_rss_bytes") or 0) / 2**20 for x in reps)
            print(f"| {models[key][0]} | {v} | {reps[0]['texts']} ({reps[0]['real_tokens']}) | {tps:.0f} | "
                  f"{statistics.median(speed):.2f} ({min(speed):.2f}–{max(speed):.2f}) | {p50:.2f} | "
                  f"{statistics.median(lat):.2f} ({min(lat):.2f}–{max(lat):.2f}) | {rss:.0f} |")


def from_json(paths):
    """Reprint the table of earlier runs, their rounds pooled: python3 bench/quant_cpu.py --table F1 F2."""
    names = {"minilm": ("all-MiniLM-L6-v2",), "qwen3-0.6b": ("Qwen3-Embedding-0.6B",)}
    results, rounds = {}, 0
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        rounds += d["rounds"]
        for key, variants in d["results"].items():
            for v, reps in variants.items():
                results.setdefault(key, {}).setdefault(v, []).extend(reps)
    print_table(results, names, rounds, d.get("group_size", 64), d.get("max_batch_tokens", 1024))


if __name__ == "__main__":
    main()
