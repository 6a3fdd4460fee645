//! Full-size Qwen3-Embedding 0.6B/4B/8B and Qwen3-Reranker-4B shapes: real configs
//! (tests/fixtures/configs), seeded random weights written by `embedrank::synth`, loaded and run
//! through the engine: output shape and unit norm (embedders), finite probabilities (reranker).
//!
//! Slow and big (up to 16 GB on disk for 8B), so ignored by default. Run one or all:
//!   EMBEDRANK_FULL_SIZE=0.6B cargo test --release --test full_size -- --ignored --nocapture
//!   EMBEDRANK_FULL_SIZE=0.6B,4B,8B,reranker-4B cargo test --release --test full_size -- --ignored --nocapture
//! Checkpoints go to .cache/full/ (reused on later runs). 0.6B runs in f32; the bigger ones in bf16
//! so they fit in 24 GB of RAM.

mod common;

use std::time::Instant;

use candle_core::DType;
use common::*;
use embedrank::engine::{EmbedOptions, Engine, EngineOptions, RerankOptions};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides, Task};
use embedrank::synth::{write_checkpoint, Naming, SynthOptions};

fn make(name: &str, config_file: &str) -> std::path::PathBuf {
    let dir = repo_root().join(".cache/full").join(name);
    if !dir.join("model.safetensors").exists() {
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join("tests/fixtures/configs").join(config_file)).unwrap(),
        )
        .unwrap();
        let t0 = Instant::now();
        let naming = if name.contains("Reranker") { Naming::Prefixed } else { Naming::Flat };
        write_checkpoint(&dir, &cfg, &SynthOptions { seed: 1, std: 0.02, dtype: DType::BF16, naming }).unwrap();
        let tok = repo_root().join(".cache/tokenizers/qwen3");
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(tok.join(f), dir.join(f)).unwrap();
        }
        eprintln!("{name}: wrote random checkpoint in {:.1}s", t0.elapsed().as_secs_f64());
    }
    dir
}

fn wanted(tag: &str) -> bool {
    std::env::var("EMBEDRANK_FULL_SIZE").unwrap_or_else(|_| "0.6B".into()).split(',').any(|t| t.trim() == tag)
}

fn texts() -> Vec<String> {
    vec![
        "What is the capital of China?".into(),
        "Explain gravity".into(),
        "The capital of China is Beijing.".into(),
        "Gravity is a force that attracts two bodies towards each other. ".repeat(4),
    ]
}

fn check_embedder(tag: &str, name: &str, hidden: usize) {
    if !wanted(tag) {
        eprintln!("{name}: skipped (EMBEDRANK_FULL_SIZE does not list {tag})");
        return;
    }
    let dir = make(name, &format!("{name}.json"));
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    let spec = ModelSpec::load(&r, &SpecOverrides::default()).unwrap();
    assert_eq!(spec.task, Task::Embed);
    let dtype = if hidden <= 1024 { DType::F32 } else { DType::BF16 };
    let t0 = Instant::now();
    let e = Engine::load(spec, &EngineOptions { dtype: Some(dtype), ..Default::default() }).unwrap();
    let load = t0.elapsed();
    let q = e.spec.prompt_for(Some("query"), None, None).unwrap();
    let texts = texts();
    let opts = EmbedOptions { prompt: q, batch_size: Some(8), ..Default::default() };
    let _ = e.embed(&texts[..1], &opts).unwrap(); // warm-up
    let t1 = Instant::now();
    let out = e.embed(&texts, &opts).unwrap();
    let fwd = t1.elapsed();
    for v in &out.vectors {
        assert_eq!(v.len(), hidden);
        let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-3, "norm {n}");
        assert!(v.iter().all(|x| x.is_finite()));
    }
    let one = e.embed(&texts[..1], &opts).unwrap();
    // Left-padded in a batch vs alone: the same math, different rounding; bf16 through 36 random
    // layers drifts more than f32.
    let c = cosine(&one.vectors[0], &out.vectors[0]);
    let min = if dtype == DType::F32 { 0.999 } else { 0.99 };
    eprintln!("{name}: batched vs single cosine {c:.6}");
    assert!(c > min, "batched vs single cosine {c}");
    let t2 = Instant::now();
    let _ = e.embed(&texts[..1], &opts).unwrap();
    let single = t2.elapsed();
    eprintln!(
        "{name} ({dtype:?}): load {:.1}s; forward of {} texts / {} tokens {:.0} ms; one short query {:.0} ms",
        load.as_secs_f64(),
        texts.len(),
        out.tokens,
        fwd.as_secs_f64() * 1e3,
        single.as_secs_f64() * 1e3
    );
}

#[test]
#[ignore]
fn qwen3_embedding_0_6b_shape() {
    check_embedder("0.6B", "Qwen3-Embedding-0.6B", 1024);
}

#[test]
#[ignore]
fn qwen3_embedding_4b_shape() {
    check_embedder("4B", "Qwen3-Embedding-4B", 2560);
}

#[test]
#[ignore]
fn qwen3_embedding_8b_shape() {
    check_embedder("8B", "Qwen3-Embedding-8B", 4096);
}

#[test]
#[ignore]
fn qwen3_reranker_4b_shape() {
    if !wanted("reranker-4B") {
        eprintln!("Qwen3-Reranker-4B: skipped (EMBEDRANK_FULL_SIZE does not list reranker-4B)");
        return;
    }
    let dir = make("Qwen3-Reranker-4B", "Qwen3-Reranker-4B.json");
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    let spec = ModelSpec::load(&r, &SpecOverrides::default()).unwrap();
    assert_eq!(spec.task, Task::Rerank);
    let e = Engine::load(spec, &EngineOptions { dtype: Some(DType::BF16), ..Default::default() }).unwrap();
    let t = texts();
    let t0 = Instant::now();
    let res = e.rerank(&t[0], &t[1..], &RerankOptions::default()).unwrap();
    assert_eq!(res.len(), 3);
    assert!(res.iter().all(|r| r.relevance_score.is_finite() && (0.0..=1.0).contains(&r.relevance_score)));
    eprintln!("Qwen3-Reranker-4B (BF16): rerank 3 documents {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
}
