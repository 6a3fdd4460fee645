#!/usr/bin/env python3
"""Probe `embedrank serve` the way a slow or careless client would, over raw sockets, and print one
line per case (the before/after table of docs/serve.md "Connections and limits").

    python3 scripts/conn_probe.py target/debug/embedrank [--cache-dir .cache/hub]

Each case starts its own server (default flags, MiniLM from the cache, offline). Bounds are
generous waits, not targets: "no answer in 15s" means the server had not answered by then.
"""
import argparse
import os
import resource
import select
import signal
import socket
import subprocess
import time

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def start(binary, cache, extra=(), nofile=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    p = subprocess.Popen(
        [binary, "serve", "--port", "0", "--cache-dir", cache, "--model", MODEL, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, preexec_fn=limit)
    line = p.stdout.readline()
    host, port = line.strip().rsplit("/", 1)[1].rsplit(":", 1)
    return p, (host, int(port))


def stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def conn(addr):
    s = socket.create_connection(addr, timeout=30)
    return s


def response(s, within):
    """Status code of the first non-1xx response, or a description of what happened instead."""
    s.settimeout(within)
    buf = b""
    t0 = time.time()
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                c = s.recv(65536)
                if not c:
                    return f"closed without an answer after {time.time() - t0:.1f}s"
                buf += c
            head, _, buf = buf.partition(b"\r\n\r\n")
            code = int(head.split(b" ")[1])
            if 100 <= code < 200:
                continue
            return f"{code} after {time.time() - t0:.2f}s"
    except socket.timeout:
        return f"no answer in {within:.0f}s"
    except ConnectionResetError:
        return "connection reset"


def still_open(socks, within):
    """How many of `socks` the server has not closed after waiting `within` seconds."""
    deadline = time.time() + within
    by_fd = {s.fileno(): s for s in socks}
    poll = select.poll()
    for fd in by_fd:
        poll.register(fd, select.POLLIN)
    while by_fd and time.time() < deadline:
        for fd, _ in poll.poll(200):
            try:
                gone = not by_fd[fd].recv(4096)
            except OSError:
                gone = True
            if gone:
                poll.unregister(fd)
                del by_fd[fd]
    return len(by_fd)


def exit_after(p, within):
    t0 = time.time()
    try:
        code = p.wait(within)
        return f"exit {code} after {time.time() - t0:.1f}s"
    except subprocess.TimeoutExpired:
        return f"still running after {within:.0f}s"


HALF_HEAD = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Ty"
JSON_HEAD = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def case_half_open(binary, cache, nofile=None):
    p, addr = start(binary, cache, nofile=nofile)
    try:
        socks = []
        for _ in range(1100):
            s = conn(addr)
            s.sendall(HALF_HEAD)
            socks.append(s)
        h = conn(addr)
        h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        health = response(h, 30)
        left = still_open(socks, 15)
        where = f" (server open-file limit {nofile})" if nofile else ""
        print(f"1,100 half-open heads{where}: new client's /health -> {health}; "
              f"half-open still open after 15s: {left}")
    finally:
        stop(p)


def case_sigterm(binary, cache, what):
    p, addr = start(binary, cache)
    try:
        s = conn(addr)
        if what == "head":
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        else:
            s.sendall(JSON_HEAD + b"Content-Length: 100\r\n\r\n{\"in")
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        print(f"SIGTERM with a half-sent {what}: {exit_after(p, 75)}")
    finally:
        stop(p)


def case_second_signal(binary, cache):
    p, addr = start(binary, cache)
    try:
        s = conn(addr)
        s.sendall(JSON_HEAD + b"Content-Length: 100\r\n\r\n{\"in")
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        print(f"second SIGTERM 1s into the drain (half-sent body): {exit_after(p, 15)}")
    finally:
        stop(p)


def case_slow_reader(binary, cache):
    """A client that asks for a large answer (2,048 inputs) and never reads it. Detected without
    reading: junk sent after the request stays unread on the server, so its close is a reset."""
    p, addr = start(binary, cache)
    try:
        body = ('{"input": [' + ",".join(['"a b c"'] * 2048) + ']}').encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(addr)
        s.sendall(JSON_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        s.settimeout(2)
        try:
            s.sendall(b"x" * (4 << 20))
        except (socket.timeout, OSError):
            pass
        t0 = time.time()
        poll = select.poll()
        poll.register(s.fileno(), select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0x2000))
        while time.time() - t0 < 75 and not poll.poll(200):
            pass
        held = time.time() - t0
        what = f"closed after {held:.1f}s" if held < 75 else "still open after 75s"
        print(f"client never reads a 2,048-input answer: {what}")
    finally:
        stop(p)


def case_requests(binary, cache):
    p, addr = start(binary, cache)
    try:
        body = b'{"input": "hello"}'
        cases = [
            ("Content-Length 50MB (limit 2MiB), no body sent", JSON_HEAD + b"Content-Length: 50000000\r\n\r\n", 15),
            ("text/plain POST", b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
             + b"Content-Length: %d\r\n\r\n" % len(body) + body, 30),
            ("POST without Content-Type", b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
             + b"Content-Length: %d\r\n\r\n" % len(body) + body, 30),
            ("Content-Encoding: gzip", JSON_HEAD + b"Content-Encoding: gzip\r\n"
             + b"Content-Length: %d\r\n\r\n" % len(body) + body, 30),
            ("body 4 of 100 bytes, then nothing", JSON_HEAD + b"Content-Length: 100\r\n\r\n{\"in", 40),
        ]
        for name, raw, within in cases:
            s = conn(addr)
            s.sendall(raw)
            print(f"{name}: {response(s, within)}")
            s.close()
    finally:
        stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--cache-dir", default=".cache/hub")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    cases = {
        "half_open": lambda: case_half_open(a.binary, a.cache_dir),
        "half_open_1024": lambda: case_half_open(a.binary, a.cache_dir, nofile=1024),
        "sigterm_head": lambda: case_sigterm(a.binary, a.cache_dir, "head"),
        "sigterm_body": lambda: case_sigterm(a.binary, a.cache_dir, "body"),
        "second_signal": lambda: case_second_signal(a.binary, a.cache_dir),
        "requests": lambda: case_requests(a.binary, a.cache_dir),
        "slow_reader": lambda: case_slow_reader(a.binary, a.cache_dir),
    }
    for name, f in cases.items():
        if not a.only or name in a.only.split(","):
            f()


if __name__ == "__main__":
    main()
