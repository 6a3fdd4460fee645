#!/usr/bin/env bash
# Build the embedrank image (deploy/Dockerfile) and run a real request through it:
#   --read-only root fs, --user 65532, the MiniLM hub cache mounted as the /models volume (offline),
#   the init container's `embedrank pull` (offline, against a writable copy of the cache),
#   POST /v1/embeddings checked against the sentence-transformers golden vector
#   (tests/fixtures/minilm_golden.json), then SIGTERM -> the container must exit 0.
# Usage: deploy/image-test.sh [BINARY]     (default target/release/embedrank; built with cargo if missing)
# Env:   HUB (default .cache/hub), PORT (default 19080), TAG (default embedrank:cpu)
# Needs docker; installs docker.io from Debian and starts dockerd when missing (root only).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/embedrank}
hub=$(readlink -f "${HUB:-.cache/hub}")
port=${PORT:-19080}
tag=${TAG:-embedrank:cpu}
model=sentence-transformers/all-MiniLM-L6-v2
ctx=$(mktemp -d /tmp/erfl-image.XXXXXX)
cid=""
dockerd_pid=""
cleanup() {
  if [[ -n $cid ]]; then docker rm -f "$cid" >/dev/null 2>&1 || true; fi
  # Stop dockerd only if this script started it.
  if [[ -n $dockerd_pid ]]; then kill "$dockerd_pid" 2>/dev/null || true; fi
  rm -rf "$ctx"
}
trap cleanup EXIT

if [[ ! -x $bin ]]; then
  echo "== building $bin"
  if [[ $bin == target/release/embedrank ]]; then nice cargo build --release --bin embedrank; else
    echo "image-test: $bin missing" >&2; exit 1; fi
fi
if ! command -v docker >/dev/null; then
  echo "== installing docker.io (Debian)"
  apt-get install -y docker.io
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  dockerd >/tmp/erfl-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "image-test: dockerd did not start (see /tmp/erfl-dockerd.log)" >&2; exit 1; }
fi

echo "== staging rootfs from $bin"
deploy/stage-rootfs.sh "$bin" "$ctx"
echo "== docker build -f deploy/Dockerfile -t $tag"
# Legacy builder: this docker has no buildx; the Dockerfile needs nothing BuildKit-only.
DOCKER_BUILDKIT=0 docker build -q -f deploy/Dockerfile -t "$tag" "$ctx" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "image $tag: $size bytes ($((size / 1024 / 1024)) MiB)"

echo "== init container: /embedrank pull into a writable copy of the cache (offline: verify only)"
mkdir -p "$ctx/hub"
cp -a "$hub/models--sentence-transformers--all-MiniLM-L6-v2" "$ctx/hub/"
chown -R 65532:65532 "$ctx/hub"
docker run --rm --read-only --user 65532:65532 -v "$ctx/hub:/models/hub" -e HF_HUB_OFFLINE=1 \
  --entrypoint /embedrank "$tag" pull "$model" --cache-dir /models/hub

echo "== docker run --read-only --user 65532:65532 (hub cache $hub as /models/hub, read-only)"
cid=$(docker run -d --read-only --user 65532:65532 --tmpfs /tmp \
  -p "127.0.0.1:$port:8080" -v "$hub:/models/hub:ro" -e HF_HUB_OFFLINE=1 \
  "$tag" --host 0.0.0.0 --port 8080 -m "$model" --preload)
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
  [[ $(docker inspect -f '{{.State.Running}}' "$cid") == true ]] || break
  sleep 1
done
curl -sf "http://127.0.0.1:$port/ready" || { docker logs "$cid" >&2; echo "image-test: never ready" >&2; exit 1; }
echo
text="The quick brown fox jumps over the lazy dog."
curl -sf "http://127.0.0.1:$port/v1/embeddings" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model\", \"input\": [\"$text\"]}" >"$ctx/resp.json"
python3 - "$ctx/resp.json" "$text" <<'PY'
import json, math, sys
got = json.load(open(sys.argv[1]))["data"][0]["embedding"]
gold = json.load(open("tests/fixtures/minilm_golden.json"))
want = gold["embeddings"][gold["texts"].index(sys.argv[2])]
cos = sum(a * b for a, b in zip(got, want)) / math.sqrt(sum(a * a for a in got) * sum(b * b for b in want))
print(f"vector: dim {len(got)}, cosine to sentence-transformers golden {cos:.6f}")
sys.exit(0 if len(got) == 384 and cos > 0.9999 else 1)
PY
echo "== SIGTERM"
docker kill -s TERM "$cid" >/dev/null
code=$(docker wait "$cid")
echo "exit code after SIGTERM: $code"
[[ $code == 0 ]] || { docker logs "$cid" >&2; exit 1; }
echo "image-test: OK ($tag, $((size / 1024 / 1024)) MiB, read-only rootfs, uid 65532)"
