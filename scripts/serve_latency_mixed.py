#!/usr/bin/env python3
"""Latency of short requests while a 32 x 512-token request runs (issue 23's head-of-line case),
against one `embedrank` binary serving all-MiniLM-L6-v2 (512-token window) and a cross-encoder of
ms-marco-MiniLM-L6-v2's shape (random weights; made by `make_tiny_models --minilm-shape-cross-encoder`).

    scripts/serve_latency_mixed.py BIN [--rounds 10] [-- extra serve args]

Cases: a one-sentence embedding behind a 32 x 512-token rerank; a one-document rerank behind the
same rerank; a one-sentence embedding behind a 32 x 512-token embedding request. In each round the
long request is sent, and while it runs short requests are sent one after another (20 ms apart);
prints, per case, the short requests' p50 / p99 / max against their latency alone, and the long
request's time."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import http.client

# Shared with the load test (same folder).
from serve_load import ensure_ce, free_port, pct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def post(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    dt = time.perf_counter() - t0
    assert r.status == 200, (path, r.status)
    return dt


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--hub", default=os.path.join(ROOT, ".cache/hub"))
    ap.add_argument("--ce", default=os.path.join(ROOT, ".cache/load/minilm-shape-cross-encoder"))
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    ce = ensure_ce(a.hub, a.ce)
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "serve.toml")
    with open(cfg, "w") as f:
        f.write(f'[[models]]\nid = "minilm"\nsource = "{MINILM}"\nmax_length = 512\n\n'
                f'[[models]]\nid = "ce"\nsource = "{ce}"\n')
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    srv = subprocess.Popen([a.binary, "serve", "--port", str(port), "--cache-dir", a.hub, "--config", cfg,
                            "--preload", "--request-timeout", "600s"] + extra,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/info")
        info = json.loads(c.getresponse().read())
        sentence = {"model": "minilm", "input": "What is the capital of France?"}
        one_doc = {"model": "ce", "query": "capital of France", "documents": ["Paris is the capital of France."]}
        # "token" is one WordPiece: each input or pair fills the 512-token window.
        long_docs = [f"{i} " + "token " * 520 for i in range(32)]
        heavy_rerank = ("/v1/rerank", {"model": "ce", "query": "which document mentions the token", "documents": long_docs})
        heavy_embed = ("/v1/embeddings", {"model": "minilm", "input": long_docs})
        cases = [("one sentence (embed) behind a 32x512 rerank", ("/v1/embeddings", sentence), heavy_rerank),
                 ("one-document rerank behind a 32x512 rerank", ("/v1/rerank", one_doc), heavy_rerank),
                 ("one sentence (embed) behind a 32x512 embed", ("/v1/embeddings", sentence), heavy_embed)]
        ms = lambda x: f"{x * 1000:.0f}"
        print(f"max_batch_tokens {info.get('max_batch_tokens')}, {a.rounds} rounds per case")
        print(f"{'case':<46} {'alone p50':>9} {'n':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'long s p50':>10}")
        for name, (spath, sbody), (hpath, hbody) in cases:
            for _ in range(3):
                post(port, spath, sbody)
            alone = [post(port, spath, sbody) for _ in range(20)]
            behind, heavy_s = [], []
            for _ in range(a.rounds):
                done = threading.Event()

                def heavy():
                    heavy_s.append(post(port, hpath, hbody))
                    done.set()

                t = threading.Thread(target=heavy)
                t.start()
                time.sleep(0.2)  # the long request is admitted, tokenized and running
                while not done.is_set():
                    dt = post(port, spath, sbody)
                    if not done.is_set():
                        behind.append(dt)
                    time.sleep(0.02)
                t.join()
            print(f"{name:<46} {ms(pct(alone, 50)):>9} {len(behind):>5} {ms(pct(behind, 50)):>7} "
                  f"{ms(pct(behind, 99)):>7} {ms(max(behind)):>7} {pct(heavy_s, 50):>10.2f}", flush=True)
    finally:
        srv.terminate()
        srv.wait(30)


if __name__ == "__main__":
    main()
