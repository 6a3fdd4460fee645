#!/usr/bin/env python3
"""Load test of `embedrank serve` (issue 23): closed-loop wrk clients with mixed sizes against a
MiniLM embedder and a cross-encoder of ms-marco-MiniLM-L6-v2's shape, plus a probe that times one
short request every 100 ms, and the server's RSS sampled every second.

    scripts/serve_load.py BIN                          # 200 and 1000 clients, then 1000 honouring Retry-After, 60 s each
    scripts/serve_load.py BIN --clients 200,1000,200,1000 --secs 30   # interleaved, on a noisy machine
    scripts/serve_load.py BIN --clients 50,300 --secs 5 --check     # the bounded CI form
    scripts/serve_load.py BIN --soak-mins 30           # soak: 200 clients, RSS every 5 s
    scripts/serve_load.py BIN ... -- --max-queue 48    # after --: extra `serve` arguments

Traffic (drawn per request): 60% one short sentence to /v1/embeddings, 25% 16 passages of about
60 words to /v1/embeddings, 15% a /v1/rerank of one query and 10 passages of about 80 words.
Texts come from SciFact (../shared/data, tests and benchmarks only) when present, else synthetic.
Prints a table per phase: requests, answers by kind, goodput (200s per second), wrk's latency over
all kinds, the probe's short-request p50/p99, and peak RSS. `--check` exits 1 on any 5xx, any
429/503 without Retry-After, or any socket error or timeout."""

import argparse
import glob
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def texts(n):
    path = os.path.join(ROOT, "..", "shared", "data", "scifact", "corpus.jsonl")
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                out.append((d.get("title", ""), d.get("text", "")))
                if len(out) >= n:
                    break
    rng = random.Random(7)
    words = "protein cell gene expression patients study results increased risk model data trial".split()
    while len(out) < n:
        out.append((" ".join(rng.choice(words) for _ in range(8)), " ".join(rng.choice(words) for _ in range(200))))
    return out


def words(s, n):
    return " ".join(s.split()[:n])


def bodies(path, ce):
    rng = random.Random(11)
    docs = texts(2000)
    out = []
    for i in range(60):
        t = docs[rng.randrange(len(docs))][0] or "What is the capital of France?"
        out.append(("/v1/embeddings", {"model": "minilm", "input": words(t, 20)}))
    for i in range(25):
        out.append(("/v1/embeddings", {"model": "minilm", "input": [words(docs[rng.randrange(len(docs))][1], 60) for _ in range(16)]}))
    for i in range(15):
        q = words(docs[rng.randrange(len(docs))][0], 15)
        out.append(("/v1/rerank", {"model": "ce", "query": q,
                                   "documents": [words(docs[rng.randrange(len(docs))][1], 80) for _ in range(10)]}))
    with open(path, "w") as f:
        f.write("return {\n")
        for p, b in out:
            f.write("{path=%s, body=%s},\n" % (lua_str(p), lua_str(json.dumps(b))))
        f.write("}\n")
    return out


def lua_str(s):
    return "[==[" + s + "]==]"


def ensure_ce(hub, out):
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    snap = glob.glob(os.path.join(hub, "models--sentence-transformers--all-MiniLM-L6-v2", "snapshots", "*"))
    if not snap:
        sys.exit(f"MiniLM is not in {hub}: run scripts/fetch-test-models.sh")
    tmp = out + ".tmp"
    subprocess.run(["cargo", "run", "--quiet", "--example", "make_tiny_models", "--",
                    "--minilm-shape-cross-encoder", tmp, snap[0]], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    os.replace(tmp, out)
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    def __init__(self, pid, every):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self):
        t0 = time.time()
        while not self.stop.is_set():
            r = rss_kib(self.pid)
            if r is not None:
                self.samples.append((time.time() - t0, r))
            self.stop.wait(self.every)


