#!/usr/bin/env python3
"""Corpus-job throughput against `embedrank bench` on the same documents (docs/corpus.md).

Each round runs, for every dtype, `embedrank bench` (one timed pass, no latency phase) and a
corpus job (`embed --output DIR --json`) on the same first N documents, alternating which goes
first, so that a noisy shared machine hits both alike. Bench's tokens/s is its timed pass; the
job's is its own summary (reading, tokenizing, embedding, Parquet parts and manifest, model load
excluded, as bench excludes it). Prints one row per round and dtype, then the medians.

On a shared, loaded machine wall-clock ratios swing with the CPU share each process happens to
get; both also report the CPU seconds (all threads) of the timed work, so the table adds tokens
per CPU-second and its ratio (the job's extra work: reading, parsing, Parquet, manifest) and each
run's CPU share (CPU seconds / wall seconds; 2.0 = both cores all the time).

    .venv/bin/python scripts/corpus_vs_bench.py --bin target/release/embedrank \
        --corpus /work/shared/data/scifact/corpus.jsonl --docs 2000 --rounds 3 --dtypes f32,int8
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def run_json(cmd: list) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / "target/release/embedrank"))
    ap.add_argument("--corpus", default="/work/shared/data/scifact/corpus.jsonl")
    ap.add_argument("--docs", type=int, default=2000, help="first N non-blank lines of --corpus")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtypes", default="f32,int8")
    ap.add_argument("--model", default=MINILM)
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache/hub"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--part-rows", type=int, default=None, help="job --part-rows (default: the job's default)")
    ap.add_argument("--baseline-bin", help="also run the job with this (older) binary in each round, for a before/after")
    ap.add_argument("--json-out", help="also write every row as JSON here")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="corpus_vs_bench."))
    try:
        docs = tmp / "corpus.jsonl"  # a copy of the first N documents, outside the repo
        n = 0
        with open(a.corpus, encoding="utf-8") as src, open(docs, "w", encoding="utf-8") as dst:
            for line in src:
                if line.strip():
                    dst.write(line)
                    n += 1
                    if n == a.docs:
                        break
        common = ["--cache-dir", a.cache_dir, "-m", a.model, "--batch-size", str(a.batch_size)]
        rows = []
        hdr = (f"{'round':>5} {'model':<17} {'dtype':<5} {'docs':>6} {'tokens':>8} {'bench tok/s':>11} {'job tok/s':>10}"
               f" {'ratio':>7} {'bench tok/cpu-s':>15} {'job tok/cpu-s':>13} {'cpu ratio':>9} {'cpu share b/j':>13}")
        print(hdr, flush=True)
        for r in range(a.rounds):
            for dt in a.dtypes.split(","):
                dtype = ["--dtype", dt]

                def bench():
                    return run_json([a.bin, "bench", *common, *dtype, "--input", str(docs), "--limit", str(n),
                                     "--runs", "1", "--latency-requests", "0", "--json"])

                def job(binary=a.bin):
                    out = tmp / f"job-{r}-{dt}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    extra = ["--part-rows", str(a.part_rows)] if a.part_rows else []
                    s = run_json([binary, "embed", *common, *dtype, "--input", str(docs), "--output", str(out),
                                  *extra, "--json"])
                    shutil.rmtree(out, ignore_errors=True)
                    return s

                # Alternate the order: the first of a pair is not always the one on a quieter machine.
                base = None
                if r % 2 == 0:
                    b, j = bench(), job()
                    if a.baseline_bin:
                        base = job(a.baseline_bin)
                else:
                    if a.baseline_bin:
                        base = job(a.baseline_bin)
                    j, b = job(), bench()
                if b["real_tokens"] != j["tokens"] or b["texts"] != j["documents"]:
                    raise SystemExit(f"not the same work: bench {b['texts']} docs {b['real_tokens']} tokens, "
                                     f"job {j['documents']} docs {j['tokens']} tokens")
                row = dict(round=r + 1, model=a.model.split("/")[-1], dtype=dt, docs=n, tokens=j["tokens"],
                           bench_tokens_per_s=b["tokens_per_s"], job_tokens_per_s=j["tokens_per_s"],
                           ratio=j["tokens_per_s"] / b["tokens_per_s"], time=time.strftime("%H:%M:%S"),
                           job_stages=j.get("stages"))
                bcpu, jcpu = b["runs"][0].get("cpu_s"), j.get("cpu_s")
                if bcpu and jcpu:
                    row.update(bench_tokens_per_cpu_s=b["real_tokens"] / bcpu, job_tokens_per_cpu_s=j["tokens"] / jcpu,
                               bench_cpu_share=bcpu / b["runs"][0]["wall_s"], job_cpu_share=jcpu / j["seconds"])
                    row["cpu_ratio"] = row["job_tokens_per_cpu_s"] / row["bench_tokens_per_cpu_s"]
                if base:
                    row["baseline_job_tokens_per_s"] = base["tokens_per_s"]
                    row["baseline_ratio"] = base["tokens_per_s"] / b["tokens_per_s"]
                rows.append(row)
                print(f"{row['round']:>5} {row['model']:<17} {dt:<5} {n:>6} {row['tokens']:>8} "
                      f"{row['bench_tokens_per_s']:>11.0f} {row['job_tokens_per_s']:>10.0f} {100 * row['ratio']:>6.1f}%"
                      + (f" {row['bench_tokens_per_cpu_s']:>15.0f} {row['job_tokens_per_cpu_s']:>13.0f}"
                         f" {100 * row['cpu_ratio']:>8.1f}% {row['bench_cpu_share']:>6.2f}/{row['job_cpu_share']:.2f}"
                         if "cpu_ratio" in row else "")
                      + (f"   baseline job {base['tokens_per_s']:.0f} ({100 * row['baseline_ratio']:.1f}%)" if base else ""),
                      flush=True)
        for dt in a.dtypes.split(","):
            mine = [x for x in rows if x["dtype"] == dt]
            med = lambda k: statistics.median(x[k] for x in mine)  # noqa: E731
            cpu = all("cpu_ratio" in x for x in mine)
            print(f"{'med':>5} {mine[0]['model']:<17} {dt:<5} {n:>6} {mine[0]['tokens']:>8} "
                  f"{med('bench_tokens_per_s'):>11.0f} {med('job_tokens_per_s'):>10.0f} {100 * med('ratio'):>6.1f}%"
                  + (f" {med('bench_tokens_per_cpu_s'):>15.0f} {med('job_tokens_per_cpu_s'):>13.0f}"
                     f" {100 * med('cpu_ratio'):>8.1f}% {med('bench_cpu_share'):>6.2f}/{med('job_cpu_share'):.2f}"
                     if cpu else "")
                  + (f"   baseline job {med('baseline_job_tokens_per_s'):.0f} ({100 * med('baseline_ratio'):.1f}%)"
                     if a.baseline_bin else "")
                  + f"  (medians of {len(mine)} rounds)")
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
