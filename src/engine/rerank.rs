//! Reranking: cross-encoder pairs, or the Qwen3-Reranker prompt template, scored in batches.

use super::batch;
use super::tokenize::Tokens;
use super::Engine;
use crate::spec::{Head, ScoreActivation};
use crate::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct RerankOptions {
    /// Qwen3-Reranker instruction (default: the model card's).
    pub instruction: Option<String>,
    pub top_n: Option<usize>,
    pub return_documents: bool,
    /// Return the raw score instead of the model's activation (sigmoid).
    pub raw_scores: bool,
    pub no_truncate: bool,
    pub batch_size: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RerankResult {
    pub index: usize,
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

/// Tokenize (query, doc) pairs as the model expects.
pub fn tokenize_pairs(engine: &Engine, query: &str, docs: &[String], opts: &RerankOptions) -> Result<Vec<Tokens>> {
    let spec = &engine.spec;
    match (&spec.head, &spec.rerank_template) {
        (Head::BertClassifier { .. }, _) => {
            // A cross-encoder has no instruction slot: ignoring one would score something else than
            // the caller asked for, as --instruction on a BERT embedder is an error too.
            if opts.instruction.is_some() {
                return Err(Error::InvalidInput(format!(
                    "model `{}` is a cross-encoder and takes no instruction (only Qwen3-Reranker models do)",
                    spec.name
                )));
            }
            engine.tokenizer.encode_pairs(query, docs, !opts.no_truncate)
        }
        (Head::Qwen3YesNo { .. } | Head::Qwen3SeqCls, Some(tpl)) => {
            let prefix = engine.tokenizer.encode_plain(&tpl.prefix)?;
            let suffix = engine.tokenizer.encode_plain(&tpl.suffix)?;
            let max = engine.tokenizer.max_length();
            let fixed = prefix.len() + suffix.len();
            if fixed >= max {
                return Err(Error::InvalidInput(format!(
                    "max length {max} leaves no room for the reranker prompt ({fixed} tokens)"
                )));
            }
            let instr = opts.instruction.as_deref().unwrap_or(&tpl.default_instruction);
            // The body up to the document, tokenized once for all documents; the document comes
            // last, so cutting at the end truncates the document and never the template.
            let whole = tpl.body(instr, query, "");
            let (head, sep) = match whole.strip_suffix(' ') {
                Some(h) => (h, " "),
                None => (whole.as_str(), ""),
            };
            let encoded = engine.tokenizer.encode_bodies(head, sep, docs, max - fixed)?;
            encoded
                .into_iter()
                .enumerate()
                .map(|(i, (body, cut))| {
                    if cut && opts.no_truncate {
                        return Err(Error::InputTooLong { index: i, tokens: fixed + body.len() + 1, max });
                    }
                    let ids: Vec<u32> = prefix.iter().chain(&body).chain(&suffix).copied().collect();
                    Ok(Tokens { type_ids: vec![0; ids.len()], ids })
                })
                .collect()
        }
        _ => Err(Error::InvalidInput(format!("model `{}` has no reranker head", spec.name))),
    }
}

/// Raw scores for pre-tokenized pairs, in input order.
pub fn score_tokens(engine: &Engine, toks: &[Tokens], batch_size: Option<usize>) -> Result<Vec<f32>> {
    let mut out = vec![0f32; toks.len()];
    for group in batch::plan(toks, batch_size, engine.max_batch_tokens) {
        let b = batch::build(toks, &group, &engine.spec, &engine.device, engine.dtype)?;
        for (v, &i) in engine.score_batch(&b)?.into_iter().zip(&group) {
            out[i] = v;
        }
    }
    Ok(out)
}

pub fn activate(raw: f32, act: ScoreActivation) -> f32 {
    match act {
        ScoreActivation::Sigmoid => 1.0 / (1.0 + (-raw).exp()),
        ScoreActivation::Identity => raw,
    }
}

pub fn rerank(engine: &Engine, query: &str, docs: &[String], opts: &RerankOptions) -> Result<Vec<RerankResult>> {
    if docs.is_empty() {
        return Err(Error::InvalidInput("no documents to rerank".into()));
    }
    if opts.top_n == Some(0) {
        return Err(Error::InvalidInput("top_n must be at least 1".into()));
    }
    let toks = tokenize_pairs(engine, query, docs, opts)?;
    let raw = score_tokens(engine, &toks, opts.batch_size)?;
    let act = if opts.raw_scores { ScoreActivation::Identity } else { engine.spec.score_activation };
    let mut results: Vec<RerankResult> = raw
        .into_iter()
        .enumerate()
        .map(|(index, r)| RerankResult {
            index,
            relevance_score: activate(r, act),
            document: opts.return_documents.then(|| docs[index].clone()),
        })
        .collect();
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score).then(a.index.cmp(&b.index)));
    if let Some(n) = opts.top_n {
        results.truncate(n);
    }
    Ok(results)
}
