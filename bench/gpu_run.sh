#!/usr/bin/env bash
# GPU benchmark: embedrank (CUDA build) against sentence-transformers bf16/sdpa on Qwen3-Embedding shapes.
#
#   bench/gpu_run.sh prepare   # here (no GPU): pack what the GPU machine needs into .cache/gpu-carry
#   bench/gpu_run.sh run       # on the GPU machine, from the repo root (the device tool: carry .cache/gpu-carry)
#   bench/gpu_run.sh agree     # on the GPU machine: BERT-base shape vs sentence-transformers + check --backends
#
# `prepare` needs scripts/build-cuda.sh to have built target-cuda/dist/embedrank-cuda.xz and
# `bench/make_qwen3_shapes.py --fetch-tokenizer` to have fetched the tokenizer. The random-weight
# checkpoints are generated on the GPU machine itself (seeded; too big to carry). SHAPES="0.6B 4B" picks
# the shapes (default 0.6B); LIMIT, RUNS, BATCH, LATENCY set the workload. Results: $OUT (or /tmp/gpu-out).
#
# Before/after in one run: `BASELINE_XZ=old/embedrank-cuda.xz bench/gpu_run.sh prepare` also packs an older
# build (say, the main branch's) as embedrank-base.xz, and `run` then benches it too, as the row
# "embedrank baseline" (BASELINE_XZ= at run time skips it). CARRY names another carry folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARRY="${CARRY:-$ROOT/.cache/gpu-carry}"
DATA="${DATA:-$ROOT/../shared/data/scifact}"

prepare() {
  rm -rf "$CARRY.partial"
  mkdir -p "$CARRY.partial/tokenizer" "$CARRY.partial/data"
  cp "$ROOT/target-cuda/dist/embedrank-cuda.xz" "$CARRY.partial/"
  if [[ -n "${BASELINE_XZ:-}" ]]; then cp "$BASELINE_XZ" "$CARRY.partial/embedrank-base.xz"; fi
  cp "$ROOT/.cache/qwen3-tokenizer/"{tokenizer.json,tokenizer_config.json,LICENSE,SOURCE} "$CARRY.partial/tokenizer/"
  # The first 2000 documents are more than any run uses; the queries file is small.
  head -n 2000 "$DATA/corpus.jsonl" >"$CARRY.partial/data/corpus.jsonl"
  # A BERT WordPiece tokenizer for bench/gpu_agree.py's BERT-base shape (MiniLM's; no weights carried).
  mkdir -p "$CARRY.partial/bert-tokenizer"
  local minilm
  minilm="$(ls -d "$ROOT"/.cache/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/ | head -n1)"
  cp -L "$minilm"/{tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} "$CARRY.partial/bert-tokenizer/"
  cp "$DATA/queries.jsonl" "$CARRY.partial/data/"
  rm -rf "$CARRY"
  mv "$CARRY.partial" "$CARRY"
  du -sh "$CARRY"
}

run() {
  local out="${OUT:-/tmp/gpu-out}" bin=/tmp/embedrank
  mkdir -p "$out"
  xz -dc "$CARRY/embedrank-cuda.xz" >"$bin"
  chmod +x "$bin"
  local base=() base_xz="${BASELINE_XZ-$CARRY/embedrank-base.xz}"
  if [[ -n "$base_xz" && -f "$base_xz" ]]; then
    xz -dc "$base_xz" >/tmp/embedrank-base
    chmod +x /tmp/embedrank-base
    base=(--baseline /tmp/embedrank-base)
  fi
  # libcudart/libcublas/libcurand from PyTorch's CUDA 13 wheels; libcuda.so.1 comes from the driver.
  local cu13
  cu13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
  export LD_LIBRARY_PATH="$cu13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$bin" --version
  for shape in ${SHAPES:-0.6B}; do
    local dir="/tmp/shapes/Qwen3-Embedding-$shape-random"
    local t0=$SECONDS
    # Seeded: a checkpoint made earlier on this machine is the same bytes (.complete marks a whole one).
    if [[ ! -f "$dir/.complete" ]]; then
      python3 "$ROOT/bench/make_qwen3_shapes.py" --shape "$shape" --out "$dir.written" --tokenizer-dir "$CARRY/tokenizer"
      # Saved again by this machine's transformers / sentence-transformers, as a user's fine-tune would be
      # (transformers 5 writes rope_parameters, dtype, layer_types): the format embedrank must read.
      python3 - "$dir.written" "$dir" <<'PY'
import sys, torch, transformers, sentence_transformers
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(sys.argv[1], device="cpu", model_kwargs={"dtype": torch.bfloat16})
m.save(sys.argv[2])
print(f"re-saved by transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}")
PY
      rm -rf "$dir.written"
      python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print("saved config.json keys:", ", ".join(sorted(c)))' "$dir/config.json"
      touch "$dir/.complete"
    fi
    echo "checkpoint $shape ready in $((SECONDS - t0)) s"
    local skip=()
    # If the CUDA binary cannot embed at all, still measure the peer, and show why.
    if ! "$bin" embed --model "$dir" --device cuda --dtype bf16 "smoke test" >/dev/null 2>"$out/smoke-$shape.err"; then
      echo "embedrank on CUDA failed:"; cat "$out/smoke-$shape.err"
      skip=(--skip embedrank --skip check)
    fi
    PYTHONUNBUFFERED=1 python3 "$ROOT/bench/gpu_peers.py" --model-dir "$dir" --input "$CARRY/data/corpus.jsonl" \
      --embedrank "$bin" --limit "${LIMIT:-1000}" --runs "${RUNS:-3}" --batch-size "${BATCH:-32}" \
      --latency-requests "${LATENCY:-100}" "${skip[@]}" "${base[@]}" --json "$out/gpu-$shape.json" 2>&1 |
      tee "$out/gpu-$shape.log"
  done
}

# Agreement of embedrank on CUDA with sentence-transformers on a BERT-base shape saved by this
# machine's transformers, and `check --backends --device cuda` (every compute path).
agree() {
  local out="${OUT:-/tmp/gpu-out}" bin=/tmp/embedrank
  mkdir -p "$out"
  [[ -x "$bin" ]] || { xz -dc "$CARRY/embedrank-cuda.xz" >"$bin"; chmod +x "$bin"; }
  local cu13
  cu13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
  export LD_LIBRARY_PATH="$cu13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  PYTHONUNBUFFERED=1 python3 "$ROOT/bench/gpu_agree.py" --embedrank "$bin" --tokenizer-dir "$CARRY/bert-tokenizer" \
    --input "$CARRY/data/corpus.jsonl" --limit "${LIMIT:-1000}" 2>&1 | tee "$out/gpu-agree.log"
  return "${PIPESTATUS[0]}"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  agree) agree ;;
  *) echo "usage: $0 prepare|run|agree" >&2; exit 2 ;;
esac
