//! The `embedrank embed` / `rerank` command lines, end to end, and their errors: one line naming
//! the file and the problem, non-zero exit, never a panic.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.env("HF_HUB_OFFLINE", "1").env_remove("HF_HUB_CACHE").env("HF_HOME", repo_root().join(".cache/none"));
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run embedrank")
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child =
        bin().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn hub() -> String {
    test_hub().display().to_string()
}

/// A failed run: exit code 1, exactly one line on stderr starting with "error:", no panic.
fn assert_one_line_error(o: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    err
}

fn jsonl(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn embeds_positional_texts_as_jsonl_matching_golden() {
    let fx = fixture("minilm_golden.json");
    let texts = strings(&fx["texts"]);
    let want = f32_rows(&fx["embeddings"]);
    let o = run(&["embed", "--cache-dir", &hub(), "--model", MINILM, &texts[0], &texts[2]]);
    let rows = jsonl(&o);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["index"], 1);
    let v: Vec<f32> = rows[1]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(cosine(&v, &want[2]) > 0.9999);
}

#[test]
fn reads_input_file_and_stdin_and_writes_json_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"first\"}\nsecond plain line\n").unwrap();
    let o =
        run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--input", input.to_str().unwrap(), "--dimensions", "128"]);
    let rows = jsonl(&o);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["embedding"].as_array().unwrap().len(), 128);

    let o = run_stdin(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--input", "-", "--format", "json"], "a\nb\nc\n");
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["data"].as_array().unwrap().len(), 3);
    assert!(doc["usage"]["prompt_tokens"].as_u64().unwrap() >= 9);

    let npy = dir.path().join("out.npy");
    let o =
        run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--format", "npy", "-o", npy.to_str().unwrap(), "x", "y"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'shape': (2, 384)"), "{header}");
    assert_eq!((10 + hlen) % 64, 0);
    assert_eq!(bytes.len(), 10 + hlen + 2 * 384 * 4);

    let o = run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--format", "npy", "x"]);
    assert_one_line_error(&o, &["--output"]);
}

#[test]
fn rerank_cli_sorts_and_returns_documents() {
    let dir = tiny_dir().join(embedrank::synth::tiny::QWEN3_RERANKER);
    let o = run(&[
        "rerank",
        "-m",
        dir.to_str().unwrap(),
        "--query",
        "What is the capital of France?",
        "--top-n",
        "2",
        "--return-documents",
        "Berlin is in Germany.",
        "Paris is the capital of France.",
        "Bread needs yeast.",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert!(r[0]["relevance_score"].as_f64().unwrap() >= r[1]["relevance_score"].as_f64().unwrap());
    assert!(r[0]["document"].is_string());

    let o = run(&["rerank", "--cache-dir", &hub(), "-m", MINILM, "--query", "q", "doc"]);
    assert_one_line_error(&o, &["is an embedding model, not a reranker"]);
    let o = run(&["embed", "-m", dir.to_str().unwrap(), "text"]);
    assert_one_line_error(&o, &["is a reranker, not an embedding model"]);
}

fn copy_model(to: &Path) {
    let src = source_dir();
    std::fs::create_dir_all(to.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), to.join(f)).unwrap();
    }
}

fn source_dir() -> std::path::PathBuf {
    embedrank::source::resolve(MINILM, &offline_opts()).unwrap().dir
}

#[test]
fn missing_model_lists_where_it_looked() {
    let o = run(&["embed", "--cache-dir", "/nonexistent/cache", "-m", "nobody/no-such-model", "x"]);
    assert_one_line_error(
        &o,
        &["nobody/no-such-model", "/nonexistent/cache/models--nobody--no-such-model", "HF_HUB_OFFLINE"],
    );
    let o = run(&["embed", "-m", "not a/valid//id", "x"]);
    assert_one_line_error(&o, &["not a/valid//id"]);
}

#[test]
fn missing_tokenizer_is_named() {
    let d = tempfile::tempdir().unwrap();
    copy_model(d.path());
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["tokenizer.json", "missing"]);
}

