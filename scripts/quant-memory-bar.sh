#!/usr/bin/env bash
# Memory bar of MLX-quantized loading: a Qwen3-Embedding-4B-shaped model (real config, seeded random
# bf16 weights, the same recipe as tests/full_size.rs) quantized to 4-bit group 64 by `embedrank
# convert`, embedding 32 texts x 256 tokens as one request; prints one JSON line with peak RSS.
# Big files stay under .cache/ (never committed). Usage: scripts/quant-memory-bar.sh [--max-batch-tokens N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin embedrank --example quant_memory
SRC=.cache/full/Qwen3-Embedding-4B
OUT=.cache/quant/Qwen3-Embedding-4B-4bit
[ -f "$SRC/model.safetensors" ] || ./target/release/examples/quant_memory make tests/fixtures/configs/Qwen3-Embedding-4B.json "$SRC"
[ -f "$OUT/model.safetensors" ] || ./target/release/embedrank convert "$SRC" --bits 4 --group-size 64 --out "$OUT" --json
HF_HUB_OFFLINE=1 ./target/release/examples/quant_memory run "$OUT" --texts 32 --tokens 256 "$@"
