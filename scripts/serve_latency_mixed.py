#!/usr/bin/env python3
"""Latency of a one-sentence embedding request sent just after a 32 x 512-token request (issue 23's
head-of-line case), against one `embedrank` binary serving all-MiniLM-L6-v2 with a 512-token window.

    scripts/serve_latency_mixed.py BIN [--rounds 10] [-- extra serve args]

Prints the short request's latency alone and behind the long one (p50, max), and the long one's."""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - t0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--hub", default=".cache/hub")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "serve.toml")
    with open(cfg, "w") as f:
        f.write(f'[[models]]\nid = "{MINILM}"\nmax_length = 512\n')
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    srv = subprocess.Popen([a.binary, "serve", "--port", str(port), "--cache-dir", a.hub, "--config", cfg,
                            "--preload", "--request-timeout", "600s"] + a.extra,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        info = json.loads(urllib.request.urlopen(base + "/info").read())
        short = {"input": "What is the capital of France?"}
        # 32 inputs of 512 tokens: "token" is one WordPiece; [CLS] and [SEP] make 512.
        heavy = {"input": [f"{i} " + "token " * 520 for i in range(32)]}
        post(base, "/v1/embeddings", short)
        alone = [post(base, "/v1/embeddings", short) for _ in range(a.rounds)]
        behind, heavy_s = [], []
        for _ in range(a.rounds):
            t = threading.Thread(target=lambda: heavy_s.append(post(base, "/v1/embeddings", heavy)))
            t.start()
            time.sleep(0.3)  # the long request is tokenized and running
            behind.append(post(base, "/v1/embeddings", short))
            t.join()
        ms = lambda x: f"{x * 1000:.0f}"
        print(f"max_batch_tokens {info.get('max_batch_tokens')}: one sentence alone p50 {ms(pct(alone, 50))} ms; "
              f"behind 32x512 p50 {ms(pct(behind, 50))} ms, max {ms(max(behind))} ms; "
              f"the 32x512 request p50 {ms(pct(heavy_s, 50))} ms ({a.rounds} rounds)")
    finally:
        srv.terminate()
        srv.wait(10)


if __name__ == "__main__":
    main()
