#!/usr/bin/env python3
"""Issue 23's abuse cases against one `embedrank` binary: status, peak server RSS over the RSS
before the case, answer bytes, seconds. Each server runs under an address-space cap (prlimit --as),
so a binary without the request bounds dies instead of taking the machine down.

    scripts/serve_bounds_rss.py BIN [--cap 2GiB] [--hub .cache/hub] [--tiny .cache/tiny]

Prints a Markdown table (docs/serve.md "Request limits" has the before/after one)."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Server:
    def __init__(self, binary, cap, hub, args):
        self.port = free_port()
        cmd = ["prlimit", f"--as={cap}", "--", binary, "serve", "--port", str(self.port), "--cache-dir", hub,
               "--request-timeout", "600s", "--preload"] + args
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("EMBEDRANK_API_KEY", None)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        t0 = time.time()
        while time.time() - t0 < 120:
            try:
                if self.request("GET", "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def request(self, method, path, body=None, timeout=180):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run_case(srv, send):
    """Returns (status or 'died', peak RSS growth MiB, answer bytes, seconds)."""
    pid = srv.proc.pid
    # prlimit execs the binary in the same process, so pid is the server's.
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    before = kb(pid, "VmRSS:")
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            h = kb(pid, "VmHWM:")
            if h is not None:
                peak[0] = max(peak[0], h)
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.time()
    try:
        status, nbytes = send(srv)
    except (OSError, urllib.error.URLError, TimeoutError) as e:
        status, nbytes = f"no answer ({type(e).__name__})", 0
    secs = time.time() - t0
    time.sleep(0.1)
    stop.set()
    t.join()
    if not srv.alive() or srv.proc.poll() is not None:
        status = f"server died (exit {srv.proc.poll()})"
    return status, (peak[0] - before) / 1024, nbytes, secs


def post(path, body):
    def send(srv):
        code, data = srv.request("POST", path, body)
        return code, len(data)
    return send


def long_query_docs(query_bytes, docs, doc=""):
    q = "relevance " * (query_bytes // 10)
    return ('{"query":"%s","documents":[%s]}' % (q, ",".join(['"%s"' % doc] * docs))).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--cap", default="2GiB")
    ap.add_argument("--hub", default=".cache/hub")
    ap.add_argument("--tiny", default=".cache/tiny")
    a = ap.parse_args()
    cap_bytes = int(float(a.cap[:-3]) * (1 << 30)) if a.cap.endswith("GiB") else int(a.cap)
    rows = []

    def case(name, server_args, send):
        srv = Server(a.binary, cap_bytes, a.hub, server_args)
        try:
            idle = kb(srv.proc.pid, "VmRSS:")
            status, growth, nbytes, secs = run_case(srv, send)
            after = None
            if srv.alive():
                time.sleep(1.5)  # a burst's end: the trimmer runs after 300 ms of quiet
                after = kb(srv.proc.pid, "VmRSS:")
            rows.append((name, status, growth, nbytes, secs, idle, after))
            print(f"{name}: {status}, peak +{growth:.0f} MiB, {nbytes} B, {secs:.1f} s, "
                  f"idle {idle // 1024} MiB, after {after // 1024 if after else '-'} MiB", file=sys.stderr)
        finally:
            srv.stop()

    ce = os.path.join(a.tiny, "tiny-bert-cross-encoder")
    qemb = os.path.join(a.tiny, "tiny-qwen3-embedding")
    big = "tokenization " * 150_000  # 1.95 MB

    case("cross-encoder: 1 MB query x 300k empty documents", ["--model", ce],
         post("/v1/rerank", long_query_docs(1_000_000, 300_000)))
    case("cross-encoder: 1 MB query x 1,000 documents", ["--model", ce],
         post("/v1/rerank", long_query_docs(1_000_000, 1000, "doc")))
    case("Qwen3 embedder: 1 MB instruction x 2,048 inputs", ["--model", qemb],
         post("/v1/embeddings", {"input": ["x"] * 2048, "instruction": "classify " * 110_000}))
    case("Qwen3 embedder: 1 MB instruction x 200k inputs", ["--model", qemb],
         post("/v1/embeddings", {"input": ["x"] * 200_000, "instruction": "classify " * 110_000}))
    case("MiniLM: one 2 MB embedding input", ["--model", MINILM], post("/v1/embeddings", {"input": big}))
    case("MiniLM: one 2 MB /tokenize text", ["--model", MINILM], post("/tokenize", {"inputs": big}))

    def split_100k(srv):
        total, code = 0, 200
        for start in range(0, 100_000, 2048):
            n = min(2048, 100_000 - start)
            c, data = srv.request("POST", "/v1/embeddings", {"input": [chr(97 + i % 26) for i in range(n)]})
            total += len(data)
            code = c if c != 200 else code
        return code, total

    case("MiniLM: 100,000 one-char inputs in 49 requests of <= 2,048", ["--model", MINILM], split_100k)
    case("MiniLM: 100,000 one-char inputs in one request", ["--model", MINILM],
         post("/v1/embeddings", {"input": ["a"] * 100_000}))
    case("JSON array body", ["--model", MINILM], post("/v1/embeddings", b'[["hello"], "m"]'))

    print("| case | status | peak RSS over pre-case (MiB) | answer bytes | seconds | RSS idle -> 1.5 s after (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, status, growth, nbytes, secs, idle, after in rows:
        after_s = f"{idle // 1024} -> {after // 1024}" if after else f"{idle // 1024} -> -"
        print(f"| {name} | {status} | {growth:.0f} | {nbytes:,} | {secs:.1f} | {after_s} |")


if __name__ == "__main__":
    main()