#[test]
fn unsupported_architecture_is_named() {
    let d = tempfile::tempdir().unwrap();
    copy_model(d.path());
    std::fs::write(d.path().join("config.json"), r#"{"architectures": ["T5EncoderModel"], "model_type": "t5"}"#)
        .unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["config.json", "unsupported architecture `T5EncoderModel`"]);
}

#[test]
fn malformed_config_is_named() {
    let d = tempfile::tempdir().unwrap();
    copy_model(d.path());
    std::fs::write(d.path().join("config.json"), "{\"model_type\": \"bert\", \"hidden_size\": ").unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["config.json", "not valid JSON"]);
    // Valid JSON, missing a required field.
    std::fs::write(d.path().join("config.json"), r#"{"model_type": "bert", "hidden_size": 384}"#).unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["config.json", "missing field"]);
    // Inconsistent values.
    let cfg = std::fs::read_to_string(source_dir().join("config.json"))
        .unwrap()
        .replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7");
    std::fs::write(d.path().join("config.json"), cfg).unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["config.json", "not a multiple of num_attention_heads 7"]);
}

/// `embedrank.json` (written by `convert`) decides the task ahead of the files; a bad one is named.
#[test]
fn recorded_task_is_followed_and_a_bad_record_is_named() {
    let d = tempfile::tempdir().unwrap();
    copy_model(d.path());
    let m = d.path().to_str().unwrap();
    std::fs::write(d.path().join("embedrank.json"), r#"{"task": "rerank"}"#).unwrap();
    // MiniLM is a BertModel without a classifier: taken as a reranker it is refused, not run.
    let o = run(&["embed", "-m", m, "x"]);
    assert_one_line_error(&o, &["no classification head"]);
    std::fs::write(d.path().join("embedrank.json"), r#"{"task": "classify"}"#).unwrap();
    let o = run(&["embed", "-m", m, "x"]);
    assert_one_line_error(&o, &["embedrank.json", "task must be"]);
    std::fs::write(d.path().join("embedrank.json"), "{").unwrap();
    let o = run(&["embed", "-m", m, "x"]);
    assert_one_line_error(&o, &["embedrank.json", "not valid JSON"]);
    std::fs::write(d.path().join("embedrank.json"), r#"{"task": "embed"}"#).unwrap();
    assert!(run(&["embed", "-m", m, "x"]).status.success());
}

#[test]
fn truncated_safetensors_is_named() {
    let d = tempfile::tempdir().unwrap();
    copy_model(d.path());
    let w = d.path().join("model.safetensors");
    let len = std::fs::metadata(&w).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&w).unwrap();
    f.set_len(len / 2).unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["model.safetensors", "truncated"]);
    // Garbage instead of a header.
    std::fs::write(&w, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["model.safetensors", "header"]);
    // A weight with the wrong shape.
    let missing = d.path().join("model.safetensors");
    std::fs::remove_file(&missing).unwrap();
    let o = run(&["embed", "-m", d.path().to_str().unwrap(), "x"]);
    assert_one_line_error(&o, &["model.safetensors", "missing"]);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let o = run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--dimensions", "9999", "x"]);
    assert_one_line_error(&o, &["dimensions must be between 32 and 384"]);
    let o = run(&["embed", "--cache-dir", &hub(), "-m", MINILM]);
    assert_one_line_error(&o, &["no input"]);
    let o = run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--prompt-name", "nope", "x"]);
    assert_one_line_error(&o, &["no prompt named `nope`"]);
    let o = run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--no-truncate", &"word ".repeat(300)]);
    assert_one_line_error(&o, &["more than the model's maximum of 256"]);
    let o = run(&["embed", "--cache-dir", &hub(), "-m", MINILM, "--device", "tpu", "x"]);
    assert_one_line_error(&o, &["bad device `tpu`"]);
    // clap's own usage errors exit 2.
    let o = run(&["embed", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
}
