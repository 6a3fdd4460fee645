//! `embedrank check --backends`: the same inputs through every compute path this machine can take —
//! the CPU default, the generic tensor path that CUDA and Metal run, `--dtype int8`, each quantized
//! kernel's SIMD level, CUDA when built in — and how far each lands from the CPU default.
//!
//! The path switches are process-wide (read once), so each path runs as a child `embedrank embed` /
//! `embedrank rerank` with its switches set; the answer is compared here.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use embedrank::spec::{ModelSpec, Task};
use embedrank::weights::qkernel::KernelPath;
use serde::Serialize;
use serde_json::Value;

/// One compute path: how to ask for it, and how close it must come to the reference.
struct Backend {
    name: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Minimum cosine to the reference (embedders).
    min_cosine: f64,
    /// Largest raw-score difference to the reference (rerankers).
    max_score_diff: f64,
}

#[derive(Serialize)]
pub struct BackendResult {
    backend: String,
    ran: bool,
    error: Option<String>,
    min_cosine: Option<f64>,
    mean_cosine: Option<f64>,
    max_score_diff: Option<f64>,
    same_ranking: Option<bool>,
    passed: bool,
}

#[derive(Serialize)]
pub struct BackendReport {
    pub model: String,
    pub passed: bool,
    pub results: Vec<BackendResult>,
}

const TEXTS: [&str; 6] = [
    "A man is playing a guitar on stage.",
    "A musician performs a song with his guitar in front of an audience.",
    "The central bank raised interest rates by half a percentage point.",
    "Ünïcödé façade — 日本語 text 🚀",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and \
     is responsible for the movement of planets around the sun, the tides of the oceans and the shape of galaxies.",
    "a",
];
const QUERY: &str = "What is the capital of France?";
const DOCS: [&str; 4] = [
    "Paris is the capital and most populous city of France.",
    "The Great Wall of China stretches for thousands of kilometres.",
    "Bananas are a good source of potassium and vitamin B6.",
    "France's capital city, Paris, lies on the Seine.",
];

fn backends(spec: &ModelSpec, device: &str) -> Vec<Backend> {
    let b = |name: &str, args: &[&str], env: &[(&'static str, &str)], min_cosine: f64, max_score_diff: f64| Backend {
        name: name.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        min_cosine,
        max_score_diff,
    };
    // The reference is the CPU path with float activations: for MLX-quantized models that is the
    // arithmetic MLX itself runs; the integer-activation default is held to the int8 bar.
    let quantized = spec.quantization.is_some();
    let reference_env: &[(&'static str, &str)] = if quantized { &[("EMBEDRANK_QKERNEL_INT", "0")] } else { &[] };
    let mut v = vec![
        b("cpu (reference)", &[], reference_env, 1.0, 0.0),
        b(
            "cpu generic tensor path",
            &[],
            &[("EMBEDRANK_CPU_FAST", "0"), ("EMBEDRANK_PACKED_F32", "0"), ("EMBEDRANK_QKERNEL_INT", "0")],
            0.9999,
            1e-3,
        ),
    ];
    if !quantized {
        // Integer activations and weights: the 0.999 bar of `--dtype int8`.
        v.push(b("cpu --dtype int8", &["--dtype", "int8"], &[], 0.999, 0.05));
    } else {
        for p in KernelPath::ALL.into_iter().filter(|p| p.is_available()) {
            v.push(b(
                &format!("cpu quantized kernel {}", p.name()),
                &[],
                &[("EMBEDRANK_QKERNEL", p.name()), ("EMBEDRANK_QKERNEL_INT", "0")],
                0.9999,
                1e-3,
            ));
        }
        if embedrank::weights::qkernel::int_kernel_available() {
            v.push(b("cpu default: quantized kernel + int8 activations", &[], &[], 0.999, 0.05));
        }
    }
    if device != "cpu" {
        v.push(b(&format!("{device} (bf16)"), &["--device", device, "--dtype", "bf16"], &[], 0.999, 0.05));
        v.push(b(&format!("{device} (f32)"), &["--device", device, "--dtype", "f32"], &[], 0.9999, 1e-3));
        v.push(b(
            &format!("{device} bf16 without fused kernels"),
            &["--device", device, "--dtype", "bf16"],
            &[("EMBEDRANK_CUDA_KERNELS", "0")],
            0.999,
            0.05,
        ));
    }
    v
}

/// Vectors (embedders) or raw scores by document index (rerankers) from one child run.
enum Output {
    Vectors(Vec<Vec<f32>>),
    Scores(Vec<f64>),
}

/// Where the child finds the model: the same reference and cache folders the user gave.
pub struct ModelSource<'a> {
    pub reference: &'a str,
    pub cache_dirs: &'a [PathBuf],
}

fn run_child(src: &ModelSource, task: Task, be: &Backend) -> Result<Output> {
    let exe = std::env::current_exe().context("locating the embedrank binary")?;
    let mut cmd = Command::new(exe);
    match task {
        Task::Embed => {
            cmd.args(["embed", "-m", src.reference, "--task", "embed", "--format", "json"]);
        }
        Task::Rerank => {
            cmd.args(["rerank", "-m", src.reference, "--task", "rerank", "--raw-scores", "--query", QUERY]);
        }
    }
    for d in src.cache_dirs {
        cmd.arg("--cache-dir").arg(d);
    }
    cmd.args(&be.args);
    match task {
        Task::Embed => cmd.arg("--").args(TEXTS),
        Task::Rerank => cmd.arg("--").args(DOCS),
    };
    for (k, v) in &be.env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running a child embedrank")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(anyhow!("{}", err.lines().last().unwrap_or("failed without a message").trim()));
    }
    let doc: Value = serde_json::from_slice(&out.stdout).context("reading the child's JSON")?;
    match task {
        Task::Embed => {
            let rows = doc["data"].as_array().ok_or_else(|| anyhow!("no `data` in the child's answer"))?;
            let vectors = rows
                .iter()
                .map(|r| {
                    r["embedding"]
                        .as_array()
                        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32).collect())
                        .ok_or_else(|| anyhow!("a row without `embedding`"))
                })
                .collect::<Result<Vec<Vec<f32>>>>()?;
            Ok(Output::Vectors(vectors))
        }
        Task::Rerank => {
            let results = doc["results"].as_array().ok_or_else(|| anyhow!("no `results` in the child's answer"))?;
            let mut scores = vec![f64::NAN; DOCS.len()];
            for r in results {
                let i = r["index"].as_u64().ok_or_else(|| anyhow!("a result without `index`"))? as usize;
                let s = r["relevance_score"].as_f64().ok_or_else(|| anyhow!("a result without a score"))?;
                *scores.get_mut(i).ok_or_else(|| anyhow!("index {i} out of range"))? = s;
            }
            Ok(Output::Scores(scores))
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if a.len() != b.len() || na == 0.0 || nb == 0.0 {
        return f64::NAN;
    }
    dot / (na * nb)
}

fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    idx
}

