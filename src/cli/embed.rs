//! `embedrank embed`.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use embedrank::engine::{EmbedOptions, Truncation};

use super::{input, output, ModelArgs};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Jsonl,
    Json,
    Npy,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Named prompt from the model's config (e.g. query, document).
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_name: Option<String>,
    /// Literal prompt text prepended to every input.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Task instruction for instruction-aware models (Qwen3-Embedding queries).
    #[arg(long, conflicts_with_all = ["prompt", "prompt_name"])]
    pub instruction: Option<String>,
    /// Matryoshka: keep the first N dimensions (then re-normalize).
    #[arg(long)]
    pub dimensions: Option<usize>,
    /// Return raw pooled vectors, not L2-normalized.
    #[arg(long)]
    pub no_normalize: bool,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Fail on inputs longer than the max length instead of truncating.
    #[arg(long)]
    pub no_truncate: bool,
    /// Read inputs from FILE (- for stdin): JSON lines with "text", or plain lines. With --output
    /// DIR (a job): files, folders, quoted globs or s3:// URLs, repeatable.
    #[arg(long, value_name = "FILE")]
    pub input: Vec<String>,
    /// Blank lines in an --input file: error (default; indexes are line numbers), embed, or skip.
    #[arg(long, value_enum, default_value_t = input::Blank::Error)]
    pub blank: input::Blank,
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Output file (required for npy; default stdout). A folder (existing, ending in /, or
    /// s3://bucket/prefix) runs a resumable corpus job writing Parquet parts (docs/corpus.md).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub job: super::corpus::JobArgs,
    /// Texts to embed.
    pub texts: Vec<String>,
}

pub fn run(a: EmbedArgs) -> Result<ExitCode> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(out) = a.output.as_deref().filter(|o| super::corpus::is_job_output(o)) {
        return super::corpus::run(&a, out);
    }
    a.job.reject_without_folder()?;
    if a.input.len() > 1 {
        bail!("several --input need --output DIR (a corpus job)");
    }
    if matches!(a.format, Format::Npy) && a.output.is_none() {
        bail!("--format npy needs --output FILE");
    }
    let texts = input::texts(&a.texts, a.input.first().map(std::path::Path::new), a.blank)?;
    let engine = a.model.engine()?;
    let prompt = engine.spec.prompt_for(a.prompt_name.as_deref(), a.prompt.as_deref(), a.instruction.as_deref())?;
    let opts = EmbedOptions {
        prompt,
        dimensions: a.dimensions,
        normalize: a.no_normalize.then_some(false),
        batch_size: Some(a.batch_size),
        truncation: Truncation::refuse_if(a.no_truncate),
    };
    engine.check_dimensions(opts.dimensions)?;
    let progress = texts.len() > 256 && std::io::stderr().is_terminal();
    let emb = if progress { embed_with_progress(&engine, &texts, &opts)? } else { engine.embed(&texts, &opts)? };
    match a.format {
        Format::Npy => output::npy(a.output.as_deref().unwrap_or(std::path::Path::new("out.npy")), &emb.vectors)?,
        Format::Jsonl | Format::Json => {
            let mut w: Box<dyn Write> = match &a.output {
                Some(p) => Box::new(BufWriter::new(std::fs::File::create(p)?)),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            if matches!(a.format, Format::Jsonl) {
                output::jsonl(&mut w, &emb.vectors)?;
            } else {
                output::json(&mut w, &emb.vectors, &engine.spec.name, emb.tokens)?;
            }
            w.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Embed in chunks with a progress bar on the terminal.
fn embed_with_progress(
    engine: &embedrank::engine::Engine,
    texts: &[String],
    opts: &EmbedOptions,
) -> Result<embedrank::engine::Embeddings> {
    let bar = indicatif::ProgressBar::new(texts.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} texts {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut vectors = Vec::with_capacity(texts.len());
    let mut tokens = 0;
    for chunk in texts.chunks(1024) {
        let e = engine.embed(chunk, opts)?;
        tokens += e.tokens;
        vectors.extend(e.vectors);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(embedrank::engine::Embeddings { vectors, tokens })
}
