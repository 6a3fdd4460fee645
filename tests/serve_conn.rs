//! Connection handling of `embedrank serve` over raw sockets: half-open request heads (header
//! timeout, the connection cap closing idle connections for new ones), the 503 refusal when every
//! connection is busy, shutdown with stuck clients (deadline, second signal), and request intake
//! (early 413 on Content-Length, 415 for non-JSON types and compressed bodies, 408 on a slow body).
//!
//! No assertion here is about speed: every wait has a generous bound only so that a hang fails.

mod serve_common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use serve_common::{answer, Server, MINILM};

const WAIT: Duration = Duration::from_secs(60);

fn addr(srv: &Server) -> String {
    srv.base.trim_start_matches("http://").to_string()
}

fn connect(srv: &Server) -> TcpStream {
    let s = TcpStream::connect(addr(srv)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

/// One response: status, lower-cased headers, body. 1xx interim answers are skipped.
fn read_response(s: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).expect("read response head");
            assert!(n > 0, "connection closed before a response head: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        buf.drain(..end);
        if (100..200).contains(&status) {
            continue;
        }
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).expect("read body");
            assert!(n > 0, "connection closed inside the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.truncate(len);
        return (status, headers, buf);
    }
}

fn header<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Reads until the peer closes (EOF or reset); false when it is still open after `WAIT`.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A POST whose body stays unfinished: the server is inside the request (reading the body) once
/// the `100 Continue` arrives.
fn busy_request(srv: &Server) -> TcpStream {
    let mut s = connect(srv);
    s.write_all(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nExpect: 100-continue\r\n\r\n",
    )
    .expect("write");
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut c = [0u8; 256];
        let n = s.read(&mut c).expect("read 100 Continue");
        assert!(n > 0, "closed before 100 Continue");
        got.extend_from_slice(&c[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&got));
    s.write_all(b"{\"input\": ").expect("write part of the body");
    s
}

fn get_health(srv: &Server) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = connect(srv);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    read_response(&mut s)
}

/// Raise this process's open-file limit (the server inherits it) to at least `want`, as far as the
/// hard limit allows; returns the limit in force.
fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            let new = libc::rlimit { rlim_cur: want.min(lim.rlim_max), rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                lim.rlim_cur = new.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

fn signal(srv: &Server, sig: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(srv.pid().to_string()).status();
    assert!(ok.expect("kill").success());
}

fn wait_exit(srv: &mut Server, within: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = srv.child.try_wait().expect("wait") {
            return s;
        }
        assert!(t0.elapsed() < within, "server still running {within:?} after the signal");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn half_open_heads_neither_lock_out_clients_nor_stay_forever() {
    // The test holds n sockets and the server n more (plus its own files). 1,100 against the
    // default cap of 1,024 where the hard open-file limit allows; else fewer, with the cap lowered
    // to keep 76 more heads than places.
    let limit = raise_nofile(2 * 1100 + 512);
    let n = (usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(512) / 2).min(1100);
    assert!(n > 100, "open-file limit {limit} is too low for this test");
    let cap = (n - 76).to_string();
    if n < 1100 {
        eprintln!("NOTE: open-file hard limit {limit}: {n} half-open connections against --max-connections {cap}");
    }
    let srv = Server::start(&["--model", MINILM, "--header-timeout", "3s", "--max-connections", &cap]);
    let mut half: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = connect(&srv);
            s.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Ty").expect("half a head");
            s
        })
        .collect();
    let t0 = Instant::now();
    let (code, _, body) = get_health(&srv);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(t0.elapsed() < Duration::from_secs(10), "/health took {:?}", t0.elapsed());
    // Every half-open connection is closed by the server: the oldest to make room, the rest at the
    // header timeout.
    let open: usize = half.iter_mut().map(|s| usize::from(!closed_by_server(s))).sum();
    assert_eq!(open, 0, "{open} half-open connections still open after {WAIT:?}");
    // And the server still serves.
    assert_eq!(srv.post("/v1/embeddings", &serde_json::json!({"input": "still here"})).0, 200);
}

