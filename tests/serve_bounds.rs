//! Every request's cost is bounded before work starts: the abuse cases of issue 23 as regression
//! tests. Each server runs under a 2 GiB address-space cap (RLIMIT_AS), so a regression that
//! allocates per document or per input fails here (allocation failure, the process dies) instead of
//! taking the machine down; each case also checks the server's peak RSS over its idle level
//! (`/proc/PID/status` VmHWM, reset per case through `/proc/PID/clear_refs`).

mod serve_common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use serve_common::common::tiny_dir;
use serve_common::*;

const AS_CAP: u64 = 2 << 30;
/// The issue's target: no request under the payload limit raises RSS by more than this.
const RSS_BUDGET_KB: u64 = 256 * 1024;

/// `embedrank serve --port 0 ARGS…` under the address-space cap, offline against the test hub.
fn start_capped(args: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    cmd.arg("serve").arg("--port").arg("0").arg("--cache-dir").arg(test_hub()).args(args);
    if !args.contains(&"--request-timeout") {
        cmd.args(["--request-timeout", "600s"]);
    }
    cmd.env("HF_HUB_OFFLINE", "1").env_remove("EMBEDRANK_API_KEY");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: AS_CAP, rlim_max: AS_CAP };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn embedrank serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("server printed no address in 60s");
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
    let srv = Server { child, base };
    srv.wait_for("ready", || srv.get("/ready").0 == 200);
    srv
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"))
}

/// Run `case` and return the server's peak RSS during it above the RSS before it, in KiB.
fn peak_growth(srv: &Server, case: impl FnOnce()) -> u64 {
    // "5" resets VmHWM to the current RSS (Linux 4.0+).
    std::fs::write(format!("/proc/{}/clear_refs", srv.pid()), "5").expect("reset VmHWM");
    let before = status_kb(srv.pid(), "VmRSS:");
    case();
    let peak = status_kb(srv.pid(), "VmHWM:");
    assert_eq!(srv.get("/health").0, 200, "server alive after the case");
    peak.saturating_sub(before)
}

fn expect_error(code: u16, body: &Value, want_code: u16, want: &str) {
    assert_eq!(code, want_code, "status; body: {body}");
    assert_eq!(body["error"]["code"], want, "code in {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
}

fn within_budget(what: &str, kb: u64) {
    eprintln!("{what}: peak RSS +{} MiB", kb / 1024);
    assert!(kb < RSS_BUDGET_KB, "{what}: peak RSS grew by {} MiB", kb / 1024);
}

fn config(dir: &Path, body: &str) -> String {
    let p = dir.join("serve.toml");
    std::fs::write(&p, body).expect("write config");
    p.to_str().expect("utf-8").to_string()
}

/// A body of just under 2 MB: a `query` of `query_bytes` and as many empty documents as fit.
fn long_query_empty_docs(query_bytes: usize, docs: usize) -> String {
    let q = "relevance ".repeat(query_bytes / 10);
    let mut body = format!("{{\"query\":\"{q}\",\"documents\":[");
    for i in 0..docs {
        body.push_str(if i == 0 { "\"\"" } else { ",\"\"" });
    }
    body.push_str("]}");
    body
}

#[test]
fn cross_encoder_long_query_and_many_documents() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ce = tmp.path().join("ce");
    make_cross_encoder(&ce);
    // A 128-token window keeps the 1,000 allowed pairs quick to score on a small CPU.
    let cfg =
        config(tmp.path(), &format!("[[models]]\nid = \"ce\"\nsource = \"{}\"\nmax_length = 128\n", ce.display()));
    let srv = start_capped(&["--config", &cfg, "--preload"]);

    // 300,000 empty documents with a 1 MB query: refused on the count, before any work.
    let body = long_query_empty_docs(1_000_000, 300_000);
    assert!(body.len() < 2 << 20);
    let mut got = (0, Value::Null);
    let kb = peak_growth(&srv, || got = srv.post_raw("/v1/rerank", &body));
    expect_error(got.0, &got.1, 413, "too_many_inputs");
    assert!(got.1["error"]["message"].as_str().unwrap_or("").contains("max_rerank_documents"), "{}", got.1);
    within_budget("1 MB query x 300k empty documents", kb);

    // The same 1 MB query with the 1,000 documents allowed: the query is cut and tokenized once,
    // each pair keeps its document (longest-first truncation), and every score is a number.
    let body = long_query_empty_docs(1_000_000, 1000).replace("\"\"", "\"doc\"");
    let kb = peak_growth(&srv, || got = srv.post_raw("/v1/rerank", &body));
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["results"].as_array().map(Vec::len), Some(1000));
    within_budget("1 MB query x 1000 documents", kb);

    // Caps are reported, and the TEI route has the same one.
    let (_, info) = srv.get("/info");
    assert_eq!(info["max_rerank_documents"], 1000);
    let texts: Vec<&str> = vec!["x"; 1001];
    let (c, b) = srv.post("/rerank", &json!({"query": "q", "texts": texts}));
    expect_error(c, &b, 413, "too_many_inputs");
}

