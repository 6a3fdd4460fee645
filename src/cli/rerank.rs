//! `embedrank rerank`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use embedrank::engine::RerankOptions;

use super::{input, ModelArgs};

#[derive(Args, Debug)]
pub struct RerankArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The query.
    #[arg(short = 'Q', long)]
    pub query: String,
    /// Instruction for Qwen3-Reranker (default: the model card's).
    #[arg(long)]
    pub instruction: Option<String>,
    /// Keep only the best N.
    #[arg(long)]
    pub top_n: Option<usize>,
    /// Include each document's text in the output.
    #[arg(long)]
    pub return_documents: bool,
    /// Raw scores (logits) instead of the model's activation.
    #[arg(long)]
    pub raw_scores: bool,
    /// Fail on pairs longer than the max length instead of truncating the document.
    #[arg(long)]
    pub no_truncate: bool,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Read documents from FILE (- for stdin): a JSON array, JSON lines with "text", or plain lines.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Blank lines in an --input file: error (default; indexes are line numbers), embed, or skip.
    #[arg(long, value_enum, default_value_t = super::input::Blank::Error)]
    pub blank: super::input::Blank,
    /// Documents.
    pub documents: Vec<String>,
}

pub fn run(a: RerankArgs) -> Result<ExitCode> {
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let docs = input::texts(&a.documents, a.input.as_deref(), a.blank)?;
    let engine = a.model.engine()?;
    let opts = RerankOptions {
        instruction: a.instruction,
        top_n: a.top_n,
        return_documents: a.return_documents,
        raw_scores: a.raw_scores,
        no_truncate: a.no_truncate,
        batch_size: Some(a.batch_size),
    };
    let results = engine.rerank(&a.query, &docs, &opts)?;
    println!("{}", serde_json::to_string(&serde_json::json!({ "model": engine.spec.name, "results": results }))?);
    Ok(ExitCode::SUCCESS)
}
