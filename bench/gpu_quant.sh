#!/usr/bin/env bash
# MLX-quantized models on CUDA: correctness against the CPU path, then 4-bit vs bf16 speed (4B shape).
#
#   bench/gpu_quant.sh prepare   # here (no GPU): pack what the GPU machine needs into .cache/gpu-carry-G
#   bench/gpu_quant.sh run       # on the GPU machine from the repo root (device tool: carry .cache/gpu-carry-G)
#   .cache/gpu-carry-G/bench/gpu_quant.sh run   # the same, with the copies prepare put in the carry
#
# prepare needs the CUDA binary (scripts/build-cuda.sh; CUDA_XZ overrides its path), optionally the CUDA
# unit-test binary (CUDA_TEST_BIN: `cargo test --release --features cuda --lib --no-run` prints it), the
# Qwen3 tokenizer (bench/make_qwen3_shapes.py --fetch-tokenizer) and all-MiniLM-L6-v2 in .cache/hub.
# Small quantized models are converted here by that binary (its CPU path; the libcuda stub lets it start).
#
# run, in order (each step prints one line per check; the exit status is the number of failed checks):
#  1. the kernel unit test (every bits x group size x dtype, gather, a layer product) on the GPU;
#  2. MiniLM 4-bit group 64 (BERT, every table quantized) and a tiny BERT cross-encoder 3-bit group 32:
#     embed / rerank on CUDA vs CPU;
#  3. a Qwen3-Embedding-0.6B-shaped checkpoint (random weights, made here by make_qwen3_shapes.py) converted
#     to 4-bit by the CUDA binary's own `convert`: embed on CUDA vs CPU, and the yes/no reranker head
#     (`--task rerank`: two rows gathered from the quantized embedding table);
#  4. SHAPE (default 4B) bf16 vs its 4-bit conversion: `embedrank bench --device cuda` for both, one after
#     the other on the same card, and the time ratio (target: 4-bit within 1.5x of bf16).
# Bounds: cosine >= 0.999 between CUDA f32 and CPU f32 with f32 activations (the same arithmetic up to
# summation order; the CPU's integer activations are switched off for the reference), and
# >= 0.99 for CUDA bf16 vs CPU f32 (bf16 rounding of the activations, not of the weights: both expand
# the same codes). LIMIT, RUNS, LATENCY, BATCH set the bench workload; SKIP_BENCH=1 skips step 4.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CARRY="$ROOT/.cache/gpu-carry-G"
if [[ "$(basename "$ROOT")" == gpu-carry-G ]]; then # running the carried copy
  CARRY="$ROOT"
  ROOT="$(cd "$CARRY/../.." && pwd)"
fi
DATA="${DATA:-$ROOT/../shared/data/scifact}"

prepare() {
  set -e
  local xz="${CUDA_XZ:-$ROOT/target-cuda/dist/embedrank-cuda.xz}" tmp="$CARRY.partial"
  local cuda="${CUDA_ROOT:-$ROOT/.cache/cuda}"
  rm -rf "$tmp"
  mkdir -p "$tmp/models" "$tmp/data"
  cp "$xz" "$tmp/embedrank-cuda.xz"
  if [[ -n "${CUDA_TEST_BIN:-}" ]]; then
    strip -o "$tmp/unit-tests" "$CUDA_TEST_BIN"
    xz -T2 -6 "$tmp/unit-tests"
  fi
  local bin="$tmp/embedrank"
  xz -dc "$xz" >"$bin"
  chmod +x "$bin"
  local minilm
  minilm="$(ls -d "$ROOT"/.cache/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/ | head -1)"
  LD_LIBRARY_PATH="$cuda/lib:$cuda/lib/stubs-run" "$bin" convert "$minilm" --bits 4 --group-size 64 \
    --out "$tmp/models/minilm-4bit" --json
  LD_LIBRARY_PATH="$cuda/lib:$cuda/lib/stubs-run" "$bin" convert "$ROOT/.cache/tiny/tiny-bert-cross-encoder" \
    --bits 3 --group-size 32 --out "$tmp/models/tiny-ce-3bit" --json
  rm "$bin"
  tar -C "$ROOT/.cache" -cJf "$tmp/qwen3-tokenizer.tar.xz" qwen3-tokenizer
  head -n "${DOCS:-1000}" "$DATA/corpus.jsonl" >"$tmp/data/corpus.jsonl"
  # The device tool copies the main checkout, which may not have these scripts yet: run them from here.
  mkdir -p "$tmp/bench"
  cp "$ROOT/bench/gpu_quant.sh" "$ROOT/bench/gpu_quant_compare.py" "$ROOT/bench/make_qwen3_shapes.py" "$tmp/bench/"
  cp "$DATA/queries.jsonl" "$tmp/data/"
  rm -rf "$CARRY"
  mv "$tmp" "$CARRY"
  du -sh "$CARRY"
}

