#!/usr/bin/env bash
# The test command: installs the offline test models (idempotent), then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-test-models.sh
cargo test --all-targets "$@"
