//! `embedrank check [MODEL...]`: load each model, run built-in probes, report load time, latency,
//! throughput and peak memory. Exit 1 if any model fails to load or a probe fails.
//!
//! Probes — embedders: output shape, unit norm (when the model normalizes), a paraphrase closer
//! than an unrelated sentence; rerankers: the relevant document ranked first.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use embedrank::engine::{memory, DeviceChoice, EmbedOptions, Engine, EngineOptions, RerankOptions};
use embedrank::source::cache::default_hub_cache;
use embedrank::source::inventory::{self, human_bytes};
use embedrank::source::wanted::{self, State};
use embedrank::source::{self, CacheRoots, ResolveOptions, ResolvedModel};
use embedrank::spec::{ModelSpec, SpecOverrides, Task};
use serde::Serialize;

use super::backends;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Models (org/name[@rev] in a cache, or folders). Default: every available model of the wanted list.
    pub models: Vec<String>,
    /// Extra hub cache folder to search (repeatable).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dirs: Vec<PathBuf>,
    /// Wanted list used when no model is named.
    #[arg(long, value_name = "FILE")]
    pub wanted: Option<PathBuf>,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Run each model on every compute path this machine has (CPU default, the generic tensor path
    /// CUDA and Metal run, --dtype int8, each quantized kernel's SIMD level, the GPU of --device) and
    /// print how far each lands from the CPU default; exit 1 if any path disagrees.
    #[arg(long)]
    pub backends: bool,
    /// First re-hash each model's cached blobs against their names (sha256 / git blob sha1); a
    /// mismatch fails the model without loading it.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Serialize)]
struct Probe {
    name: &'static str,
    passed: bool,
    detail: String,
}

#[derive(Serialize, Default)]
struct ModelCheck {
    model: String,
    dir: Option<PathBuf>,
    task: Option<&'static str>,
    architecture: Option<String>,
    passed: bool,
    error: Option<String>,
    probes: Vec<Probe>,
    load_ms: Option<f64>,
    /// Median of single-input calls.
    latency_ms: Option<f64>,
    /// Inputs (texts or documents) per second in one batched call.
    throughput_per_s: Option<f64>,
    tokens_per_s: Option<f64>,
    /// Peak resident memory while this model was loaded and probed (VmHWM; Linux only).
    peak_rss_bytes: Option<u64>,
    /// Rotary settings as read (Qwen3), e.g. `rope yarn ×4 from 32768, theta 1000000`.
    rope: Option<String>,
    /// config.json keys neither implemented nor known to be inert: check they do not change the math.
    unknown_config_keys: Vec<String>,
}

const PARAPHRASE: [&str; 3] = [
    "A man is playing a guitar on stage.",
    "A musician performs a song with his guitar in front of an audience.",
    "The central bank raised interest rates by half a percentage point.",
];
const QUERY: &str = "What is the capital of France?";
const DOCS: [&str; 4] = [
    "Paris is the capital and most populous city of France.",
    "The Great Wall of China stretches for thousands of kilometres.",
    "Bananas are a good source of potassium and vitamin B6.",
    "France's capital city, Paris, lies on the Seine.",
];
/// Indexes of DOCS that answer QUERY.
const RELEVANT: [usize; 2] = [0, 3];
/// Raw-score (logit) margin the relevant documents must keep over the others: a trained reranker
/// separates them by several logits, random weights by hundredths (and may order them either way).
const RANK_MARGIN: f32 = 1.0;
const LATENCY_RUNS: usize = 5;
const THROUGHPUT_INPUTS: usize = 64;

pub fn run(a: CheckArgs) -> Result<ExitCode> {
    let device = DeviceChoice::parse(&a.device)?;
    let targets = targets(&a)?;
    if targets.is_empty() {
        eprintln!(
            "error: no model to check: none of the wanted list is available (name models, or `embedrank pull` one)"
        );
        return Ok(ExitCode::from(1));
    }
    let tty = std::io::stderr().is_terminal() && !a.json;
    if a.backends {
        return run_backends(&a, targets, tty);
    }
    let mut results = Vec::new();
    for t in targets {
        if tty {
            eprintln!("checking {} …", t.0);
        }
        results.push(check_one(&t.0, t.1, device, a.verify));
    }
    let passed = results.iter().all(|r| r.passed);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "passed": passed, "models": results }))?);
    } else {
        print!("{}", table(&results));
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run_backends(a: &CheckArgs, targets: Vec<(String, Result<ResolvedModel, String>)>, tty: bool) -> Result<ExitCode> {
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (name, resolved) in targets {
        if tty {
            eprintln!("comparing compute paths of {name} …");
        }
        let spec = resolved
            .map_err(anyhow::Error::msg)
            .and_then(|r| ModelSpec::load(&r, &SpecOverrides::default()).map_err(anyhow::Error::from));
        match spec {
            Ok(spec) => {
                let src = backends::ModelSource { reference: &name, cache_dirs: &a.cache_dirs };
                reports.push(backends::compare(&src, &spec, &a.device));
            }
            Err(e) => failed.push((name, e.to_string())),
        }
    }
    let passed = failed.is_empty() && reports.iter().all(|r| r.passed);
    if a.json {
        let errors: Vec<_> = failed.iter().map(|(m, e)| serde_json::json!({"model": m, "error": e})).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"passed": passed, "models": reports, "errors": errors}))?
        );
    } else {
        print!("{}", backends::table(&reports));
        for (m, e) in &failed {
            println!("{m}: FAIL: {e}");
        }
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// (name, how to find it): named models resolve from the cache only (a check never downloads);
/// the default is every available entry of the wanted list.
fn targets(a: &CheckArgs) -> Result<Vec<(String, Result<ResolvedModel, String>)>> {
    let opts = ResolveOptions { roots: CacheRoots::from_env(&a.cache_dirs), offline: true };
    if !a.models.is_empty() {
        return Ok(a
            .models
            .iter()
            .map(|m| (m.clone(), source::resolve(m, &opts).map_err(|e| e.to_string())))
            .collect());
    }
    let list = wanted::load(a.wanted.as_deref())?;
    let inv = inventory::scan(&opts.roots);
    let statuses = wanted::evaluate(&list, &inv, default_hub_cache().as_deref());
    Ok(statuses
        .into_iter()
        .filter(|w| w.state == State::Available)
        .filter_map(|w| {
            let dir = w.path?;
            let repo_id = source::ModelRef::parse(&w.entry.repo).ok()?.repo_id;
            let r = ResolvedModel { dir, repo_id: Some(repo_id.clone()), commit: w.commit, name: repo_id };
            Some((w.entry.repo, Ok(r)))
        })
        .collect())
}

fn check_one(name: &str, resolved: Result<ResolvedModel, String>, device: DeviceChoice, verify: bool) -> ModelCheck {
    let mut c = ModelCheck { model: name.to_string(), ..Default::default() };
    memory::reset_peak_rss();
    let outcome = (|| -> std::result::Result<(), String> {
        let r = resolved?;
        c.dir = Some(r.dir.clone());
        if verify {
            let v = source::verify::verify_snapshot(r.repo_id.as_deref().unwrap_or(&r.name), &r.dir);
            let detail = match (v.mismatches.first(), v.errors.first()) {
                (Some(m), _) => format!(
                    "{} corrupt file(s), e.g. {}: {} is {}, the blob's name says {}",
                    v.mismatches.len(),
                    m.files.join(", "),
                    m.algorithm.as_str(),
                    m.actual,
                    m.expected
                ),
                (None, Some(e)) => format!("unreadable: {e}"),
                (None, None) => format!("{} files ({}) re-hashed, all match", v.checked, human_bytes(v.checked_bytes)),
            };
            c.probes.push(Probe { name: "blob integrity", passed: v.ok(), detail: detail.clone() });
            if !v.ok() {
                return Err(format!("cached files do not match their hashes; repair: embedrank pull --verify {name}"));
            }
        }
        let spec = ModelSpec::load(&r, &SpecOverrides::default()).map_err(|e| e.to_string())?;
        c.architecture = spec.architectures.first().cloned().or_else(|| Some(spec.arch.name().to_string()));
        c.unknown_config_keys = spec.unknown_config_keys.clone();
        if let embedrank::spec::Arch::Qwen3(q) = &spec.arch {
            c.rope = Some(q.rope.describe());
        }
        c.task = Some(match spec.task {
            Task::Embed => "embedding",
            Task::Rerank => "reranker",
        });
        let engine = Engine::load(spec, &EngineOptions { device, ..Default::default() }).map_err(|e| e.to_string())?;
        c.load_ms = Some(ms(engine.load_time));
        match engine.spec.task {
            Task::Embed => probe_embedder(&engine, &mut c),
            Task::Rerank => probe_reranker(&engine, &mut c),
        }
        .map_err(|e| e.to_string())
    })();
    c.peak_rss_bytes = memory::peak_rss_bytes();
    if let Err(e) = outcome {
        c.error = Some(e);
    }
    c.passed = c.error.is_none() && !c.probes.is_empty() && c.probes.iter().all(|p| p.passed);
    c
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn probe_embedder(engine: &Engine, c: &mut ModelCheck) -> embedrank::Result<()> {
    let opts = EmbedOptions::default();
    let texts = strings(&PARAPHRASE);
    let e = engine.embed(&texts, &opts)?;
    let dim = engine.spec.embedding_dim();
    let shape_ok = e.vectors.len() == texts.len() && e.vectors.iter().all(|v| v.len() == dim);
    let finite = e.vectors.iter().flatten().all(|x| x.is_finite());
    c.probes.push(Probe {
        name: "shape",
        passed: shape_ok && finite,
        detail: format!(
            "{} vectors of {} (expected {} of {dim}){}",
            e.vectors.len(),
            e.vectors.first().map_or(0, Vec::len),
            texts.len(),
            if finite { "" } else { "; non-finite values" }
        ),
    });
    if !shape_ok {
        return Ok(());
    }
    let norms: Vec<f64> =
        e.vectors.iter().map(|v| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()).collect();
    if engine.spec.normalize {
        let worst = norms.iter().map(|n| (n - 1.0).abs()).fold(0.0, f64::max);
        c.probes.push(Probe {
            name: "unit_norm",
            passed: worst < 1e-3,
            detail: format!("max |norm - 1| = {worst:.2e}"),
        });
    } else {
        c.probes.push(Probe {
            name: "unit_norm",
            passed: norms.iter().all(|n| *n > 0.0),
            detail: "the model does not normalize; norms are positive".into(),
        });
    }
    let near = embedrank::engine::pool::cosine(&e.vectors[0], &e.vectors[1]);
    let far = embedrank::engine::pool::cosine(&e.vectors[0], &e.vectors[2]);
    c.probes.push(Probe {
        name: "paraphrase",
        passed: near > far,
        detail: format!("cos(paraphrase) {near:.4} vs cos(unrelated) {far:.4}"),
    });
    // Latency: one short input, after a warm-up call.
    let one = vec![QUERY.to_string()];
    engine.embed(&one, &opts)?;
    let mut lat = Vec::new();
    for _ in 0..LATENCY_RUNS {
        let t = Instant::now();
        engine.embed(&one, &opts)?;
        lat.push(ms(t.elapsed()));
    }
    c.latency_ms = Some(median(lat));
    let batch: Vec<String> =
        PARAPHRASE.iter().chain(DOCS.iter()).cycle().take(THROUGHPUT_INPUTS).map(|s| s.to_string()).collect();
    let t = Instant::now();
    let out = engine.embed(&batch, &opts)?;
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    c.throughput_per_s = Some(batch.len() as f64 / secs);
    c.tokens_per_s = Some(out.tokens as f64 / secs);
    Ok(())
}

fn probe_reranker(engine: &Engine, c: &mut ModelCheck) -> embedrank::Result<()> {
    let opts = RerankOptions::default();
    let docs = strings(&DOCS);
    let r = engine.rerank(QUERY, &docs, &opts)?;
    let finite = r.iter().all(|x| x.relevance_score.is_finite());
    c.probes.push(Probe {
        name: "shape",
        passed: r.len() == docs.len() && finite,
        detail: format!("{} scores for {} documents", r.len(), docs.len()),
    });
    let raw = engine.rerank(QUERY, &docs, &RerankOptions { raw_scores: true, ..opts.clone() })?;
    let score = |i: usize| raw.iter().find(|x| x.index == i).map_or(f32::NAN, |x| x.relevance_score);
    let worst_relevant = RELEVANT.iter().map(|&i| score(i)).fold(f32::INFINITY, f32::min);
    let best_other = (0..docs.len()).filter(|i| !RELEVANT.contains(i)).map(score).fold(f32::NEG_INFINITY, f32::max);
    let margin = worst_relevant - best_other;
    c.probes.push(Probe {
        name: "ranking",
        passed: margin >= RANK_MARGIN,
        detail: format!(
            "order {:?}; relevant documents {RELEVANT:?} lead the others by {margin:.3} (raw score, want >= {RANK_MARGIN}); scores {:?}",
            r.iter().map(|x| x.index).collect::<Vec<_>>(),
            r.iter().map(|x| (x.relevance_score * 1e4).round() / 1e4).collect::<Vec<_>>()
        ),
    });
    let one = vec![docs[0].clone()];
    engine.rerank(QUERY, &one, &opts)?;
    let mut lat = Vec::new();
    for _ in 0..LATENCY_RUNS {
        let t = Instant::now();
        engine.rerank(QUERY, &one, &opts)?;
        lat.push(ms(t.elapsed()));
    }
    c.latency_ms = Some(median(lat));
    let batch: Vec<String> =
        DOCS.iter().chain(PARAPHRASE.iter()).cycle().take(THROUGHPUT_INPUTS / 2).map(|s| s.to_string()).collect();
    let t = Instant::now();
    engine.rerank(QUERY, &batch, &opts)?;
    c.throughput_per_s = Some(batch.len() as f64 / t.elapsed().as_secs_f64().max(1e-9));
    Ok(())
}

fn table(results: &[ModelCheck]) -> String {
    let head = ["MODEL", "TASK", "LOAD", "LATENCY", "THROUGHPUT", "PEAK MEM", "RESULT"];
    let rows: Vec<[String; 7]> = results
        .iter()
        .map(|r| {
            let unit = if r.task == Some("reranker") { "docs/s" } else { "texts/s" };
            [
                r.model.clone(),
                r.task.unwrap_or("-").to_string(),
                r.load_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
                r.latency_ms.map_or("-".into(), |v| format!("{v:.1} ms")),
                r.throughput_per_s.map_or("-".into(), |v| format!("{v:.1} {unit}")),
                r.peak_rss_bytes.map_or("n/a".into(), human_bytes),
                if r.passed { "PASS".into() } else { "FAIL".into() },
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let fmt = |cells: Vec<&str>| {
        let line: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        line.join("  ").trim_end().to_string() + "\n"
    };
    let mut o = fmt(head.to_vec());
    for r in &rows {
        o.push_str(&fmt(r.iter().map(String::as_str).collect()));
    }
    for r in results {
        o.push_str(&format!("\n{}:\n", r.model));
        if let Some(e) = &r.error {
            o.push_str(&format!("  error: {e}\n"));
        }
        if let Some(rope) = &r.rope {
            o.push_str(&format!("  {rope}\n"));
        }
        if !r.unknown_config_keys.is_empty() {
            o.push_str(&format!(
                "  note config.json keys not known to this version (check they do not change the math): {}\n",
                r.unknown_config_keys.join(", ")
            ));
        }
        for p in &r.probes {
            o.push_str(&format!("  {} {:<10} {}\n", if p.passed { "ok  " } else { "FAIL" }, p.name, p.detail));
        }
        if let Some(t) = r.tokens_per_s {
            o.push_str(&format!("  {t:.0} tokens/s in one batch of {THROUGHPUT_INPUTS}\n"));
        }
    }
    o
}