class Probe(threading.Thread):
    """One short embedding request every 100 ms on its own connection: latency of each 200."""

    def __init__(self, port, body):
        super().__init__(daemon=True)
        self.port, self.body = port, json.dumps(body).encode()
        self.ok, self.refused, self.failed, self.stop = [], 0, 0, threading.Event()

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                t0 = time.perf_counter()
                conn.request("POST", "/v1/embeddings", self.body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                dt = time.perf_counter() - t0
                if r.status == 200:
                    self.ok.append(dt)
                elif r.status in (429, 503):
                    self.refused += 1
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                conn = None
            self.stop.wait(0.1)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def work_tokens(port):
    """Padded tokens of every forward pass so far (the sum of /metrics' embedrank_batch_tokens)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    total = 0.0
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith("embedrank_batch_tokens_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_wrk(port, clients, secs, lua, bodies_path, honour):
    env = dict(os.environ, BODIES=bodies_path, HONOUR="1" if honour else "0")
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{secs}s", "--timeout", "75s", "-s", lua, f"http://127.0.0.1:{port}"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=raise_nofile)
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    sys.exit(f"wrk printed no summary (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--hub", default=os.path.join(ROOT, ".cache/hub"))
    ap.add_argument("--ce", default=os.path.join(ROOT, ".cache/load/minilm-shape-cross-encoder"))
    ap.add_argument("--clients", default="200,1000", help="comma-separated client counts, one phase each")
    ap.add_argument("--secs", type=int, default=60)
    ap.add_argument("--no-honour", action="store_true", help="skip the phase whose clients honour Retry-After")
    ap.add_argument("--soak-mins", type=float, default=0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON object per phase instead of the table")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk (scripts/setup.sh installs it)")
    ce = ensure_ce(a.hub, a.ce)
    tmp = tempfile.mkdtemp(prefix="embedrank-load-")
    bodies_path = os.path.join(tmp, "bodies.lua")
    all_bodies = bodies(bodies_path, ce)
    lua = os.path.join(ROOT, "scripts", "load", "mixed.lua")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", RUST_LOG="warn")
    log = open(os.path.join(tmp, "serve.log"), "w")
    srv = subprocess.Popen([a.binary, "serve", "--port", str(port), "--cache-dir", a.hub,
                            "--model", f"minilm={MINILM}", "--model", f"ce={ce}", "--preload"] + a.extra,
                           env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
    rows, failed = [], []
    try:
        for _ in range(1200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/ready")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if srv.poll() is not None:
                sys.exit(f"server exited {srv.returncode}; log in {log.name}")
            time.sleep(0.25)
        # Warm-up: every body once.
        for p, b in all_bodies[::5]:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", p, json.dumps(b), {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, (p, r.status)
        idle = rss_kib(srv.pid)
        phases = [(f"{n} clients", int(n), a.secs, False) for n in a.clients.split(",")]
        if not a.no_honour and not a.soak_mins:
            phases.append((f"{max(int(n) for n in a.clients.split(','))} honouring", max(int(n) for n in a.clients.split(",")), a.secs, True))
        if a.soak_mins:
            phases = [("soak 200 clients", 200, int(a.soak_mins * 60), False)]
        short = all_bodies[0][1]
        for name, clients, secs, honour in phases:
            sampler = Sampler(srv.pid, 5 if a.soak_mins else 1)
            probe = Probe(port, short)
            sampler.start()
            probe.start()
            tok0 = work_tokens(port)
            w = run_wrk(port, clients, secs, lua, bodies_path, honour)
            tok1 = work_tokens(port)
            probe.stop.set()
            sampler.stop.set()
            probe.join()
            sampler.join()
            st = {int(k): v for k, v in w["status"].items()}
            dur = w["duration_us"] / 1e6
            e = w["errors"]
            row = {
                "phase": name, "clients": clients, "secs": round(dur, 1), "requests": w["requests"],
                "ok": st.get(200, 0), "429": st.get(429, 0), "503": st.get(503, 0),
                "5xx": sum(v for k, v in st.items() if k >= 500 and k != 503),
                "other": sum(v for k, v in st.items() if k not in (200, 429, 503) and k < 500),
                "no_retry_after": w["no_retry_after"],
                "socket_errors": e["connect"] + e["read"] + e["write"], "timeouts": e["timeout"],
                "goodput": st.get(200, 0) / dur,
                "work_tokens_per_s": (tok1 - tok0) / dur,
                "p50_ms": w["latency_p50_us"] / 1000, "p99_ms": w["latency_p99_us"] / 1000,
                "probe_ok": len(probe.ok), "probe_refused": probe.refused, "probe_failed": probe.failed,
                "probe_p50_ms": pct(probe.ok, 50) * 1000, "probe_p99_ms": pct(probe.ok, 99) * 1000,
                "rss_idle_mib": idle / 1024 if idle else None,
                "rss_max_mib": max((r for _, r in sampler.samples), default=0) / 1024,
                "rss_samples": [(round(t), round(r / 1024, 1)) for t, r in sampler.samples] if a.soak_mins else None,
            }
            rows.append(row)
            if a.json:
                print(json.dumps(row), flush=True)
            bad = row["5xx"] or row["no_retry_after"] or row["socket_errors"] or row["timeouts"] or probe.failed
            if bad:
                failed.append(name)
    finally:
        srv.terminate()
        try:
            srv.wait(40)
        except subprocess.TimeoutExpired:
            srv.kill()
    if not a.json:
        print(f"{'phase':<18} {'secs':>5} {'reqs':>7} {'200':>7} {'429':>7} {'503':>4} {'5xx':>4} {'4xx':>4} "
              f"{'noRA':>4} {'sock':>4} {'tmo':>4} {'good/s':>7} {'ktok/s':>6} {'p50ms':>7} {'p99ms':>7} "
              f"{'short n':>7} {'refused':>7} {'s p50':>6} {'s p99':>6} {'RSS MiB':>8}")
        for r in rows:
            print(f"{r['phase']:<18} {r['secs']:>5} {r['requests']:>7} {r['ok']:>7} {r['429']:>7} {r['503']:>4} "
                  f"{r['5xx']:>4} {r['other']:>4} {r['no_retry_after']:>4} {r['socket_errors']:>4} {r['timeouts']:>4} "
                  f"{r['goodput']:>7.1f} {r['work_tokens_per_s'] / 1000:>6.1f} {r['p50_ms']:>7.0f} {r['p99_ms']:>7.0f} {r['probe_ok']:>7} "
                  f"{r['probe_refused']:>7} {r['probe_p50_ms']:>6.0f} {r['probe_p99_ms']:>6.0f} "
                  f"{r['rss_idle_mib'] or 0:>4.0f}→{r['rss_max_mib']:<4.0f}")
        plain = [r for r in rows if "honouring" not in r["phase"] and "soak" not in r["phase"]]
        mean = lambda xs: sum(xs) / len(xs)
        for key, what in (("goodput", "goodput (200s/s)"), ("work_tokens_per_s", "work done (tokens/s)")):
            by = {}
            for r in plain:
                by.setdefault(r["clients"], []).append(r[key])
            if len(by) >= 2:
                lo, hi = min(by), max(by)
                print(f"{what} at {hi} clients / at {lo} (mean of {len(by[hi])} and {len(by[lo])} phases): "
                      f"{mean(by[hi]) / max(mean(by[lo]), 1e-9):.3f}")
            hon = [r for r in rows if "honouring" in r["phase"]]
            if hon and plain:
                peak = max(r[key] for r in plain)
                print(f"{what} honouring Retry-After / peak: {hon[0][key] / max(peak, 1e-9):.3f}")
        for r in rows:
            if r["rss_samples"]:
                s = r["rss_samples"]
                third = max(1, len(s) // 3)
                print(f"soak RSS MiB: first third max {max(x for _, x in s[:third]):.1f}, "
                      f"last third max {max(x for _, x in s[-third:]):.1f}, overall max {max(x for _, x in s):.1f}, "
                      f"{len(s)} samples")
                print("soak RSS trajectory (s, MiB): " + " ".join(f"{t}:{x}" for t, x in s[:: max(1, len(s) // 20)]))
    if a.check and failed:
        print(f"FAIL: 5xx, 429/503 without Retry-After, socket errors or timeouts in: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
