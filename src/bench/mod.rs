//! Benchmark harness behind `embedrank bench`: throughput (real tokens/s, texts/s) on a document
//! workload, single-request latency percentiles, peak memory, and achieved FLOP/s / MFU.
//!
//! The work is what a user's call does, tokenization included: `Engine::embed` for embedders and
//! `Engine::rerank` for rerankers. Token counts and FLOPs come from an untimed tokenization of the
//! same inputs, so the timed loop measures nothing but the public API.

pub mod flops;
pub mod stats;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use candle_core::DeviceLocation;
use serde::Serialize;

use crate::engine::{batch, memory, rerank, EmbedOptions, Engine, RerankOptions, Tokens};
use crate::spec::Task;
use crate::{Error, Result};

/// Texts to run: documents for throughput, short queries for latency (and as rerank queries).
#[derive(Debug, Clone)]
pub struct Workload {
    pub docs: Vec<String>,
    pub queries: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Requests in flight at once (threads calling the engine).
    pub concurrency: usize,
    /// Timed throughput runs over the whole workload (the median is reported).
    pub runs: usize,
    /// Timed single-query requests (0: skip the latency phase).
    pub latency_requests: usize,
    /// Rerankers: documents per rerank request in the throughput phase.
    pub rerank_docs: usize,
    /// MFU denominator in TFLOP/s (None: no MFU).
    pub peak_tflops: Option<f64>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            batch_size: 32,
            concurrency: 1,
            runs: 3,
            latency_requests: 100,
            rerank_docs: 100,
            peak_tflops: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub wall_s: f64,
    /// CPU seconds (all threads) the pass used: on a shared machine, wall time over this is the
    /// share of the CPU it got.
    pub cpu_s: Option<f64>,
    pub tokens_per_s: f64,
    pub texts_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub arch: &'static str,
    pub task: &'static str,
    pub device: String,
    pub dtype: &'static str,
    /// CPU threads candle uses for compute.
    pub threads: usize,
    pub max_length: usize,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Documents run per throughput pass (rerankers: query-document pairs).
    pub texts: usize,
    /// Requests per throughput pass (embedders: one per concurrent worker).
    pub requests: usize,
    /// Tokens the model sees after truncation, special tokens included, no padding.
    pub real_tokens: usize,
    /// Tokens of the padded batches the engine forms (rows × longest row, summed).
    pub padded_tokens: usize,
    pub padding_efficiency: f64,
    pub runs: Vec<RunResult>,
    /// Medians over `runs`.
    pub wall_s: f64,
    pub tokens_per_s: f64,
    pub texts_per_s: f64,
    /// Useful forward FLOPs of one pass (see [`flops`]).
    pub flops_per_pass: f64,
    pub achieved_tflops: f64,
    pub peak_tflops: Option<f64>,
    pub mfu: Option<f64>,
    /// What one latency request is.
    pub latency_request: String,
    pub latency: Option<stats::Summary>,
    pub load_s: f64,
    pub rss_after_load_bytes: Option<u64>,
    /// Peak resident memory of the whole process (load included).
    pub peak_rss_bytes: Option<u64>,
}