#[test]
fn embedder_long_inputs_many_inputs_tokenize_and_array_bodies() {
    let srv = start_capped(&["--model", MINILM, "--preload"]);
    let (_, info) = srv.get("/info");
    assert_eq!(info["max_client_batch_size"], 2048, "{info}");

    // One 2 MB input: cut by characters before tokenizing, 256 tokens kept.
    let big = "tokenization ".repeat(150_000);
    let mut got = (0, Value::Null);
    let kb = peak_growth(&srv, || got = srv.post("/v1/embeddings", &json!({"input": big})));
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["usage"]["prompt_tokens"], 256);
    within_budget("2 MB embedding input", kb);

    // One 2 MB /tokenize text: the same cut, so the answer is a few thousand tokens, not 300k.
    let kb = peak_growth(&srv, || got = srv.post("/tokenize", &json!({"inputs": big})));
    assert_eq!(got.0, 200, "{}", got.1);
    let n = got.1[0].as_array().map_or(0, Vec::len);
    assert!(n > 256 && n <= 16 * 256 + 2, "{n} tokens in the /tokenize answer");
    within_budget("2 MB /tokenize text", kb);

    // 300,000 one-character inputs in one body: refused on the count before any work.
    let many: Vec<&str> = vec!["a"; 300_000];
    let kb = peak_growth(&srv, || got = srv.post("/v1/embeddings", &json!({"input": many})));
    expect_error(got.0, &got.1, 413, "too_many_inputs");
    within_budget("300k inputs", kb);
    let (c, b) = srv.post("/tokenize", &json!({"inputs": vec!["a"; 2049]}));
    expect_error(c, &b, 413, "too_many_inputs");

    // 2,048 one-character inputs (the cap) are fine, and the answer is f32 text, not f64.
    let ok: Vec<String> = (0..2048).map(|i| char::from(b'a' + (i % 26) as u8).to_string()).collect();
    let resp = ureq::post(&srv.url("/v1/embeddings")).send_json(json!({"input": ok})).expect("embed");
    let text = resp.into_string().expect("body");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2048));
    let per_vector = text.len() / 2048;
    assert!(per_vector < 6000, "{per_vector} bytes per 384-dim vector");
    // Every number reads back as the f32 it was printed from, in at most 9 significant digits.
    for x in v["data"][0]["embedding"].as_array().expect("vector") {
        let s = x.to_string();
        let digits = s.trim_start_matches('-').replace(['.', '-'], "");
        let digits = digits.split(['e', 'E']).next().unwrap_or("").trim_start_matches('0');
        assert!(digits.len() <= 9, "{s} is not a shortest f32");
    }

    // A JSON array body is refused, not mapped field by field.
    let (c, b) = srv.post_raw("/v1/embeddings", r#"[["hello"], "m"]"#);
    expect_error(c, &b, 400, "malformed_request");
    assert!(b["error"]["message"].as_str().unwrap_or("").contains("JSON object"), "{b}");
    let (c, b) = srv.post_raw("/rerank", r#"["q", ["a", "b"]]"#);
    expect_error(c, &b, 400, "malformed_request");
}

#[test]
fn long_instruction_times_many_inputs_and_reranker_query() {
    let emb = tiny_dir().join(embedrank::synth::tiny::QWEN3_EMBED);
    let rr = tiny_dir().join(embedrank::synth::tiny::QWEN3_RERANKER);
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config(
        tmp.path(),
        &format!(
            "max_queue_tokens = 4000000\n[[models]]\nid = \"emb\"\nsource = \"{}\"\nmax_length = 512\n\
             [[models]]\nid = \"rr\"\nsource = \"{}\"\nmax_length = 512\n",
            emb.display(),
            rr.display()
        ),
    );
    let srv = start_capped(&["--config", &cfg, "--preload"]);

    // A 1 MB instruction x 2,048 inputs: refused as leaving no room for the input (422), without
    // 2,048 copies of it.
    let instr = "classify ".repeat(110_000);
    let inputs: Vec<&str> = vec!["x"; 2048];
    let mut got = (0, Value::Null);
    let body = json!({"model": "emb", "input": inputs, "instruction": instr});
    let kb = peak_growth(&srv, || got = srv.post("/v1/embeddings", &body));
    expect_error(got.0, &got.1, 422, "prompt_too_long");
    within_budget("1 MB instruction x 2048 inputs", kb);

    // An instruction that fits but fills most of the window: every input still counts.
    let instr = "classify ".repeat(200);
    let body = json!({"model": "emb", "input": ["apple", "orange"], "instruction": instr});
    let (c, b) = srv.post("/v1/embeddings", &body);
    if c == 200 {
        let v = openai_vectors(&b);
        assert!(max_abs_diff(&v[..1], &v[1..]) > 0.0, "different inputs, different vectors");
    } else {
        expect_error(c, &b, 422, "prompt_too_long");
    }

    // A Qwen3-Reranker query that leaves no room for documents: 422, not identical scores.
    let body = json!({"model": "rr", "query": "relevance ".repeat(1000), "documents": ["a", "b"]});
    let (c, b) = srv.post("/v1/rerank", &body);
    expect_error(c, &b, 422, "prompt_too_long");
    // A 1 MB query x 1,000 empty documents.
    let body = long_query_empty_docs(1_000_000, 1000).replacen('{', "{\"model\":\"rr\",", 1);
    let kb = peak_growth(&srv, || got = srv.post_raw("/v1/rerank", &body));
    expect_error(got.0, &got.1, 422, "prompt_too_long");
    within_budget("Qwen3 reranker: 1 MB query x 1000 documents", kb);
}

#[test]
fn overload_is_refused_before_tokenizing() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A queue of 20,000 estimated tokens and one-row passes, so a full queue stays full a while.
    let cfg = config(
        tmp.path(),
        &format!("max_queue_tokens = 20000\nmax_batch_tokens = 32\n[[models]]\nid = \"{MINILM}\"\n"),
    );
    let srv = start_capped(&["--config", &cfg, "--preload"]);
    let base = srv.base.clone();
    // Punctuation is one token per byte, so estimates (bytes) are the real counts: 76 inputs of
    // 256 tokens hold 19,456 of the 20,000.
    let full = |n: usize| -> Vec<String> { (0..n).map(|_| "!".repeat(254)).collect() };
    let first_input = full(76);
    let first = std::thread::spawn(move || {
        answer(ureq::post(&format!("{base}/v1/embeddings")).send_json(json!({"input": first_input}))).0
    });
    srv.wait_for("first request admitted", || srv.metric("embedrank_queue_depth{model=") >= 1.0);
    let tokenized = srv.metric("embedrank_tokenization_duration_seconds_count");
    // 20 more inputs (5,120 tokens) do not fit behind it.
    let resp = ureq::post(&srv.url("/v1/embeddings")).send_json(json!({"input": full(20)}));
    match resp {
        Err(ureq::Error::Status(429, r)) => {
            let retry = r.header("Retry-After").map(str::to_string);
            let body: Value = r.into_json().expect("json");
            assert_eq!(body["error"]["code"], "queue_full", "{body}");
            assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)), "Retry-After");
        }
        other => {
            // Only possible when the first request was already answered.
            let done = srv.metric("embedrank_queue_depth{model=") == 0.0;
            assert!(done, "expected 429, got {:?}", other.map(|r| r.status()));
        }
    }
    // The refused request was never tokenized (the first may or may not have been yet).
    assert!(srv.metric("embedrank_tokenization_duration_seconds_count") <= tokenized + 1.0);
    assert_eq!(first.join().expect("join"), 200);
    // A request larger than the whole queue runs alone rather than never.
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": full(80)}));
    assert_eq!(c, 200, "{b}");
}

