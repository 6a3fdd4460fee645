#!/usr/bin/env bash
# Run a bundle of prebuilt fuzz binaries (scripts/fuzz_bundle.sh) with scripts/fuzz.sh:
#   scripts/fuzz_remote.sh BUNDLE_DIR STATE_DIR [fuzz.sh arguments: --workers, --secs, --runs, --json]
# The targets are the bundle's binaries; STATE_DIR gets the logs, crashing inputs and the working
# corpus (also as corpus.tar.gz, to merge back here with `-set_cover_merge=1`).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="$(cd "$1" && pwd)" state="$2"; shift 2
bins=$(mktemp -d)
targets=""
for f in "$bundle"/*.xz; do
  t=$(basename "$f" .xz)
  xz -dc "$f" >"$bins/$t" && chmod +x "$bins/$t"
  targets="$targets${targets:+,}$t"
done
export EMBEDRANK_TEST_HUB="$bundle/hub" EMBEDRANK_TEST_TOKENIZERS="$bundle/tokenizers"
export EMBEDRANK_FUZZ_MODELS="${EMBEDRANK_FUZZ_MODELS:-$bins/models}"
mkdir -p "$state"
rc=0
scripts/fuzz.sh --prebuilt "$bins" --state "$state" --only "$targets" "$@" || rc=$?
tar czf "$state/corpus.tar.gz" -C "$state" corpus
rm -rf "$state/corpus"
exit $rc
