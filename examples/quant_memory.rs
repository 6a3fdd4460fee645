//! Peak memory of a quantized model embedding one batch (the memory bar of MLX-quantized loading).
//!
//! `quant_memory make CONFIG OUT` writes a seeded random-weight bf16 checkpoint with CONFIG's shapes
//! (the same recipe as tests/full_size.rs: seed 1, std 0.02) plus the Qwen3 tokenizer.
//! `quant_memory run MODEL [--texts 32] [--tokens 256] [--max-batch-tokens N]` loads MODEL, embeds
//! TEXTS texts of exactly TOKENS tokens as one request and prints one JSON line: load and embed
//! time, resident memory after load, and peak resident memory (VmHWM) of the whole process.
//! See scripts/quant-memory-bar.sh.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use embedrank::engine::memory::{current_rss_bytes, peak_rss_bytes};
use embedrank::engine::{EmbedOptions, Engine, EngineOptions, DEFAULT_MAX_BATCH_TOKENS};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides};
use embedrank::synth::{write_checkpoint, Naming, SynthOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("make") if args.len() == 3 => make(Path::new(&args[1]), Path::new(&args[2])),
        Some("run") if args.len() >= 2 => run(&args[1], &args[2..]),
        _ => bail!("usage: quant_memory make CONFIG OUT | run MODEL [--texts N] [--tokens N] [--max-batch-tokens N]"),
    }
}

fn make(config: &Path, out: &Path) -> Result<()> {
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config)?)?;
    let t0 = Instant::now();
    write_checkpoint(out, &cfg, &SynthOptions { seed: 1, std: 0.02, dtype: DType::BF16, naming: Naming::Flat })?;
    let tok = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/tokenizers/qwen3");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), out.join(f)).with_context(|| format!("{} (run scripts/fetch-test-models.sh)", f))?;
    }
    eprintln!("wrote {} in {:.1}s", out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

fn flag(rest: &[String], name: &str, default: usize) -> Result<usize> {
    match rest.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => rest.get(i + 1).context("missing value")?.parse().with_context(|| format!("{name} wants a number")),
    }
}

fn run(model: &str, rest: &[String]) -> Result<()> {
    let texts = flag(rest, "--texts", 32)?;
    let tokens = flag(rest, "--tokens", 256)?;
    let budget = match rest.iter().any(|a| a == "--max-batch-tokens") {
        true => Some(flag(rest, "--max-batch-tokens", DEFAULT_MAX_BATCH_TOKENS)?),
        false => None,
    };
    let resolved = source::resolve(model, &ResolveOptions::from_env(&[]))?;
    // Truncation to `tokens` makes every (longer) text exactly that long.
    let spec = ModelSpec::load(&resolved, &SpecOverrides { max_length: Some(tokens), ..Default::default() })?;
    let quant = spec.quantization.as_ref().map(|q| q.describe());
    let t0 = Instant::now();
    let engine = Engine::load(spec, &EngineOptions { max_batch_tokens: budget, ..Default::default() })?;
    let load_s = t0.elapsed().as_secs_f64();
    let rss_loaded = current_rss_bytes();
    let inputs: Vec<String> = (0..texts)
        .map(|i| (0..tokens * 2).map(|j| format!("w{} ", (i * 7919 + j * 104729) % 100_000)).collect())
        .collect();
    let t1 = Instant::now();
    let out = engine.embed(&inputs, &EmbedOptions { batch_size: Some(texts), ..Default::default() })?;
    let embed_s = t1.elapsed().as_secs_f64();
    let finite = out.vectors.iter().flatten().all(|v| v.is_finite());
    let gb = |b: Option<u64>| b.map(|b| (b as f64 / 1e9 * 1000.0).round() / 1000.0);
    println!(
        "{}",
        serde_json::json!({
            "model": engine.spec.name,
            "quantization": quant,
            "texts": texts,
            "tokens_per_text": tokens,
            "tokens_embedded": out.tokens,
            "max_batch_tokens_requested": budget,
            // What the engine runs per forward pass (capped for quantized models on the CPU).
            "max_batch_tokens": engine.max_batch_tokens,
            "load_s": load_s,
            "embed_s": embed_s,
            "rss_after_load_gb": gb(rss_loaded),
            "peak_rss_gb": gb(peak_rss_bytes()),
            "outputs_finite": finite,
        })
    );
    Ok(())
}
