#!/usr/bin/env bash
# Build the CUDA (sm_90, H100/H200) embedrank binary on a machine WITHOUT a GPU or a CUDA install.
#
# The CUDA 13.0 toolkit is assembled from PyPI's nvidia-* wheels (13.0.x matches driver 580; a newer nvcc
# emits PTX the 580 driver cannot JIT), plus a generated libcuda.so link stub (no wheel ships the driver).
# Recipe and reasons: docs/gpu.md. Idempotent: each step is skipped when its result is already complete.
#
# Usage: scripts/build-cuda.sh            # toolkit (once) + cargo build --release --features cuda
#        NICE=19 scripts/build-cuda.sh    # same, at low CPU priority (what we do on the shared 2-core box)
#        scripts/build-cuda.sh --toolkit-only
# Result: target-cuda/release/embedrank, plus target-cuda/dist/embedrank-cuda.xz (stripped, xz) for the GPU box.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
CUDA_ROOT="${CUDA_ROOT:-$CACHE/cuda}"
WHEEL_DIR="$CACHE/cuda-wheels"
TARGET_DIR="$ROOT/target-cuda"
DIST="$TARGET_DIR/dist"
NICE="${NICE:-0}"
TOOLKIT_ONLY=0
if [[ "${1:-}" == "--toolkit-only" ]]; then TOOLKIT_ONLY=1; fi

# Exact versions: all from the CUDA 13.0 release line (see docs/gpu.md for why 13.0 and not newer).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

log() { printf '[build-cuda] %s\n' "$*" >&2; }

pick_python() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"; else command -v python3; fi
}

download_wheels() {
  local n
  n=0
  [[ -d "$WHEEL_DIR" ]] && n=$(find "$WHEEL_DIR" -maxdepth 1 -name 'nvidia_*.whl' | wc -l)
  if [[ "$n" -ge "${#WHEELS[@]}" ]]; then
    log "wheels already in $WHEEL_DIR"
    return
  fi
  mkdir -p "$WHEEL_DIR"
  log "downloading ${#WHEELS[@]} CUDA 13.0 wheels (about 650 MB) into $WHEEL_DIR"
  # The toolkit is for the build machine (x86-64 Linux); the wheels' Python tag does not matter (py3-none).
  "$(pick_python)" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$WHEEL_DIR" "${WHEELS[@]}"
}

assemble_toolkit() {
  if [[ -f "$CUDA_ROOT/.complete" ]]; then
    log "toolkit already assembled at $CUDA_ROOT"
    return
  fi
  # Assemble into a scratch folder and rename at the end, so an interrupted run never leaves a
  # half-unpacked toolkit that a later run would take as complete.
  local tmp="$CUDA_ROOT.partial"
  rm -rf "$tmp" "$CUDA_ROOT"
  mkdir -p "$tmp/unzip"
  log "unpacking wheels"
  for w in "$WHEEL_DIR"/nvidia_*.whl; do
    unzip -q -o "$w" 'nvidia/cu13/*' -d "$tmp/unzip"
  done
  mv "$tmp/unzip/nvidia/cu13" "$tmp/root"
  rm -rf "$tmp/unzip"
  local r="$tmp/root"
  # Wheels drop the executable bits and carry no symlinks.
  chmod +x "$r"/bin/* "$r"/nvvm/bin/*
  ln -sfn libcudart.so.13 "$r/lib/libcudart.so"
  ln -sfn libcublas.so.13 "$r/lib/libcublas.so"
  ln -sfn libcublasLt.so.13 "$r/lib/libcublasLt.so"
  ln -sfn libcurand.so.10 "$r/lib/libcurand.so"
  ln -sfn libnvrtc.so.13 "$r/lib/libnvrtc.so"
  ln -sfn lib "$r/lib64"
  build_driver_stub "$r"
  touch "$r/.complete"
  mv "$r" "$CUDA_ROOT"
  rmdir "$tmp"
  "$CUDA_ROOT/bin/nvcc" --version | tail -2 >&2
}

# libcuda.so is the driver; no wheel ships it. candle's cudarc links -lcuda dynamically, so the linker needs
# a library with soname libcuda.so.1 that defines every driver symbol cudarc declares. Empty functions are
# enough: at run time the GPU machine's real libcuda.so.1 is loaded instead.
build_driver_stub() {
  local r="$1"
  (cd "$ROOT" && cargo fetch --quiet)
  local ver src
  ver=$(awk '/^name = "cudarc"$/{getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$ver"/src/driver/sys/mod.rs | head -1)
  [[ -f "$src" ]] || { log "cudarc $ver sources not found (cargo fetch failed?)"; exit 1; }
  mkdir -p "$r/lib/stubs" "$r/lib/stubs-run"
  grep -oE '\bfn cu[A-Za-z0-9_]+\(' "$src" | sed -E 's/^fn (.*)\($/\1/' | sort -u |
    awk '{ printf "void %s(void) {}\n", $1 }' >"$r/lib/stubs/libcuda_stub.c"
  log "libcuda stub: $(wc -l <"$r/lib/stubs/libcuda_stub.c") symbols from cudarc $ver"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$r/lib/stubs/libcuda.so" "$r/lib/stubs/libcuda_stub.c"
  # stubs-run lets the CUDA binary start on this GPU-less machine (CPU path only) for smoke tests.
  ln -sfn ../stubs/libcuda.so "$r/lib/stubs-run/libcuda.so.1"
}

build_binary() {
  export CUDA_ROOT CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT"
  export PATH="$CUDA_ROOT/bin:$PATH" NVCC="$CUDA_ROOT/bin/nvcc"
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"   # H100/H200: kernels for sm_90a
  export CUDARC_CUDA_VERSION=13000                     # pin instead of parsing `nvcc --version`
  export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"   # candle-kernels' nvcc runs serially by default
  log "cargo build --release --features cuda --target-dir $TARGET_DIR (nice $NICE)"
  (cd "$ROOT" && nice -n "$NICE" cargo build --release --features cuda --target-dir "$TARGET_DIR" --bin embedrank)
  local bin="$TARGET_DIR/release/embedrank"
  mkdir -p "$DIST"
  # Strip + xz: the device tool carries at most 64 MiB; the unstripped binary is ~50 MB, xz ~7 MB.
  strip -o "$DIST/embedrank-cuda" "$bin"
  xz -T2 -6 -c "$DIST/embedrank-cuda" >"$DIST/embedrank-cuda.xz.partial"
  mv "$DIST/embedrank-cuda.xz.partial" "$DIST/embedrank-cuda.xz"
  rm -f "$DIST/embedrank-cuda"
  log "built $bin ($(du -h "$bin" | cut -f1)); carry $DIST ($(du -h "$DIST/embedrank-cuda.xz" | cut -f1) xz)"
  log "smoke test (CPU path, driver stub): $(LD_LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs-run" "$bin" --version)"
}

download_wheels
assemble_toolkit
if [[ "$TOOLKIT_ONLY" == 1 ]]; then exit 0; fi
build_binary
