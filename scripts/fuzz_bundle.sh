#!/usr/bin/env bash
# Pack fuzz binaries built here for a machine with more cores and no Rust (the device tool's host):
#   scripts/fuzz_bundle.sh OUT_DIR TARGET...
# OUT_DIR gets TARGET.xz (stripped), hub/ (the MiniLM snapshot without its weights: the tiny BERT
# models take its tokenizer files) and tokenizers/ (the Qwen3 tokenizer), from which the harness
# writes its tiny models there. Run them with scripts/fuzz_remote.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1"; shift
bin=fuzz/target/x86_64-unknown-linux-gnu/release
mkdir -p "$out/hub"
for t in "$@"; do
  [ -x "$bin/$t" ] || { echo "fuzz_bundle.sh: $bin/$t not built (scripts/fuzz.sh --runs 1 builds it)" >&2; exit 2; }
  strip -o "$out/$t" "$bin/$t"
  xz -T0 -6 -f "$out/$t"
done
(cd .cache/hub && tar chf - --exclude=model.safetensors --exclude=blobs --exclude='*.onnx' .) | (cd "$out/hub" && tar xf -)
cp -r .cache/tokenizers "$out/tokenizers"
du -sh "$out"
