#!/usr/bin/env bash
# Peak RSS of a corpus job on a synthetic corpus of N short texts (docs/corpus.md, "Peak RSS flat"):
# generates the corpus outside the repo if missing, runs the job under /usr/bin/time -v, samples
# the process's VmRSS every few seconds (a trajectory that shows flatness even if the run is cut
# short), and prints the job's summary and its peak (VmHWM / time's maximum resident set size).
# Usage: scripts/corpus_rss.sh N [WORKDIR] [extra embed args...]
#   e.g. scripts/corpus_rss.sh 2000000 /tmp/corpusperf        (nice'd; the release build)
# Env: BIN (default target/release/embedrank), INTERVAL (seconds between samples, default 5).
set -euo pipefail
N="${1:?usage: $0 N [WORKDIR] [embed args...]}"
WORK="${2:-/tmp/corpus-rss}"
shift $(( $# >= 2 ? 2 : 1 ))
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release/embedrank}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
INTERVAL="${INTERVAL:-5}"
mkdir -p "$WORK"
CORPUS="$WORK/synth-$N.jsonl"
[[ -s "$CORPUS" ]] || nice "$PY" "$ROOT/scripts/gen_synthetic_corpus.py" -n "$N" -o "$CORPUS"
OUT="$WORK/out-$N"
rm -rf "$OUT" && mkdir -p "$OUT"
SAMPLES="$WORK/rss-$N.tsv"
echo -e "seconds\tparts\tvmrss_kib\tvmhwm_kib" > "$SAMPLES"
HF_HUB_OFFLINE=1 nice /usr/bin/time -v -o "$WORK/time-$N.txt" "$BIN" embed --cache-dir "$ROOT/.cache/hub" \
    -m sentence-transformers/all-MiniLM-L6-v2 --dtype int8 --input "$CORPUS" --output "$OUT/" --json "$@" \
    > "$WORK/summary-$N.json" &
TPID=$!
t0=$(date +%s)
# The job is /usr/bin/time's child.
JPID=""
while kill -0 "$TPID" 2>/dev/null; do
    [[ -n "$JPID" ]] || JPID="$(pgrep -P "$TPID" | head -1 || true)"
    if [[ -n "$JPID" && -r "/proc/$JPID/status" ]]; then
        rss=$(awk '/^VmRSS/{print $2}' "/proc/$JPID/status" 2>/dev/null || true)
        hwm=$(awk '/^VmHWM/{print $2}' "/proc/$JPID/status" 2>/dev/null || true)
        parts=$(find "$OUT" -maxdepth 1 -name 'part-*.parquet' | wc -l)
        [[ -n "$rss" ]] && echo -e "$(( $(date +%s) - t0 ))\t$parts\t$rss\t$hwm" >> "$SAMPLES"
    fi
    sleep "$INTERVAL"
done
wait "$TPID"
cat "$WORK/summary-$N.json"
grep -E "Maximum resident|Elapsed" "$WORK/time-$N.txt"
echo "samples: $SAMPLES ($(($(wc -l < "$SAMPLES") - 1)) rows)"
