#!/usr/bin/env bash
# The full fuzz run (docs/serve.md "Fuzzing"): every target of fuzz/ under libFuzzer (cargo-fuzz,
# nightly) for a number of executions each, then a table of executions, speed and crashes.
# The bounded form CI runs is tests/fuzz_corpus.rs.
#
# Usage: scripts/fuzz.sh [--runs N] [--secs S] [--only T1,T2] [--jobs J] [--workers W] [--asan]
#                        [--prebuilt DIR] [--state DIR] [--merge] [--json]
#   --runs N    executions per target (default 10000000)
#   --secs S    stop a target after S seconds even if it has not done --runs (default: no limit)
#   --only      a comma-separated subset of targets (default: all, `ls fuzz/fuzz_targets`)
#   --jobs J    targets fuzzed at once (default 1)
#   --workers W libFuzzer processes per target, sharing its corpus (default 1); each does
#               --runs / W executions and the table sums them
#   --asan      build with AddressSanitizer (default: none; Rust code is memory-safe and the
#               unsanitized build runs several times faster; debug assertions are on either way,
#               so an overflow panics)
#   --prebuilt DIR  run the fuzz binaries in DIR instead of building them (no cargo needed: a
#               machine with more cores; the tiny models are then written from
#               EMBEDRANK_TEST_HUB and EMBEDRANK_TEST_TOKENIZERS into EMBEDRANK_FUZZ_MODELS)
#   --state DIR where the working corpus, logs and crashing inputs go (default .cache/fuzz)
#   --merge     afterwards, add the inputs that reach new code to the committed corpus
#   --json      one JSON object per target on stdout instead of the table
# Crashing inputs land in STATE/artifacts/TARGET/; the working corpus in STATE/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=10000000 secs=0 only="" jobs=1 workers=1 sanitizer=none merge=0 json=0 prebuilt="" state=.cache/fuzz
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --state) state="$2"; shift 2 ;;
    --asan) sanitizer=address; shift ;;
    --merge) merge=1; shift ;;
    --json) json=1; shift ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

targets=$(ls fuzz/fuzz_targets | sed 's/\.rs$//')
[ -n "$only" ] && targets=$(echo "$only" | tr ',' ' ')

if [ -n "$prebuilt" ]; then
  bin_dir="$prebuilt"
else
  if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal >&2
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz --version 0.13.2 >&2
  fi
  ./scripts/fetch-test-models.sh >&2
  cargo +nightly fuzz build -O --debug-assertions --sanitizer "$sanitizer" >&2
  bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release
fi
# The HTTP targets' tiny models, written once before targets run in parallel.
for t in $targets; do
  case "$t" in serve_config|wanted_list|safetensors|model_config) ;;
    *) "$bin_dir/$t" "fuzz/corpus/$t/seed-00.json" >/dev/null 2>&1 || true; break ;;
  esac
done

# One execution at a time per process on tiny models: a thread pool of every core in each of
# several processes only oversubscribes the machine (measured: 60% more executions a second with
# one thread, two processes on 2 cores; 52 a second a process with 16 processes on 16 cores).
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"

run_one() {
  local t="$1" dict=fuzz/dict/config.dict
  case "$t" in serve_config|wanted_list|safetensors|model_config) ;; *) dict=fuzz/dict/http.dict ;; esac
  mkdir -p "$state/corpus/$t" "$state/artifacts/$t" "$state/logs"
  local per=$(( (runs + workers - 1) / workers )) start end i
  start=$(date +%s)
  local pids=() rc=0
  for ((i = 0; i < workers; i++)); do
    "$bin_dir/$t" "$state/corpus/$t" "fuzz/corpus/$t" -dict="$dict" -runs="$per" -max_total_time="$secs" -max_len=4096 \
      -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 -seed=$((i + 1)) -artifact_prefix="$state/artifacts/$t/" \
      >"$state/logs/$t.$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  end=$(date +%s)
  local execs=0 speed=0 crashes n
  for ((i = 0; i < workers; i++)); do
    n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$state/logs/$t.$i.log" | grep -o '[0-9]*$' || echo 0)
    execs=$((execs + ${n:-0}))
    n=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$state/logs/$t.$i.log" | grep -o '[0-9]*$' || echo 0)
    speed=$((speed + ${n:-0}))
  done
  crashes=$(find "$state/artifacts/$t" -type f | wc -l)
  printf '{"target": "%s", "executions": %s, "exec_per_sec": %s, "seconds": %s, "workers": %s, "corpus": %s, "crashes": %s, "exit": %s}\n' \
    "$t" "$execs" "$speed" "$((end - start))" "$workers" "$(ls "$state/corpus/$t" | wc -l)" "$crashes" "$rc"
}
export -f run_one
export runs secs bin_dir workers state

results=$(printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}')
if [ "$merge" = 1 ]; then
  for t in $targets; do
    "$bin_dir/$t" -merge=1 "fuzz/corpus/$t" "$state/corpus/$t" >/dev/null 2>&1
  done
fi
if [ "$json" = 1 ]; then
  echo "$results"
else
  echo "$results" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
print(f"{\"target\":<20} {\"executions\":>12} {\"exec/s\":>8} {\"seconds\":>8} {\"corpus\":>7} {\"crashes\":>8}")
for r in rows:
    print(f"{r[\"target\"]:<20} {r[\"executions\"]:>12,} {r[\"exec_per_sec\"]:>8,} {r[\"seconds\"]:>8} {r[\"corpus\"]:>7} {r[\"crashes\"]:>8}")
'
fi
! echo "$results" | grep -q '"crashes": [1-9]' && ! echo "$results" | grep -qv '"exit": 0'
