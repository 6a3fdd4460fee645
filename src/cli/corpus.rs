//! `embedrank embed --output DIR`: the corpus job mode (src/corpus).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use embedrank::corpus::input::{Format, InputOptions};
use embedrank::corpus::write::VectorType;
use embedrank::corpus::{self, JobOptions, OnError};
use embedrank::engine::{EmbedOptions, Truncation};

use super::embed::EmbedArgs;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnErrorArg {
    Stop,
    Skip,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Corpus job (--output DIR)")]
pub struct JobArgs {
    /// This process's share: shard I of N (0-based), e.g. --shard $JOB_COMPLETION_INDEX/8.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Input rows per output part (also the window sorted by length for batching).
    #[arg(long, default_value_t = 4096)]
    pub part_rows: u64,
    /// A malformed row: stop with its file and line, or skip it (logged, recorded in the manifest).
    #[arg(long, value_enum, default_value_t = OnErrorArg::Stop)]
    pub on_error: OnErrorArg,
    /// Input format: jsonl, csv, tsv, lines, parquet (default: from the file extension).
    #[arg(long)]
    pub input_format: Option<String>,
    /// Field or column with the text (BEIR titles are joined in front when it is "text").
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field or column with the id (default: "id", else "_id", else the row number).
    #[arg(long)]
    pub id_field: Option<String>,
    /// Copy this input field or column into the output (repeatable).
    #[arg(long, value_name = "FIELD")]
    pub keep: Vec<String>,
    /// Vector type in the Parquet parts: float32, float16, int8 (×127) or binary (sign bits).
    #[arg(long, default_value = "float32")]
    pub vector_type: String,
    /// Check that all shards finished and the output is complete (no embedding).
    #[arg(long)]
    pub verify: bool,
    /// One JSON summary object on stdout at the end.
    #[arg(long)]
    pub json: bool,
}

impl JobArgs {
    pub fn reject_without_folder(&self) -> Result<()> {
        if self.shard.is_some() || self.verify {
            bail!("--shard and --verify need --output DIR (a folder or s3:// URL)");
        }
        Ok(())
    }
}

/// An --output that names a folder: an s3:// URL, an existing folder, or a path ending in '/'.
pub fn is_job_output(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.contains("://") || p.is_dir() || s.ends_with('/')
}

fn parse_shard(s: Option<&str>) -> Result<(u32, u32)> {
    let Some(s) = s else { return Ok((0, 1)) };
    let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard must be I/N with 0 <= I < N, got `{s}`"),
    }
}

struct Bar(indicatif::ProgressBar, std::sync::atomic::AtomicU64);

impl corpus::Progress for Bar {
    fn add(&self, docs: u64, tokens: u64) {
        use std::sync::atomic::Ordering;
        self.0.inc(docs);
        let t = self.1.fetch_add(tokens, Ordering::Relaxed) + tokens;
        self.0.set_message(format!("{:.0} tokens/s", t as f64 / self.0.elapsed().as_secs_f64().max(1e-3)));
    }
}

pub fn run(a: &EmbedArgs, out: &Path) -> Result<ExitCode> {
    let output = out.to_string_lossy().trim_end_matches('/').to_string();
    let output = if output.is_empty() { "/".to_string() } else { output };
    if a.job.verify {
        let v = corpus::verify(&output)?;
        if a.job.json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            eprintln!(
                "ok: {} documents in {} parts from {} files, {} shards, model {} ({} rows skipped)",
                v.documents, v.parts, v.files, v.shards, v.model, v.skipped_rows
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.texts.is_empty() {
        bail!("a corpus job reads --input files; give no texts as arguments");
    }
    if a.input.is_empty() {
        bail!("a corpus job needs --input PATH (files, folders, globs or s3:// URLs)");
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (shard, shards) = parse_shard(a.job.shard.as_deref())?;
    let format = match a.job.input_format.as_deref() {
        None => None,
        Some(f) => Some(
            Format::parse(f)
                .with_context(|| format!("unknown --input-format `{f}` (jsonl, csv, tsv, lines, parquet)"))?,
        ),
    };
    let vector_type = VectorType::parse(&a.job.vector_type)
        .with_context(|| format!("unknown --vector-type `{}` (float32, float16, int8, binary)", a.job.vector_type))?;
    let engine = a.model.engine()?;
    let prompt = engine.spec.prompt_for(a.prompt_name.as_deref(), a.prompt.as_deref(), a.instruction.as_deref())?;
    let embed = EmbedOptions {
        prompt,
        dimensions: a.dimensions,
        normalize: a.no_normalize.then_some(false),
        batch_size: Some(a.batch_size),
        truncation: Truncation::refuse_if(a.no_truncate),
    };
    engine.check_dimensions(embed.dimensions)?;
    let o = JobOptions {
        inputs: a.input.clone(),
        output,
        shard,
        shards,
        part_rows: a.job.part_rows,
        on_error: match a.job.on_error {
            OnErrorArg::Stop => OnError::Stop,
            OnErrorArg::Skip => OnError::Skip,
        },
        input: InputOptions {
            format,
            text_field: a.job.text_field.clone(),
            id_field: a.job.id_field.clone(),
            keep: a.job.keep.clone(),
        },
        vector_type,
        embed,
    };
    let summary = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} docs  {per_sec}  {msg}  {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        let bar = Bar(bar, Default::default());
        let s = corpus::run(&engine, &o, &bar);
        bar.0.finish_and_clear();
        s?
    } else {
        corpus::run(&engine, &o, &())?
    };
    if a.job.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "shard {}/{}: {} documents in {} new parts ({} done before), {:.0} docs/s, {:.0} tokens/s, {} rows skipped",
            summary.shard,
            summary.shards,
            summary.documents,
            summary.parts_written,
            summary.parts_resumed,
            summary.docs_per_s,
            summary.tokens_per_s,
            summary.skipped_rows
        );
    }
    Ok(ExitCode::SUCCESS)
}
