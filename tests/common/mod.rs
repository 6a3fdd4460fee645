//! Shared test helpers: the repo's own hub cache (made by scripts/fetch-test-models.sh).
#![allow(dead_code)]

use std::path::PathBuf;

pub mod eval_data;

use embedrank::engine::{Engine, EngineOptions};
use embedrank::source::{self, CacheRoots, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn test_hub() -> PathBuf {
    let hub =
        std::env::var_os("EMBEDRANK_TEST_HUB").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".cache/hub"));
    assert!(
        hub.join("models--sentence-transformers--all-MiniLM-L6-v2/refs/main").exists(),
        "test model missing: run scripts/fetch-test-models.sh first (looked in {})",
        hub.display()
    );
    hub
}

pub fn offline_opts() -> ResolveOptions {
    ResolveOptions { roots: CacheRoots::new(vec![test_hub()]), offline: true }
}

pub fn spec(model: &str) -> ModelSpec {
    let r = source::resolve(model, &offline_opts()).expect("resolve");
    ModelSpec::load(&r, &SpecOverrides::default()).expect("spec")
}

pub fn engine(model: &str) -> Engine {
    Engine::load(spec(model), &EngineOptions::default()).expect("load")
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dimension mismatch");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

pub fn fixture(name: &str) -> serde_json::Value {
    let p = repo_root().join("tests/fixtures").join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).expect("fixture json")
}

pub fn f32_rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("num") as f32).collect())
        .collect()
}

pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|x| x.as_str().expect("string").to_string()).collect()
}

/// The tiny golden-test models, regenerated from their recipes (seed 42) on first use.
pub fn tiny_dir() -> PathBuf {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = repo_root().join(".cache/tiny");
    ONCE.call_once(|| {
        let marker = dir.join(".complete-v1");
        if marker.exists() {
            return;
        }
        let hub = test_hub();
        let qtok = repo_root().join(".cache/tokenizers/qwen3");
        assert!(qtok.join("tokenizer.json").exists(), "Qwen3 tokenizer missing: run scripts/fetch-test-models.sh");
        let minilm = source::resolve(MINILM, &offline_opts()).expect("minilm").dir;
        // Build in a private folder, then rename, so parallel test binaries never see a half-written model.
        let tmp = repo_root().join(format!(".cache/tiny.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        embedrank::synth::tiny::write_all(&tmp, &qtok, &minilm).expect("write tiny models");
        std::fs::write(tmp.join(".complete-v1"), b"").expect("marker");
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another process won the race, or an old copy is there: replace it if incomplete.
            if !marker.exists() {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir).expect("install tiny models");
            } else {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        let _ = hub;
    });
    dir
}

/// Run this test binary's other tests again on the generic tensor path — what CUDA and Metal run —
/// by turning off the CPU-only paths (packed BERT forward, packed f32 weights). Those switches are
/// read once per process, so the rerun is a child process. Returns in the child at once.
pub fn rerun_on_generic_tensor_path(this_test: &str) {
    if std::env::var_os("EMBEDRANK_CPU_FAST").is_some() {
        return; // the child (or a caller who chose a path) runs the other tests directly
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--skip", this_test, "--test-threads", "1", "--nocapture"])
        .env("EMBEDRANK_CPU_FAST", "0")
        .env("EMBEDRANK_PACKED_F32", "0")
        .output()
        .expect("rerun the test binary");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for line in text.lines().filter(|l| l.contains("cosine") || l.contains("test result") || l.contains("score")) {
        eprintln!("generic path: {line}");
    }
    assert!(out.status.success(), "the golden tests fail on the generic tensor path:\n{text}");
    assert!(text.contains("test result: ok"), "no tests ran on the generic path:\n{text}");
}