/// Admitted work is held under what the model computes in a quarter of the request timeout, once
/// its rate is measured: a request that would wait past the timeout is a 429 up front, not a 504.
#[test]
fn queued_work_is_bounded_by_the_measured_compute_rate() {
    let tmp = tempfile::tempdir().expect("tmp");
    // One-row passes, so the first request stays queued a while; 8 s timeout: 2 s of queued work.
    let cfg = config(tmp.path(), &format!("max_batch_tokens = 32\n[[models]]\nid = \"{MINILM}\"\n"));
    let srv = start_capped(&["--config", &cfg, "--preload", "--request-timeout", "8s"]);
    let (c, info) = srv.get("/info");
    assert_eq!(c, 200);
    assert_eq!(info["max_queue_seconds"], 2.0, "{info}");
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": ["warm up the rate", "!".repeat(200)]}));
    assert_eq!(c, 200, "{b}");
    let base = srv.base.clone();
    let first = std::thread::spawn(move || {
        let input: Vec<String> = (0..20).map(|_| "!".repeat(254)).collect();
        answer(ureq::post(&format!("{base}/v1/embeddings")).send_json(json!({"input": input}))).0
    });
    srv.wait_for("first request admitted", || srv.metric("embedrank_queue_depth{model=") >= 1.0);
    // 2,048 inputs of 256 tokens: 524,288 tokens, half the token cap (so only the time bound can
    // refuse it), and more than any CPU computes in 2 s.
    let input: Vec<String> = (0..2048).map(|_| "!".repeat(254)).collect();
    let first_was_done = first.is_finished();
    match ureq::post(&srv.url("/v1/embeddings")).send_json(json!({"input": input})) {
        Err(ureq::Error::Status(429, r)) => {
            assert!(r.header("Retry-After").is_some(), "Retry-After");
            let body: Value = r.into_json().expect("json");
            assert_eq!(body["error"]["code"], "queue_full", "{body}");
            assert!(body["error"]["message"].as_str().unwrap_or("").contains("queued work"), "{body}");
        }
        // Only possible when the first request was answered before the second was sent.
        other => assert!(first_was_done, "expected 429, got {:?}", other.map(|r| r.status())),
    }
    let _ = first.join().expect("join");
}

