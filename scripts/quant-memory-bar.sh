#!/usr/bin/env bash
# Memory bar of MLX-quantized loading: a Qwen3-Embedding-4B-shaped model (real config, seeded random
# bf16 weights, the same recipe as tests/full_size.rs) quantized to 4-bit group 64 by `embedrank
# convert`, embedding 32 texts x 256 tokens as one request with the default settings; prints one JSON
# line with peak RSS (bar: <= 3.0 GB). Big files stay under .cache/ (never committed).
# Usage: scripts/quant-memory-bar.sh [--max-batch-tokens N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin embedrank --example quant_memory
T=${CARGO_TARGET_DIR:-target}
SRC=.cache/full/Qwen3-Embedding-4B
OUT=.cache/quant/Qwen3-Embedding-4B-4bit
[ -f "$OUT/model.safetensors" ] || [ -f "$SRC/model.safetensors" ] || "$T/release/examples/quant_memory" make tests/fixtures/configs/Qwen3-Embedding-4B.json "$SRC"
[ -f "$OUT/model.safetensors" ] || "$T/release/embedrank" convert "$SRC" --bits 4 --group-size 64 --out "$OUT" --json
HF_HUB_OFFLINE=1 "$T/release/examples/quant_memory" run "$OUT" --texts 32 --tokens 256 "$@"
