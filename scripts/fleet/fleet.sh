#!/usr/bin/env bash
# A fleet of three `embedrank serve` replicas, each in its own network namespace (erfl1..3, own
# address 10.77.0.1N on a bridge), behind HAProxy with active /ready health checks; fleet.py drives
# mixed embed/rerank load through it while it SIGTERMs, SIGKILLs, cuts off and overloads replicas,
# and prints a table per phase. Needs root (ip netns), haproxy and aiohttp (installed if missing).
#
# Usage: sudo scripts/fleet/fleet.sh [BINARY]     (default target/debug/embedrank; a release binary is
#        faster: cargo build --release && scripts/fleet/fleet.sh target/release/embedrank)
# Env:   PHASE_S (seconds per phase, default 20), CONC (baseline concurrency, default 4),
#        OVERLOAD_CONC (default 64), MAX_QUEUE (per replica and model, default 8)
# Ports: HAProxy on 127.0.0.1:19000 (stats socket in the work dir); replicas on 10.77.0.1N:19001.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(readlink -f "${1:-target/debug/embedrank}")
[[ -x $bin ]] || { echo "fleet: $bin missing (cargo build --bin embedrank)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "fleet: needs root (ip netns)" >&2; exit 1; }
work=/tmp/erfl-fleet
py=${PYTHON:-.venv/bin/python}
hub=$(readlink -f "${HUB:-.cache/hub}")

command -v haproxy >/dev/null || apt-get install -y haproxy
"$py" -c "import aiohttp" 2>/dev/null || "$py" -m pip install -q -r scripts/fleet/requirements.txt

# The tiny BERT cross-encoder of the golden tests (random weights, MiniLM tokenizer) as the reranker;
# made by the make_tiny_models example from the MiniLM test model and the Qwen3 tokenizer.
tiny=${TINY:-/tmp/erfl-tiny}
if [[ ! -d $tiny/tiny-bert-cross-encoder ]]; then
  minilm=$(ls -d "$hub"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/ | head -1)
  nice cargo run -q --example make_tiny_models -- "$tiny" .cache/tokenizers/qwen3 "$minilm" >/dev/null ||
    echo "fleet: no reranker (make_tiny_models failed); embed-only traffic" >&2
fi

cleanup() {
  set +e
  if [[ -f $work/haproxy.pid ]]; then kill "$(cat "$work/haproxy.pid")" 2>/dev/null; fi
  for f in "$work"/replica*.pid; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null; done
  for i in 1 2 3; do ip netns del "erfl$i" 2>/dev/null; ip link del "erfl${i}h" 2>/dev/null; done
  ip link del erflbr0 2>/dev/null
}
trap cleanup EXIT INT TERM
cleanup
rm -rf "$work"; mkdir -p "$work"

# Network: bridge erflbr0 (10.77.0.1/24, host side) and a veth per replica namespace.
ip link add erflbr0 type bridge
ip addr add 10.77.0.1/24 dev erflbr0
ip link set erflbr0 up
for i in 1 2 3; do
  ns=erfl$i
  ip netns add "$ns"
  ip link add "erfl${i}h" type veth peer name eth0 netns "$ns"
  ip link set "erfl${i}h" master erflbr0 up
  ip -n "$ns" addr add "10.77.0.1$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 4096
  stats socket $work/haproxy.sock mode 600 level admin
  pidfile $work/haproxy.pid
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  # Longer than a request under load on this shared box; a cut-off replica's requests end here
  # and are retried elsewhere (embeddings and reranking are idempotent).
  timeout server 15s
  timeout check 1s
  retries 2
  option redispatch 1
  retry-on conn-failure empty-response junk-response response-timeout
  option http-buffer-request
frontend embedrank
  bind 127.0.0.1:19000
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /ready
  http-check expect status 200
  default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
CFG
for i in 1 2 3; do echo "  server r$i 10.77.0.1$i:19001 check" >>"$work/haproxy.cfg"; done
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -D -f "$work/haproxy.cfg"

"$py" scripts/fleet/fleet.py --bin "$bin" --hub "$hub" --tiny "$tiny" --work "$work" \
  --phase-s "${PHASE_S:-20}" --conc "${CONC:-4}" --overload-conc "${OVERLOAD_CONC:-64}" --max-queue "${MAX_QUEUE:-8}"