/// MiniLM with its first LayerNorm's weights set to NaN: every output is NaN.
fn make_nan_embedder(dir: &Path) {
    use safetensors::tensor::TensorView;
    let src = minilm_dir();
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("mkdir");
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let bytes = std::fs::read(src.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let name =
        st.names().into_iter().find(|n| n.ends_with("embeddings.LayerNorm.weight")).expect("LayerNorm").to_string();
    let ln = st.tensor(&name).expect("tensor");
    let nan: Vec<u8> = (0..ln.shape()[0]).flat_map(|_| f32::NAN.to_le_bytes()).collect();
    let mut tensors: Vec<(String, TensorView)> = st.tensors().into_iter().filter(|(n, _)| *n != name).collect();
    tensors.push((name, TensorView::new(ln.dtype(), ln.shape().to_vec(), &nan).expect("view")));
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).expect("write weights");
}

#[test]
fn nan_outputs_are_errors_on_the_server_and_in_the_cli() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("nan-minilm");
    make_nan_embedder(&dir);
    let path = dir.to_str().expect("utf-8");
    let srv = start_capped(&["--model", path, "--preload"]);
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": ["hello", "world"]}));
    expect_error(c, &b, 500, "internal_error");
    assert!(b["error"]["message"].as_str().unwrap_or("").contains("NaN"), "{b}");
    let (c, _) = srv.post("/embed", &json!({"inputs": "hello"}));
    assert_eq!(c, 500);

    let out = Command::new(env!("CARGO_BIN_EXE_embedrank"))
        .args(["embed", "--model", path, "hello"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run embed");
    assert!(!out.status.success(), "embed exited 0 on NaN output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NaN"), "stderr: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("null"), "no vector printed");
}