/// Progress of the long phases, for a progress bar.
pub trait Progress: Sync {
    fn phase(&self, _name: &str, _total: u64) {}
    fn inc(&self, _n: u64) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

pub fn device_name(engine: &Engine) -> String {
    match engine.device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Run the benchmark: warm-up, `runs` throughput passes, then the latency phase.
pub fn run(engine: &Engine, w: &Workload, o: &BenchOptions, progress: &dyn Progress) -> Result<Report> {
    if w.docs.is_empty() {
        return Err(Error::InvalidInput("bench: no documents in the workload".into()));
    }
    if w.queries.is_empty() && (o.latency_requests > 0 || engine.spec.task == Task::Rerank) {
        return Err(Error::InvalidInput("bench: no queries in the workload".into()));
    }
    if o.batch_size == 0 || o.concurrency == 0 || o.runs == 0 || o.rerank_docs == 0 {
        return Err(Error::InvalidInput(
            "bench: batch size, concurrency, runs and documents per rerank request must be at least 1".into(),
        ));
    }
    let rss_after_load_bytes = memory::current_rss_bytes();
    let plan = plan_work(engine, w, o)?;

    // Warm-up: first kernels, thread pools, allocator; on CUDA the PTX JIT of the first launch.
    progress.phase("warm-up", 1);
    run_pass(engine, &plan, o, true)?;
    progress.inc(1);

    let mut runs = Vec::with_capacity(o.runs);
    progress.phase("throughput", o.runs as u64);
    for _ in 0..o.runs {
        let (t0, cpu0) = (Instant::now(), memory::process_cpu_seconds());
        run_pass(engine, &plan, o, false)?;
        let wall_s = t0.elapsed().as_secs_f64();
        runs.push(RunResult {
            wall_s,
            cpu_s: cpu0.zip(memory::process_cpu_seconds()).map(|(a, b)| b - a),
            tokens_per_s: plan.real_tokens as f64 / wall_s,
            texts_per_s: plan.texts as f64 / wall_s,
        });
        progress.inc(1);
    }

    let (latency_request, latency) = if o.latency_requests > 0 {
        progress.phase("latency", o.latency_requests as u64);
        let (what, lat) = run_latency(engine, w, o, progress)?;
        (what, stats::summarize(&lat))
    } else {
        ("none".to_string(), None)
    };

    let med = |f: fn(&RunResult) -> f64| stats::median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
    let wall_s = med(|r| r.wall_s);
    let flops_per_pass = flops::forward_flops(&engine.spec.arch, plan.lengths.iter().copied());
    let achieved_tflops = if wall_s > 0.0 { flops_per_pass / wall_s / 1e12 } else { 0.0 };
    Ok(Report {
        model: engine.spec.name.clone(),
        arch: engine.spec.arch.name(),
        task: engine.spec.task.key(),
        device: device_name(engine),
        dtype: engine.dtype_label(),
        threads: candle_core::utils::get_num_threads(),
        max_length: engine.spec.max_length,
        batch_size: o.batch_size,
        concurrency: o.concurrency,
        texts: plan.texts,
        requests: plan.requests.len(),
        real_tokens: plan.real_tokens,
        padded_tokens: plan.padded_tokens,
        padding_efficiency: plan.real_tokens as f64 / plan.padded_tokens.max(1) as f64,
        wall_s,
        tokens_per_s: med(|r| r.tokens_per_s),
        texts_per_s: med(|r| r.texts_per_s),
        runs,
        flops_per_pass,
        achieved_tflops,
        peak_tflops: o.peak_tflops,
        mfu: o.peak_tflops.filter(|p| *p > 0.0).map(|p| achieved_tflops / p),
        latency_request,
        latency,
        load_s: engine.load_time.as_secs_f64(),
        rss_after_load_bytes,
        peak_rss_bytes: memory::peak_rss_bytes(),
    })
}

/// One request of the throughput phase.
enum Request<'a> {
    /// Embed these documents in one call.
    Embed(Vec<String>),
    /// Rerank these documents against the query.
    Rerank(&'a str, Vec<String>),
}

struct Plan<'a> {
    /// Requests per worker thread.
    requests: Vec<Request<'a>>,
    workers: Vec<Vec<usize>>,
    texts: usize,
    lengths: Vec<usize>,
    real_tokens: usize,
    padded_tokens: usize,
}

/// Split the workload into requests and workers, and count its tokens with the engine's own
/// tokenization and batch planning (untimed).
fn plan_work<'a>(engine: &Engine, w: &'a Workload, o: &BenchOptions) -> Result<Plan<'a>> {
    let c = o.concurrency;
    let mut requests = Vec::new();
    let mut toks_per_request: Vec<Vec<Tokens>> = Vec::new();
    match engine.spec.task {
        Task::Embed => {
            // One call per worker over an interleaved share: each call sorts its texts by length
            // and batches them, as one big user request does.
            let opts = embed_options(o);
            for k in 0..c.min(w.docs.len()) {
                let shard: Vec<String> = w.docs.iter().skip(k).step_by(c).cloned().collect();
                toks_per_request.push(engine.tokenize_texts(&shard, &opts)?);
                requests.push(Request::Embed(shard));
            }
        }
        Task::Rerank => {
            let opts = rerank_options(o);
            for (j, chunk) in w.docs.chunks(o.rerank_docs).enumerate() {
                let q = w.queries[j % w.queries.len()].as_str();
                toks_per_request.push(rerank::tokenize_pairs(engine, q, chunk, &opts)?);
                requests.push(Request::Rerank(q, chunk.to_vec()));
            }
        }
    }
    let n_workers = c.min(requests.len()).max(1);
    let mut workers = vec![Vec::new(); n_workers];
    for i in 0..requests.len() {
        workers[i % n_workers].push(i);
    }
    let lengths: Vec<usize> = toks_per_request.iter().flatten().map(|t| t.len()).collect();
    let padded_tokens = toks_per_request
        .iter()
        .map(|toks| {
            batch::plan(toks, Some(o.batch_size), engine.max_batch_tokens)
                .iter()
                .map(|g| g.len() * g.iter().map(|&i| toks[i].len().max(1)).max().unwrap_or(0))
                .sum::<usize>()
        })
        .sum();
    Ok(Plan { requests, workers, texts: lengths.len(), real_tokens: lengths.iter().sum(), lengths, padded_tokens })
}

