#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent: Python venv with the CI tools, the
# offline test models), then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --all-targets "$@"
