//! `embedrank pull REPO[@rev]`: resumable, verified download into a hub cache root.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use embedrank::source::cache::default_hub_cache;
use embedrank::source::inventory::human_bytes;
use embedrank::source::pull::{self, Outcome, PullOptions};
use embedrank::source::ModelRef;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Model id: org/name[@revision].
    pub repo: String,
    /// Also fetch files matching GLOB (repeatable), e.g. 'onnx/*' or '*.gguf'. By default only what
    /// inference needs is fetched (safetensors, configs, tokenizer, sentence-transformers files).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Hub cache folder to write into (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Files transferred at once.
    #[arg(long, default_value_t = pull::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Extra attempts per file after a transfer error (each resumes with a Range request).
    #[arg(long, default_value_t = pull::DEFAULT_RETRIES)]
    pub retries: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Re-hash cached blobs against their sha256 / git sha1 names and fetch again those that do not
    /// match (offline: report them and fail).
    #[arg(long)]
    pub verify: bool,
}

pub fn run(a: PullArgs) -> Result<ExitCode> {
    let reference = ModelRef::parse(&a.repo)?;
    if a.jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    let root = match a.cache_dir {
        Some(d) => d,
        None => default_hub_cache().context("no hub cache folder: set HF_HUB_CACHE or pass --cache-dir")?,
    };
    let opts = PullOptions {
        include: a.include,
        jobs: a.jobs,
        retries: a.retries,
        progress: !a.json && std::io::stderr().is_terminal(),
        verify: a.verify,
        ..PullOptions::from_env(root)
    };
    let report = pull::pull(&reference, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let n = |o: Outcome| report.files.iter().filter(|f| f.outcome == o).count();
        let total: u64 = report.files.iter().map(|f| f.size).sum();
        println!(
            "{}@{} ({}): {} files, {} — {} downloaded, {} resumed, {} already cached{} ({} transferred){}",
            report.repo_id,
            report.revision,
            &report.commit[..report.commit.len().min(10)],
            report.files.len(),
            human_bytes(total),
            n(Outcome::Downloaded),
            n(Outcome::Resumed),
            n(Outcome::Cached),
            match n(Outcome::Repaired) {
                0 if a.verify => ", all verified".to_string(),
                0 => String::new(),
                k => format!(", {k} corrupt and repaired"),
            },
            human_bytes(report.downloaded_bytes),
            if report.offline { " [offline]" } else { "" }
        );
        println!("{}", report.snapshot.display());
    }
    Ok(ExitCode::SUCCESS)
}
