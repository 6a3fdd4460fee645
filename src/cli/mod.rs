//! Subcommands and the options they share.

mod backends;
mod bench;
mod check;
mod convert;
mod corpus;
mod embed;
mod eval;
mod input;
mod output;
mod pull;
mod rerank;
mod serve;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use embedrank::engine::{DeviceChoice, DtypeChoice, Engine, EngineOptions};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::{ModelSpec, Pooling, SpecOverrides, Task};

#[derive(Parser, Debug)]
#[command(name = "embedrank", version, about = "Local text embeddings and reranking", propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug); also RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether this run is `embedrank serve` (a long-lived server, not a printing command).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Embed texts; JSON lines (or JSON, or .npy) out.
    Embed(embed::EmbedArgs),
    /// Rerank documents against a query; JSON out, best first.
    Rerank(rerank::RerankArgs),
    /// What is in the hub cache roots and how the wanted list stands (exit 1 if something is missing).
    Status(status::StatusArgs),
    /// Download a model into the hub cache: resumable, sha256-verified, huggingface_hub layout.
    Pull(pull::PullArgs),
    /// Load models and run built-in probes: shape, norm, ranking, latency, throughput, memory.
    Check(check::CheckArgs),
    /// Retrieval (BEIR folder) and STS quality, optionally reranked or against a second model.
    Eval(eval::EvalArgs),
    /// Quantize a model into the MLX layout (loads in mlx-lm / mlx-embeddings too).
    Convert(convert::ConvertArgs),
    /// Serve models over HTTP: OpenAI, Cohere/Jina and TEI-compatible routes.
    Serve(serve::ServeArgs),
    /// Throughput (real tokens/s), single-query latency and peak memory on a document workload.
    Bench(bench::BenchArgs),
}

/// How to find and load a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a local folder, or org/name[@revision] from the Hugging Face cache (downloaded if missing).
    #[arg(short, long)]
    pub model: String,
    /// Extra hub cache folder to search first (repeatable), e.g. on an external disk.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dirs: Vec<PathBuf>,
    /// cpu, cuda[:N], metal[:N] or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16 or bf16 (default: f32 on CPU, bf16 on GPUs); or int8 (CPU): linear
    /// layers quantized to 8 bits at load, integer dot products on AVX-512 VNNI (docs/models.md).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Maximum tokens per input (default: the model's).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Treat the model as an embedder or a reranker, overriding detection.
    #[arg(long, value_parser = ["embed", "rerank"])]
    pub task: Option<String>,
    /// Pooling override: cls, mean, max, lasttoken.
    #[arg(long)]
    pub pooling: Option<String>,
    /// Padded-token budget of one forward pass [default: 16384; 1024 for quantized models on the
    /// CPU (MLX checkpoints, --dtype int8)].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
}

impl ModelArgs {
    pub fn spec(&self) -> Result<ModelSpec> {
        let opts = ResolveOptions::from_env(&self.cache_dirs);
        let resolved = source::resolve(&self.model, &opts)?;
        let pooling = match &self.pooling {
            None => None,
            Some(p) => {
                Some(Pooling::parse(p).with_context(|| format!("unknown pooling `{p}` (cls, mean, max, lasttoken)"))?)
            }
        };
        let ov =
            SpecOverrides { task: self.task.as_deref().and_then(Task::parse), pooling, max_length: self.max_length };
        let spec = ModelSpec::load(&resolved, &ov)?;
        tracing::info!(model = %spec.name, dir = %spec.dir.display(), arch = spec.arch.name(), "resolved");
        Ok(spec)
    }

    pub fn engine(&self) -> Result<Engine> {
        let spec = self.spec()?;
        let mut opts = EngineOptions {
            device: DeviceChoice::parse(&self.device)?,
            max_batch_tokens: self.max_batch_tokens,
            ..Default::default()
        };
        if let Some(d) = self.dtype.as_deref() {
            DtypeChoice::parse(d)?.apply(&mut opts);
        }
        let engine = Engine::load(spec, &opts)?;
        tracing::info!(load_ms = engine.load_time.as_millis() as u64, "loaded");
        Ok(engine)
    }
}

pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("embedrank={level},warn")));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Embed(a) => embed::run(a),
        Command::Rerank(a) => rerank::run(a),
        Command::Status(a) => status::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Check(a) => check::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
