#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent: Python venv with the CI tools, the
# offline test models), then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --all-targets "$@"
# The Python package (python/, docs/python.md): built into .venv in debug mode (the dev profile
# optimizes the dependencies already; --release would add minutes), then its tests, which compare
# it with the CLI built above.
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --quiet -m python/Cargo.toml
.venv/bin/python -m pytest -q python/tests