fn embed_options(o: &BenchOptions) -> EmbedOptions {
    EmbedOptions { batch_size: Some(o.batch_size), ..Default::default() }
}

fn rerank_options(o: &BenchOptions) -> RerankOptions {
    RerankOptions { batch_size: Some(o.batch_size), ..Default::default() }
}

fn do_request(engine: &Engine, r: &Request<'_>, o: &BenchOptions, warmup: bool) -> Result<()> {
    let cap = |docs: &[String]| if warmup { docs[..docs.len().min(o.batch_size)].to_vec() } else { docs.to_vec() };
    match r {
        Request::Embed(docs) => {
            engine.embed(&cap(docs), &embed_options(o))?;
        }
        Request::Rerank(q, docs) => {
            engine.rerank(q, &cap(docs), &rerank_options(o))?;
        }
    }
    Ok(())
}

/// One pass over every request, `concurrency` workers at once. The warm-up pass runs one batch.
fn run_pass(engine: &Engine, plan: &Plan<'_>, o: &BenchOptions, warmup: bool) -> Result<()> {
    if warmup {
        return match plan.requests.first() {
            Some(r) => do_request(engine, r, o, true),
            None => Ok(()),
        };
    }
    if plan.workers.len() == 1 {
        return plan.requests.iter().try_for_each(|r| do_request(engine, r, o, false));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .workers
            .iter()
            .map(|mine| s.spawn(move || mine.iter().try_for_each(|&i| do_request(engine, &plan.requests[i], o, false))))
            .collect();
        join_all(handles)
    })
}

fn join_all(handles: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    let mut first_err = Ok(());
    for h in handles {
        // A panic in a worker is a bug, not bad input: pass it on unchanged.
        let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        if first_err.is_ok() {
            first_err = r;
        }
    }
    first_err
}

/// Single-query requests, `concurrency` in flight: embed one query, or rerank one query against
/// one document. Three untimed warm-up requests first.
fn run_latency(
    engine: &Engine,
    w: &Workload,
    o: &BenchOptions,
    progress: &dyn Progress,
) -> Result<(String, Vec<Duration>)> {
    let embed_opts = EmbedOptions { batch_size: Some(1), ..Default::default() };
    let rerank_opts = RerankOptions { batch_size: Some(1), ..Default::default() };
    let one = |i: usize| -> Result<Duration> {
        let q = &w.queries[i % w.queries.len()];
        let t0 = Instant::now();
        match engine.spec.task {
            Task::Embed => {
                engine.embed(std::slice::from_ref(q), &embed_opts)?;
            }
            Task::Rerank => {
                engine.rerank(q, std::slice::from_ref(&w.docs[i % w.docs.len()]), &rerank_opts)?;
            }
        }
        Ok(t0.elapsed())
    };
    for i in 0..3 {
        one(i)?;
    }
    let what = match engine.spec.task {
        Task::Embed => "embed 1 query".to_string(),
        Task::Rerank => "rerank 1 query x 1 document".to_string(),
    };
    let n = o.latency_requests;
    let next = AtomicUsize::new(0);
    let worker = || -> Result<Vec<Duration>> {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok(out);
            }
            out.push(one(i)?);
            progress.inc(1);
        }
    };
    if o.concurrency == 1 {
        return Ok((what, worker()?));
    }
    let per_worker: Vec<Result<Vec<Duration>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.concurrency.min(n)).map(|_| s.spawn(worker)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in per_worker {
        all.extend(r?);
    }
    Ok((what, all))
}
