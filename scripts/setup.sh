#!/usr/bin/env bash
# Install what the project needs on a fresh machine (idempotent): the Python venv used by the
# script-driven tests, and the offline test models.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
# Small, pure-Python tools only; PyTorch/MLX are needed only to regenerate fixtures.
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-ci.txt
# tests/serve_clients.rs renders /docs in a headless browser (Debian's chromium).
if ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]]; then apt-get install -y --no-install-recommends chromium; else sudo apt-get install -y --no-install-recommends chromium; fi
fi
# tests/serve_load.rs drives the server with Debian's wrk (scripts/serve_load.py).
if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]]; then apt-get install -y --no-install-recommends wrk; else sudo apt-get install -y --no-install-recommends wrk; fi
fi
./scripts/fetch-test-models.sh
