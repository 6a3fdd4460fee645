//! `embedrank bench`: throughput, latency and memory of one model on a document workload.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use embedrank::bench::{self, flops::HOPPER_BF16_DENSE_TFLOPS, BenchOptions, Progress, Report, Workload};

use super::{input, ModelArgs};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Documents: a BEIR corpus.jsonl (title + " " + text), JSON lines with "text", or plain lines.
    #[arg(long, value_name = "FILE", env = "EMBEDRANK_BENCH_INPUT")]
    pub input: PathBuf,
    /// Short queries for the latency phase (and rerank queries). Default: queries.jsonl beside a BEIR
    /// corpus, else the first words of each document.
    #[arg(long, value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// Use the first N documents.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Timed passes over the documents (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Timed single-query requests (0 skips the latency phase).
    #[arg(long, default_value_t = 100)]
    pub latency_requests: usize,
    /// Rerankers: documents per rerank request.
    #[arg(long, default_value_t = 100)]
    pub rerank_docs: usize,
    /// Peak TFLOP/s for MFU (default: 989, H100/H200 dense bf16, on CUDA; none elsewhere).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.limit == 0 {
        bail!("--limit must be at least 1");
    }
    if a.batch_size == 0 || a.concurrency == 0 || a.runs == 0 || a.rerank_docs == 0 {
        bail!("--batch-size, --concurrency, --runs and --rerank-docs must be at least 1");
    }
    if let Some(p) = a.peak_tflops {
        if !(p.is_finite() && p > 0.0) {
            bail!("--peak-tflops must be a positive number");
        }
    }
    let workload = load_workload(&a.input, a.queries.as_deref(), a.limit)?;
    let engine = a.model.engine()?;
    let on_cuda = engine.device.is_cuda();
    let opts = BenchOptions {
        batch_size: a.batch_size,
        concurrency: a.concurrency,
        runs: a.runs,
        latency_requests: a.latency_requests,
        rerank_docs: a.rerank_docs,
        peak_tflops: a.peak_tflops.or(on_cuda.then_some(HOPPER_BF16_DENSE_TFLOPS)),
    };
    let report = if std::io::stderr().is_terminal() {
        let bar = Bar::new();
        let r = bench::run(&engine, &workload, &opts, &bar);
        bar.0.finish_and_clear();
        r?
    } else {
        bench::run(&engine, &workload, &opts, &bench::Quiet)?
    };
    if a.json {
        println!("{}", serde_json::to_string(&Json { input: &a.input, report: &report })?);
    } else {
        print_table(&a.input, &report);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct Json<'a> {
    input: &'a Path,
    #[serde(flatten)]
    report: &'a Report,
}

/// Documents and queries. A BEIR corpus (lines with `_id`) goes through the eval loader, which
/// joins title and text as BEIR/sentence-transformers do.
fn load_workload(path: &Path, queries: Option<&Path>, limit: usize) -> Result<Workload> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let is_beir = serde_json::from_str::<serde_json::Value>(first).is_ok_and(|v| v.get("_id").is_some());
    let mut docs = if is_beir {
        embedrank::eval::beir::load_corpus(path)?.texts
    } else {
        input::parse_lines(&text, &path.display().to_string(), input::Blank::Skip)?
    };
    docs.truncate(limit);
    let sibling = path.with_file_name("queries.jsonl");
    let queries = match queries {
        Some(q) => input::texts(&[], Some(q), input::Blank::Skip)?,
        None if is_beir && sibling.is_file() => input::texts(&[], Some(&sibling), input::Blank::Skip)?,
        // No query file: the first words of each document make short queries of natural text.
        None => docs.iter().map(|d| d.split_whitespace().take(8).collect::<Vec<_>>().join(" ")).collect(),
    };
    let queries: Vec<String> = queries.into_iter().filter(|q| !q.trim().is_empty()).collect();
    if queries.is_empty() {
        bail!("no usable queries for the latency phase");
    }
    Ok(Workload { docs, queries })
}

struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        self.0.set_message(name.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".to_string(), |b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)))
}

fn print_table(input: &Path, r: &Report) {
    println!("model       {} ({}, {}) on {} {}, {} threads", r.model, r.arch, r.task, r.device, r.dtype, r.threads);
    println!(
        "workload    {} {} from {} ({} requests), max length {}, batch {}, concurrency {}",
        r.texts,
        if r.task == "rerank" { "pairs" } else { "texts" },
        input.display(),
        r.requests,
        r.max_length,
        r.batch_size,
        r.concurrency
    );
    println!(
        "tokens      {} real, {} padded ({:.1}% useful)",
        r.real_tokens,
        r.padded_tokens,
        100.0 * r.padding_efficiency
    );
    let runs: Vec<String> = r.runs.iter().map(|x| format!("{:.0}", x.tokens_per_s)).collect();
    println!(
        "throughput  {:.0} tokens/s, {:.1} texts/s, {:.2} s per pass (median of {} runs: {} tokens/s)",
        r.tokens_per_s,
        r.texts_per_s,
        r.wall_s,
        r.runs.len(),
        runs.join(", ")
    );
    let mfu = r.mfu.map_or_else(String::new, |m| {
        format!(", MFU {:.1}% of {:.0} TFLOP/s", 100.0 * m, r.peak_tflops.unwrap_or(0.0))
    });
    let achieved = if r.achieved_tflops >= 1.0 {
        format!("{:.1} TFLOP/s", r.achieved_tflops)
    } else {
        format!("{:.1} GFLOP/s", r.achieved_tflops * 1e3)
    };
    println!("compute     {achieved} achieved (useful FLOPs of real tokens){mfu}");
    match &r.latency {
        Some(l) => println!(
            "latency     {}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms (mean {:.2}, {} requests)",
            r.latency_request, l.p50_ms, l.p95_ms, l.p99_ms, l.mean_ms, l.n
        ),
        None => println!("latency     skipped"),
    }
    println!(
        "memory      peak RSS {} (after load {}), load {:.2} s",
        mib(r.peak_rss_bytes),
        mib(r.rss_after_load_bytes),
        r.load_s
    );
}
