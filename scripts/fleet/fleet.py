"""Fleet fault test: started by scripts/fleet/fleet.sh once the namespaces and HAProxy are up.

Starts the three replicas (one per network namespace), computes reference answers on replica 1
directly, then drives closed-loop mixed embed/rerank traffic through HAProxy (127.0.0.1:19000)
through these phases: baseline, SIGTERM r1 (drain, restart), SIGKILL r2 (restart), cut r3 off the
network (link down, then up), overload past the queue limits, after. Every answer is checked
against the reference. Prints one row per phase and the replicas' RSS; exits 1 if a check fails.
"""

import argparse
import asyncio
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time

import aiohttp

LB = "http://127.0.0.1:19000"
PORT = 19001
EMBED_MODEL = "minilm"
RERANK_MODEL = "rerank"

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes restarts containers whose liveness probe fails.",
    "A load balancer spreads requests across healthy replicas.",
    "Embeddings map text to vectors that capture meaning.",
    "The cat sat on the mat.",
    "Rust guarantees memory safety without a garbage collector.",
    "Paris is the capital of France.",
    "Photosynthesis turns light into chemical energy.",
    "HAProxy checks each backend's health endpoint.",
    "A rolling restart replaces pods one at a time.",
    "The stock market fell sharply on Monday.",
    "She plays the violin in an orchestra.",
    "Network partitions split a cluster in two.",
    "Green tea contains less caffeine than coffee.",
    "The river flooded the valley after the storm.",
    "Queue depth is a good autoscaling signal.",
]
QUERIES = [
    "how do replicas stay healthy",
    "what is the capital of france",
    "music and instruments",
    "memory safe programming languages",
]
DOCS = TEXTS[:8]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(math.ceil(p / 100 * len(xs))) - 1)]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / max(na * nb, 1e-30)