pub fn compare(src: &ModelSource, spec: &ModelSpec, device: &str) -> BackendReport {
    let list = backends(spec, device);
    let mut results = Vec::new();
    let mut reference: Option<Output> = None;
    for be in &list {
        let mut r = BackendResult {
            backend: be.name.clone(),
            ran: false,
            error: None,
            min_cosine: None,
            mean_cosine: None,
            max_score_diff: None,
            same_ranking: None,
            passed: false,
        };
        match run_child(src, spec.task, be) {
            Err(e) => r.error = Some(e.to_string()),
            Ok(out) => {
                r.ran = true;
                match (&reference, &out) {
                    (None, _) => r.passed = true,
                    (Some(Output::Vectors(want)), Output::Vectors(got)) => {
                        let cos: Vec<f64> = want.iter().zip(got).map(|(w, g)| cosine(w, g)).collect();
                        let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
                        let mean = cos.iter().sum::<f64>() / cos.len().max(1) as f64;
                        r.passed = got.len() == want.len() && min >= be.min_cosine;
                        r.min_cosine = Some(min);
                        r.mean_cosine = Some(mean);
                    }
                    (Some(Output::Scores(want)), Output::Scores(got)) => {
                        let diff = want.iter().zip(got).map(|(w, g)| (w - g).abs()).fold(0.0, f64::max);
                        let same = ranking(want) == ranking(got);
                        r.passed = diff <= be.max_score_diff && same;
                        r.max_score_diff = Some(diff);
                        r.same_ranking = Some(same);
                    }
                    _ => r.error = Some("answer of the wrong kind".into()),
                }
                if reference.is_none() {
                    reference = Some(out);
                }
            }
        }
        results.push(r);
    }
    let passed = results.iter().all(|r| r.passed);
    BackendReport { model: src.reference.to_string(), passed, results }
}

pub fn table(reports: &[BackendReport]) -> String {
    let mut o = String::new();
    for rep in reports {
        o.push_str(&format!("{}: agreement with the CPU reference path (float activations)\n", rep.model));
        o.push_str(&format!(
            "  {:<48} {:>10} {:>10} {:>12} {:>8}  {}\n",
            "BACKEND", "MIN COS", "MEAN COS", "MAX |ΔSCORE|", "RANKING", "RESULT"
        ));
        for r in &rep.results {
            let f = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |x| format!("{x:.p$}"));
            let result = match (&r.error, r.passed) {
                (Some(e), _) => format!("FAIL: {e}"),
                (None, true) if r.min_cosine.is_none() && r.max_score_diff.is_none() => "reference".into(),
                (None, true) => "pass".into(),
                (None, false) => "FAIL".into(),
            };
            o.push_str(&format!(
                "  {:<48} {:>10} {:>10} {:>12} {:>8}  {}\n",
                r.backend,
                f(r.min_cosine, 6),
                f(r.mean_cosine, 6),
                f(r.max_score_diff, 5),
                r.same_ranking.map_or("-", |s| if s { "same" } else { "DIFFERS" }),
                result
            ));
        }
        o.push_str(&format!("  {}\n", if rep.passed { "PASS: every path agrees" } else { "FAIL: a path disagrees" }));
    }
    o
}