#[test]
fn connection_cap_closes_idle_connections_and_refuses_when_all_are_busy() {
    let srv = Server::start(&["--model", MINILM, "--max-connections", "2", "--body-timeout", "600s"]);
    // An idle keep-alive connection (one request done) and a busy one fill the table.
    let mut idle = connect(&srv);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    assert_eq!(read_response(&mut idle).0, 200);
    let busy1 = busy_request(&srv);
    // A newcomer takes the idle connection's place.
    assert_eq!(get_health(&srv).0, 200);
    assert!(closed_by_server(&mut idle), "the idle connection was closed for the newcomer");
    // Both places busy: a clear refusal.
    let busy2 = busy_request(&srv);
    let (code, headers, body) = get_health(&srv);
    assert_eq!(code, 503);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let v = json(&body);
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error");
    // A busy connection ends: its place is free again.
    drop(busy1);
    let t0 = Instant::now();
    while get_health(&srv).0 != 200 {
        assert!(t0.elapsed() < WAIT, "no place after a connection ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(busy2);
}

#[test]
fn sigterm_with_half_sent_requests_exits_0_at_the_deadline() {
    let mut srv = Server::start(&[
        "--model",
        MINILM,
        "--shutdown-timeout",
        "2s",
        "--header-timeout",
        "600s",
        "--body-timeout",
        "600s",
    ]);
    let mut head = connect(&srv);
    head.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n").expect("half a head");
    let _body = busy_request(&srv);
    signal(&srv, "TERM");
    // Far below the 600 s timeouts: the deadline (2 s) cut the stuck request.
    let exit = wait_exit(&mut srv, WAIT);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(closed_by_server(&mut head));
}

#[test]
fn second_signal_during_the_drain_stops_at_once() {
    let mut srv = Server::start(&["--model", MINILM, "--shutdown-timeout", "600s", "--body-timeout", "600s"]);
    let _body = busy_request(&srv);
    signal(&srv, "TERM");
    // Draining once the listener is gone.
    let t0 = Instant::now();
    while TcpStream::connect(addr(&srv)).is_ok() {
        assert!(t0.elapsed() < WAIT, "listener still open after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(srv.child.try_wait().expect("wait").is_none(), "still draining the stuck request");
    signal(&srv, "INT");
    let exit = wait_exit(&mut srv, WAIT);
    assert!(!exit.success(), "a forced stop is not a clean exit: {exit:?}");
}

#[test]
fn oversized_content_length_is_413_before_the_body() {
    let srv = Server::start(&["--model", MINILM, "--payload-limit", "1000"]);
    let mut s = connect(&srv);
    s.write_all(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n",
    )
    .expect("write");
    // Nothing of the body is sent: the answer cannot wait for it.
    let (code, headers, body) = read_response(&mut s);
    assert_eq!(code, 413);
    assert_eq!(json(&body)["error"]["code"], "payload_too_large");
    assert_eq!(header(&headers, "connection"), Some("close"));
    // A chunked body past the limit is a 413 too.
    let big = format!("{{\"input\": \"{}\"}}", "x".repeat(5000));
    let mut s = connect(&srv);
    let req = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    assert_eq!(read_response(&mut s).0, 413);
}

#[test]
fn early_413_reaches_clients_that_send_the_whole_body() {
    // The answer goes out before the body is read; the body still arriving must not turn the
    // close into a reset that destroys the answer (the server reads it away before closing).
    let srv = Server::start(&["--model", MINILM, "--payload-limit", "1000"]);
    let body = vec![b' '; 256 << 10];
    for _ in 0..30 {
        let r = ureq::post(&srv.url("/v1/embeddings")).set("Content-Type", "application/json").send_bytes(&body);
        let (code, v) = answer(r);
        assert_eq!(code, 413, "{v}");
    }
}

#[test]
fn non_json_types_and_encodings_are_415() {
    let srv = Server::start(&["--model", MINILM]);
    let body = r#"{"input": "hello"}"#;
    let post = |ct: Option<&str>, ce: Option<&str>| {
        let mut r = ureq::post(&srv.url("/v1/embeddings"));
        if let Some(ct) = ct {
            r = r.set("Content-Type", ct);
        }
        if let Some(ce) = ce {
            r = r.set("Content-Encoding", ce);
        }
        answer(r.send_bytes(body.as_bytes()))
    };
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (code, v) = post(Some(ct), None);
        assert_eq!(code, 415, "{ct}");
        assert_eq!(v["error"]["code"], "unsupported_media_type", "{v}");
    }
    assert_eq!(post(None, None).0, 415, "no Content-Type");
    let (code, v) = post(Some("application/json"), Some("gzip"));
    assert_eq!(code, 415);
    assert_eq!(v["error"]["code"], "unsupported_content_encoding", "{v}");
    assert_eq!(post(Some("application/json; charset=utf-8"), None).0, 200);
    assert_eq!(post(Some("application/json"), Some("identity")).0, 200);
    // GET routes have no body to check.
    assert_eq!(srv.get("/health").0, 200);

    let any = Server::start(&["--model", MINILM, "--allow-any-content-type"]);
    let (code, _) = answer(ureq::post(&any.url("/v1/embeddings")).set("Content-Type", "text/plain").send_string(body));
    assert_eq!(code, 200, "--allow-any-content-type");
}

#[test]
fn slow_body_is_408() {
    let srv = Server::start(&["--model", MINILM, "--body-timeout", "1s"]);
    let mut s = connect(&srv);
    s.write_all(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"in",
    )
    .expect("write");
    let (code, _, body) = read_response(&mut s);
    assert_eq!(code, 408);
    assert_eq!(json(&body)["error"]["code"], "body_timeout");
    let _ = s.shutdown(Shutdown::Both);
}