class Replica:
    def __init__(self, i, args):
        self.i = i
        self.args = args
        self.addr = f"10.77.0.1{i}"
        self.proc = None
        self.log = open(os.path.join(args.work, f"replica{i}.log"), "ab")
        self.rss_start = None
        self.starts = 0

    @property
    def url(self):
        return f"http://{self.addr}:{PORT}"

    def start(self):
        a = self.args
        cmd = ["ip", "netns", "exec", f"erfl{self.i}", a.bin, "serve", "--host", self.addr, "--port", str(PORT),
               "-m", f"{EMBED_MODEL}=sentence-transformers/all-MiniLM-L6-v2", "--cache-dir", a.hub, "--preload",
               "--max-queue", str(a.max_queue), "--request-timeout", a.request_timeout]
        if a.rerank:
            cmd += ["-m", f"{RERANK_MODEL}={a.tiny}/tiny-bert-cross-encoder"]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("EMBEDRANK_API_KEY", None)
        # `ip netns exec` execs the command: the pid is the server's.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        self.starts += 1
        with open(os.path.join(a.work, f"replica{self.i}.pid"), "w") as f:
            f.write(str(self.proc.pid))

    def rss_mib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    async def wait_ready(self, session, limit=300):
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.i} exited with {self.proc.returncode} (see {self.log.name})")
            try:
                async with session.get(self.url + "/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"replica {self.i} not ready after {limit}s")


def haproxy_stat(work):
    """HAProxy's `show stat` rows of the replicas backend (CSV fields: 15 wretr, 16 wredis, 17 status)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(work, "haproxy.sock"))
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return [r for r in rows if len(r) > 17 and r[0] == "replicas"]


def haproxy_status(work):
    """Server name -> UP/DOWN/... """
    return {r[1]: r[17] for r in haproxy_stat(work) if r[1].startswith("r")}


def haproxy_retries(work):
    """Requests HAProxy retried (same server) or redispatched (another one) so far."""
    return sum(int(r[15] or 0) + int(r[16] or 0) for r in haproxy_stat(work) if r[1] == "BACKEND")


async def wait_lb_up(work, names, limit=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        st = haproxy_status(work)
        if all(st.get(n, "").startswith("UP") for n in names):
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise RuntimeError(f"HAProxy never saw {names} UP: {haproxy_status(work)}")


class Stats:
    KINDS = ["429", "503", "504", "conn", "timeout", "other"]

    def __init__(self, name):
        self.name = name
        self.requests = self.ok = self.wrong = self.no_retry_after = 0
        self.errors = {k: 0 for k in self.KINDS}
        self.lat = []
        self.notes = []
        # (start, seconds, ok) of every request, and the fault's [start, end] (monotonic clock),
        # for latency before / during / after the fault.
        self.events = []
        self.fault = None

    def error_count(self):
        return sum(self.errors.values())


class Load:
    def __init__(self, args, ref_vec, ref_scores):
        self.args = args
        self.ref_vec = ref_vec
        self.ref_scores = ref_scores

    def make(self, rng):
        if self.args.rerank and rng.random() < 0.3:
            q = rng.choice(QUERIES)
            docs = rng.sample(DOCS, 4)
            return "/v1/rerank", {"model": RERANK_MODEL, "query": q, "documents": docs}, ("rerank", q, docs)
        texts = rng.sample(TEXTS, rng.randint(1, 3))
        return "/v1/embeddings", {"model": EMBED_MODEL, "input": texts}, ("embed", texts)

    def correct(self, what, body):
        try:
            if what[0] == "embed":
                data = body["data"]
                if len(data) != len(what[1]):
                    return False
                return all(cosine(d["embedding"], self.ref_vec[what[1][d["index"]]]) > 0.9999 for d in data)
            _, q, docs = what
            res = body["results"]
            if sorted(r["index"] for r in res) != list(range(len(docs))):
                return False
            return all(abs(r["relevance_score"] - self.ref_scores[(q, docs[r["index"]])]) < 1e-3 for r in res)
        except (KeyError, TypeError, IndexError, ValueError):
            return False

    async def worker(self, session, st, stop, seed):
        rng = random.Random(seed)
        while not stop.is_set():
            path, body, what = self.make(rng)
            st.requests += 1
            t0 = time.monotonic()
            try:
                async with session.post(LB + path, json=body,
                                        timeout=aiohttp.ClientTimeout(total=self.args.client_timeout)) as r:
                    payload = await r.json(content_type=None)
                    code = r.status
                    retry_after = r.headers.get("Retry-After")
            except asyncio.TimeoutError:
                st.errors["timeout"] += 1
                st.events.append((t0, time.monotonic() - t0, False))
                continue
            except (aiohttp.ClientError, ValueError):
                st.errors["conn"] += 1
                st.events.append((t0, time.monotonic() - t0, False))
                await asyncio.sleep(0.05)
                continue
            dt = time.monotonic() - t0
            st.events.append((t0, dt, code == 200))
            if code == 200:
                st.ok += 1
                st.lat.append(dt)
                if not self.correct(what, payload):
                    st.wrong += 1
            else:
                kind = str(code) if str(code) in st.errors else "other"
                st.errors[kind] += 1
                if code in (429, 503):
                    if retry_after is None:
                        st.no_retry_after += 1
                    # A polite client backs off; short, so the overload keeps pressing.
                    await asyncio.sleep(0.1)


async def run_phase(load, session, name, conc, seconds, fault=None):
    st = Stats(name)
    retries0 = haproxy_retries(load.args.work)
    stop = asyncio.Event()
    workers = [asyncio.create_task(load.worker(session, st, stop, hash((name, k)))) for k in range(conc)]
    t0 = time.monotonic()
    if fault is not None:
        await fault(st)
    # At least `seconds` of traffic, and 3 more after a fault finished (recovery under load).
    await asyncio.sleep(max(seconds - (time.monotonic() - t0), 3.0 if fault else 0.0))
    stop.set()
    await asyncio.gather(*workers)
    st.duration = time.monotonic() - t0
    st.lb_retries = haproxy_retries(load.args.work) - retries0
    return st


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--hub", required=True)
    ap.add_argument("--tiny", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--phase-s", type=float, default=20)
    ap.add_argument("--conc", type=int, default=4)
    ap.add_argument("--overload-conc", type=int, default=64)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--request-timeout", default="10s")
    ap.add_argument("--client-timeout", type=float, default=30)
    args = ap.parse_args()
    args.rerank = os.path.isdir(os.path.join(args.tiny, "tiny-bert-cross-encoder"))

    replicas = [Replica(i, args) for i in (1, 2, 3)]
    names = [f"r{r.i}" for r in replicas]
    try:
        for r in replicas:
            r.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            for r in replicas:
                await r.wait_ready(session)
            await wait_lb_up(args.work, names)

            # Reference answers from replica 1 directly, one input per request.
            ref_vec, ref_scores = {}, {}
            r1 = replicas[0].url
            for t in TEXTS:
                async with session.post(r1 + "/v1/embeddings", json={"model": EMBED_MODEL, "input": t}) as resp:
                    ref_vec[t] = (await resp.json())["data"][0]["embedding"]
            if args.rerank:
                for q in QUERIES:
                    for d in DOCS:
                        async with session.post(r1 + "/v1/rerank",
                                                json={"model": RERANK_MODEL, "query": q, "documents": [d]}) as resp:
                            ref_scores[(q, d)] = (await resp.json())["results"][0]["relevance_score"]
            load = Load(args, ref_vec, ref_scores)
            await run_phase(load, session, "warmup", args.conc, 3)
            for r in replicas:
                r.rss_start = r.rss_mib()
            rss_first = {r.i: (r.proc.pid, r.rss_start) for r in replicas}

            async def big_request(r):
                """A long request straight to replica r: in flight when the SIGTERM lands."""
                texts = [" ".join(TEXTS) for _ in range(48)]
                async with session.post(r.url + "/v1/embeddings", json={"model": EMBED_MODEL, "input": texts},
                                        timeout=aiohttp.ClientTimeout(total=120)) as resp:
                    body = await resp.json(content_type=None)
                    return resp.status, len(body.get("data", [])) if isinstance(body, dict) else 0

            async def restart(r, st, sig, label):
                await asyncio.sleep(3)
                inflight = None
                if sig == signal.SIGTERM:
                    inflight = asyncio.create_task(big_request(r))
                    await asyncio.sleep(0.3)
                t0 = time.monotonic()
                st.fault = [t0, None]
                r.proc.send_signal(sig)
                code = await asyncio.get_running_loop().run_in_executor(None, r.proc.wait)
                st.notes.append(f"r{r.i} {label}: exit {code} after {time.monotonic() - t0:.1f}s")
                if inflight is not None:
                    try:
                        status, n = await inflight
                    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                        status, n = type(e).__name__, 0
                    st.drained = status == 200 and n == 48
                    st.notes.append(f"48-text request in flight at SIGTERM: {status}, {n} vectors")
                if sig == signal.SIGKILL:
                    await asyncio.sleep(2)  # the node/pod is gone for a moment
                r.start()
                ready = await r.wait_ready(session)
                up = await wait_lb_up(args.work, [f"r{r.i}"])
                st.notes.append(f"back: ready {ready:.1f}s, LB UP +{up:.1f}s")
                st.fault[1] = time.monotonic()
                r.rss_start = r.rss_mib()

            async def sigterm(st):
                await restart(replicas[0], st, signal.SIGTERM, "SIGTERM")

            async def sigkill(st):
                await restart(replicas[1], st, signal.SIGKILL, "SIGKILL")

            async def netcut(st):
                await asyncio.sleep(3)
                subprocess.run(["ip", "-n", "erfl3", "link", "set", "eth0", "down"], check=True)
                t0 = time.monotonic()
                st.fault = [t0, None]
                while haproxy_status(args.work).get("r3", "").startswith("UP") and time.monotonic() - t0 < 30:
                    await asyncio.sleep(0.1)
                st.notes.append(f"r3 link down: LB marks DOWN after {time.monotonic() - t0:.1f}s")
                await asyncio.sleep(8)
                subprocess.run(["ip", "-n", "erfl3", "link", "set", "eth0", "up"], check=True)
                up = await wait_lb_up(args.work, ["r3"])
                st.notes.append(f"link up: LB UP after {up:.1f}s")
                st.fault[1] = time.monotonic()

            phases = []
            p = args.phase_s
            phases.append(await run_phase(load, session, "baseline", args.conc, p))
            phases.append(await run_phase(load, session, "sigterm-r1", args.conc, p, sigterm))
            phases.append(await run_phase(load, session, "sigkill-r2", args.conc, p, sigkill))
            phases.append(await run_phase(load, session, "netcut-r3", args.conc, p, netcut))
            phases.append(await run_phase(load, session, f"overload-x{args.overload_conc}", args.overload_conc, p))
            await asyncio.sleep(2)
            phases.append(await run_phase(load, session, "after", args.conc, p))
            lb_end = haproxy_status(args.work)
    finally:
        # RSS first: after SIGTERM a replica may be gone before /proc is read.
        rss_end = {r.i: (r.proc.pid, r.rss_mib()) for r in replicas if r.proc}
        for r in replicas:
            if r.proc and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in replicas:
            if r.proc:
                try:
                    r.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    r.proc.kill()

    binkind = "release" if "/release/" in args.bin else "debug" if "/debug/" in args.bin else "custom"
    print(f"\nfleet: 3 replicas ({binkind} binary {args.bin}), models {EMBED_MODEL}"
          f"{' + ' + RERANK_MODEL + ' (tiny BERT cross-encoder)' if args.rerank else ''}, max_queue {args.max_queue}, "
          f"request_timeout {args.request_timeout}; HAProxy leastconn, /ready checks every 500ms; "
          f"closed-loop clients x{args.conc} (overload x{args.overload_conc}), 70% embed / 30% rerank")
    hdr = (f"{'phase':<14} {'secs':>5} {'reqs':>6} {'ok':>6} {'429':>5} {'503':>4} {'504':>4} {'conn':>4} "
           f"{'tmo':>4} {'oth':>4} {'wrong':>5} {'noRA':>4} {'LBrt':>4} {'p50ms':>7} {'p99ms':>7} {'maxms':>7}  notes")
    print(hdr)
    print("-" * len(hdr))
    for st in phases:
        e = st.errors
        print(f"{st.name:<14} {st.duration:>5.0f} {st.requests:>6} {st.ok:>6} {e['429']:>5} {e['503']:>4} "
              f"{e['504']:>4} {e['conn']:>4} {e['timeout']:>4} {e['other']:>4} {st.wrong:>5} {st.no_retry_after:>4} "
              f"{st.lb_retries:>4} {pct(st.lat, 50) * 1000:>7.0f} {pct(st.lat, 99) * 1000:>7.0f} "
              f"{max(st.lat, default=float('nan')) * 1000:>7.0f}  {'; '.join(st.notes)}")
    print("columns: 429/503/504 HTTP status; conn: connection error; tmo: client timeout "
          f"({args.client_timeout:.0f}s); oth: other status; wrong: 200 with an answer off the reference; "
          "noRA: 429/503 without Retry-After; LBrt: requests HAProxy retried or redispatched to another replica")
    print("\nlatency around each fault (requests by start time: before the fault, from the fault until the "
          "replica is back in the LB, after)")
    print(f"{'phase':<14} {'before n/err p50/p99 ms':>26} {'during n/err p50/p99 ms':>26} {'after n/err p50/p99 ms':>26}")
    for st in phases:
        if not st.fault or st.fault[1] is None:
            continue
        cells = []
        for lo, hi in [(float("-inf"), st.fault[0]), (st.fault[0], st.fault[1]), (st.fault[1], float("inf"))]:
            ev = [e for e in st.events if lo <= e[0] < hi]
            lat = [e[1] for e in ev if e[2]]
            cells.append(f"{len(ev)}/{sum(1 for e in ev if not e[2])} {pct(lat, 50) * 1000:.0f}/{pct(lat, 99) * 1000:.0f}")
        print(f"{st.name:<14} {cells[0]:>26} {cells[1]:>26} {cells[2]:>26}")
    print("\nreplica  pid@start  RSS after warm-up MiB  pid@end  RSS at end MiB  (a restarted replica is a new process)")
    for r in replicas:
        p0, m0 = rss_first[r.i]
        p1, m1 = rss_end[r.i]
        print(f"r{r.i}      {p0:>9}  {m0:>22.0f}  {p1:>7}  {m1:>14.0f}")
    print(f"HAProxy at end: {lb_end}")

    checks = []
    by = {st.name.split("-x")[0]: st for st in phases}
    checks.append(("no wrong answers in any phase", all(st.wrong == 0 for st in phases)))
    checks.append(("baseline: every request ok", by["baseline"].error_count() == 0))
    checks.append(("SIGTERM: drained, no request lost", by["sigterm-r1"].error_count() == 0))
    checks.append(("SIGTERM: the request in flight on the replica finished (200, all vectors)",
                   getattr(by["sigterm-r1"], "drained", False)))
    checks.append((f"SIGKILL: errors <= in flight on the killed replica (<= {args.conc})",
                   by["sigkill-r2"].error_count() <= args.conc))
    checks.append((f"net cut: errors <= in flight on the cut replica (<= {args.conc})",
                   by["netcut-r3"].error_count() <= args.conc))
    ov = by["overload"]
    checks.append(("overload: clients see 429/503", ov.errors["429"] + ov.errors["503"] > 0))
    checks.append(("overload: every 429/503 has Retry-After", ov.no_retry_after == 0))
    checks.append(("overload: no timeouts (504 / client timeout)", ov.errors["504"] + ov.errors["timeout"] == 0))
    checks.append(("after: every request ok", by["after"].error_count() == 0))
    checks.append(("after: all replicas UP in HAProxy", all(v.startswith("UP") for v in lb_end.values())))
    # Flat: a process's RSS at the end within 1.5x of its RSS after warm-up (or its restart).
    flat = all(rss_end[r.i][1] <= 1.5 * r.rss_start for r in replicas)
    checks.append(("RSS flat (end <= 1.5x start, per process)", flat))
    print()
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
