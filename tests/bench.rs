//! `embedrank bench`: token accounting, FLOPs, latency phase and the CLI's errors, on the real
//! all-MiniLM-L6-v2 (no timing assertions: speed is what the command reports, not what tests check).

mod common;

use std::process::Command;

use common::{engine, test_hub, MINILM};
use embedrank::bench::{self, flops, BenchOptions, Workload};
use embedrank::engine::EmbedOptions;

fn docs() -> Vec<String> {
    let mut d: Vec<String> = [
        "A short one.",
        "Sentence embeddings map text to vectors so that similar meanings land close together.",
        "Benchmarks count real tokens, not padding, so that sorting by length pays off in the numbers.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // One document over the 256-token limit: the bench must count it truncated.
    d.push("word ".repeat(400));
    d
}

fn workload() -> Workload {
    Workload { docs: docs(), queries: vec!["what is an embedding".into(), "padding".into()] }
}

fn opts() -> BenchOptions {
    BenchOptions { batch_size: 2, concurrency: 1, runs: 2, latency_requests: 3, ..Default::default() }
}

#[test]
fn counts_real_and_padded_tokens_and_flops() {
    let e = engine(MINILM);
    let w = workload();
    let r = bench::run(&e, &w, &opts(), &bench::Quiet).unwrap();
    let toks = e.tokenize_texts(&w.docs, &EmbedOptions::default()).unwrap();
    let lengths: Vec<usize> = toks.iter().map(|t| t.len()).collect();
    assert_eq!(lengths[3], 256, "the long document is truncated to the max length");
    assert_eq!(r.real_tokens, lengths.iter().sum::<usize>());
    assert_eq!(r.texts, 4);
    assert_eq!(r.task, "embed");
    // Length-sorted batches of 2: [256, 2x] and [y, 5]; padded = 2·256 + 2·(second longest).
    let mut sorted = lengths.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(r.padded_tokens, 2 * sorted[0] + 2 * sorted[2]);
    assert!(r.padding_efficiency > 0.0 && r.padding_efficiency <= 1.0);
    assert_eq!(r.flops_per_pass, flops::forward_flops(&e.spec.arch, lengths));
    assert_eq!(r.runs.len(), 2);
    for run in &r.runs {
        assert!(run.wall_s > 0.0);
        assert!((run.tokens_per_s * run.wall_s - r.real_tokens as f64).abs() < 1e-6 * r.real_tokens as f64);
    }
    let lat = r.latency.as_ref().expect("latency phase ran");
    assert_eq!(lat.n, 3);
    assert!(
        lat.min_ms <= lat.p50_ms && lat.p50_ms <= lat.p95_ms && lat.p95_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms
    );
    assert!(r.mfu.is_none(), "no MFU without a peak");
    #[cfg(target_os = "linux")]
    assert!(r.peak_rss_bytes.unwrap() >= r.rss_after_load_bytes.unwrap());
}

#[test]
fn concurrency_splits_work_without_losing_tokens() {
    let e = engine(MINILM);
    let w = workload();
    let one = bench::run(&e, &w, &BenchOptions { latency_requests: 0, runs: 1, ..opts() }, &bench::Quiet).unwrap();
    let two = bench::run(
        &e,
        &w,
        &BenchOptions { concurrency: 2, latency_requests: 4, runs: 1, peak_tflops: Some(1.0), ..opts() },
        &bench::Quiet,
    )
    .unwrap();
    assert_eq!(one.real_tokens, two.real_tokens);
    assert_eq!(two.requests, 2);
    assert!(one.latency.is_none());
    assert_eq!(two.latency.as_ref().unwrap().n, 4);
    let mfu = two.mfu.unwrap();
    assert!((mfu - two.achieved_tflops).abs() < 1e-12, "MFU is achieved over the given peak");
}

#[test]
fn rejects_empty_and_zero_settings() {
    let e = engine(MINILM);
    let empty = Workload { docs: vec![], queries: vec!["q".into()] };
    assert!(bench::run(&e, &empty, &opts(), &bench::Quiet).is_err());
    let w = workload();
    assert!(bench::run(&e, &w, &BenchOptions { batch_size: 0, ..opts() }, &bench::Quiet).is_err());
    let no_queries = Workload { docs: docs(), queries: vec![] };
    assert!(bench::run(&e, &no_queries, &opts(), &bench::Quiet).is_err());
}

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.env("HF_HUB_OFFLINE", "1").arg("bench").arg("--model").arg(MINILM).arg("--cache-dir").arg(test_hub());
    c
}

#[test]
fn cli_json_on_a_beir_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(
        &corpus,
        "{\"_id\":\"1\",\"title\":\"Title\",\"text\":\"Body text one.\"}\n{\"_id\":\"2\",\"title\":\"\",\"text\":\"Two.\"}\n\
         {\"_id\":\"3\",\"text\":\"Three is cut by --limit.\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("queries.jsonl"), "{\"_id\":\"q1\",\"text\":\"what is one\"}\n").unwrap();
    let out = cli()
        .arg("--input")
        .arg(&corpus)
        .args(["--limit", "2", "--runs", "1", "--latency-requests", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(v["texts"], 2);
    // "Title Body text one." = [CLS] title body text one . [SEP] = 7; "Two." = [CLS] two . [SEP] = 4.
    assert_eq!(v["real_tokens"], 11);
    assert_eq!(v["latency"]["n"], 2);
    assert_eq!(v["task"], "embed");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn cli_bad_arguments_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let out = cli().arg("--input").arg(&missing).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("nope.jsonl") && err.trim().lines().count() == 1, "{err}");

    let f = dir.path().join("t.txt");
    std::fs::write(&f, "hello\n").unwrap();
    let out = cli().arg("--input").arg(&f).args(["--limit", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit"));
    let out = cli().arg("--input").arg(&f).args(["--peak-tflops", "-3"]).output().unwrap();
    assert!(!out.status.success());
}