FAILS=0
check() { "$@" || FAILS=$((FAILS + 1)); }
step() { echo; echo "== $* ($(date +%T), ${SECONDS}s)"; }

run() {
  local out="${OUT:-/tmp/gpu-out}" bin=/tmp/embedrank w=/tmp/gq
  local cmp="python3 $HERE/gpu_quant_compare.py"
  mkdir -p "$out" "$w"
  xz -dc "$CARRY/embedrank-cuda.xz" >"$bin" && chmod +x "$bin"
  local cu13
  cu13="$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')"
  export LD_LIBRARY_PATH="$cu13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" HF_HUB_OFFLINE=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$bin" --version
  local docs="$w/docs.txt"
  # 24 SciFact documents as plain lines (mixed lengths) for the embedding comparisons.
  python3 -c "import json,sys; [print(json.loads(l)['title'] + ' ' + json.loads(l)['text'][:400].replace(chr(10), ' ')) for l in open(sys.argv[1]).readlines()[:24]]" \
    "$CARRY/data/corpus.jsonl" >"$docs"

  if [[ -f "$CARRY/unit-tests.xz" ]]; then
    step "1. kernel unit test on the GPU"
    xz -dc "$CARRY/unit-tests.xz" >"$w/unit-tests" && chmod +x "$w/unit-tests"
    check env EMBEDRANK_TEST_CUDA=1 "$w/unit-tests" --test-threads 1 weights::cuda_quant
  fi

  # The CPU reference runs with f32 activations (EMBEDRANK_QKERNEL_INT=0): on hosts with AVX-512 VNNI
  # the CPU's default integer activations round them to 8 bits (their agreement is tested on the CPU,
  # tests/qkernel_minilm.rs), while CUDA expands the same codes and multiplies f32 / bf16 activations.
  cpu_ref() { EMBEDRANK_QKERNEL_INT=0 "$bin" "$@"; }
  # embed_pair LABEL MODEL [extra args]: CPU f32 vs CUDA f32 (>= 0.999) and CUDA bf16 (>= 0.99).
  embed_pair() {
    local label="$1" model="$2"
    shift 2
    local base="$w/$label"
    cpu_ref embed --model "$model" --device cpu --dtype f32 --input "$docs" --format npy -o "$base-cpu.npy" "$@" || { FAILS=$((FAILS + 1)); return; }
    for dt in f32 bf16; do
      local bound=0.999
      [[ $dt == bf16 ]] && bound=0.99
      if "$bin" embed --model "$model" --device cuda --dtype $dt --input "$docs" --format npy -o "$base-cuda-$dt.npy" "$@"; then
        check $cmp embed "$label cuda $dt vs cpu f32" "$base-cpu.npy" "$base-cuda-$dt.npy" $bound
      else
        echo "FAIL $label: embed on cuda $dt failed"; FAILS=$((FAILS + 1))
      fi
    done
  }
  # rerank_pair LABEL MODEL BOUND [extra args]: raw scores, CPU f32 vs CUDA f32.
  rerank_pair() {
    local label="$1" model="$2" bound="$3"
    shift 3
    local q="what causes cell death" base="$w/$label"
    local d=()
    mapfile -t d < <(head -n 8 "$docs")
    cpu_ref rerank --model "$model" --device cpu --dtype f32 -Q "$q" --raw-scores "$@" "${d[@]}" >"$base-cpu.json" &&
      "$bin" rerank --model "$model" --device cuda --dtype f32 -Q "$q" --raw-scores "$@" "${d[@]}" >"$base-cuda.json" &&
      check $cmp rerank "$label cuda f32 vs cpu f32" "$base-cpu.json" "$base-cuda.json" "$bound" ||
      { echo "FAIL $label: rerank failed"; FAILS=$((FAILS + 1)); }
  }

  step "2. MiniLM 4-bit g64 and tiny BERT cross-encoder 3-bit g32"
  embed_pair minilm-4bit "$CARRY/models/minilm-4bit"
  rerank_pair tiny-ce-3bit "$CARRY/models/tiny-ce-3bit" 1e-4

  step "3. Qwen3-Embedding-0.6B shape, 4-bit g64 by our convert"
  tar -C "$w" -xJf "$CARRY/qwen3-tokenizer.tar.xz"
  local s06="$w/Qwen3-Embedding-0.6B-random" q06="$w/Qwen3-Embedding-0.6B-4bit"
  python3 "$HERE/make_qwen3_shapes.py" --shape 0.6B --out "$s06" --tokenizer-dir "$w/qwen3-tokenizer" &&
    "$bin" convert "$s06" --bits 4 --group-size 64 --out "$q06" --json --force &&
    rm -f "$s06/model.safetensors" # the 0.6B float weights are not needed after this
  embed_pair qwen3-0.6B-4bit "$q06"
  rerank_pair qwen3-0.6B-4bit-yesno "$q06" 2e-3 --task rerank

  if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
    local shape="${SHAPE:-4B}"
    step "4. bench $shape: bf16 vs 4-bit g64 on cuda"
    local sb="$w/Qwen3-Embedding-$shape-random" sq="$w/Qwen3-Embedding-$shape-4bit"
    python3 "$HERE/make_qwen3_shapes.py" --shape "$shape" --out "$sb" --tokenizer-dir "$w/qwen3-tokenizer"
    echo "checkpoint made (${SECONDS}s)"
    "$bin" convert "$sb" --bits 4 --group-size 64 --out "$sq" --json --force
    echo "converted (${SECONDS}s)"
    local args=(--device cuda --dtype bf16 --input "$CARRY/data/corpus.jsonl" --limit "${LIMIT:-300}"
      --runs "${RUNS:-2}" --batch-size "${BATCH:-32}" --latency-requests "${LATENCY:-30}" --json)
    # Peak device memory of each bench process (nvidia-smi sampled every 200 ms; the card runs nothing else).
    local kind model
    for kind in bf16 4bit; do
      model="$sb"
      [[ $kind == 4bit ]] && model="$sq"
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$w/mem-$kind.txt" &
      local smi=$!
      echo "+ $bin bench --model $model ${args[*]}"
      "$bin" bench --model "$model" "${args[@]}" >"$out/bench-$shape-$kind.json"
      kill "$smi"
      echo "$kind: peak GPU memory used $(sort -n "$w/mem-$kind.txt" | tail -1) MiB"
    done
    check $cmp bench "$out/bench-$shape-bf16.json" "$out/bench-$shape-4bit.json"
  fi
  step "done: $FAILS failed checks"
  return "$FAILS"
}

case "${1:-}" in
  prepare) prepare ;;
  run) mkdir -p "${OUT:-/tmp/gpu-out}"; run 2>&1 | tee "${OUT:-/tmp/gpu-out}/gpu_quant.log"; exit "${PIPESTATUS[0]}" ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
