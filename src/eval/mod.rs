//! Evaluation: retrieval quality on a BEIR-format folder (exact cosine search, nDCG@10, Recall@100,
//! MRR@10, MAP@100 as pytrec_eval/MTEB compute them), optionally reranked, and sentence similarity
//! (Spearman/Pearson on an STS-B file). The CLI (`embedrank eval`) prints and compares; this module
//! only computes.
//!
//! Queries get the model's query prompt (Qwen3-Embedding: its instruction), documents its document
//! prompt, as MTEB does for models with prompts.

pub mod beir;
pub mod cache;
pub mod metrics;
pub mod search;
pub mod sts;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::engine::{EmbedOptions, Engine, RerankOptions};
use crate::spec::{Head, ModelSpec};
use crate::Result;

use metrics::{Measure, Metric, Run};

/// Every metric we compute (the JSON output); the table shows [`metrics::HEADLINE`].
pub fn all_metrics() -> Vec<Metric> {
    let mut v = Vec::new();
    for m in [Measure::Ndcg, Measure::Recall, Measure::Mrr, Measure::Map, Measure::Precision] {
        for k in [1, 3, 5, 10, 100] {
            v.push(Metric::new(m, k));
        }
    }
    v
}

/// Documents retrieved per query: enough for every cutoff we report.
pub const RETRIEVAL_DEPTH: usize = 100;

/// Progress of long steps, in units the step names (tokens, queries). The CLI draws a bar.
pub trait Progress {
    fn start(&self, what: &str, total: u64);
    fn advance(&self, n: u64);
    fn finish(&self);
}

/// No progress output (tests, `--json`, not a terminal).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Inputs per engine call while embedding: small enough for a smooth progress bar, large enough
/// for the engine's length-sorted batching to fill its token budget.
const EMBED_CHUNK: usize = 256;

/// Embed texts (L2-normalized, so dot product = cosine) with `prompt`, reporting progress in tokens.
/// Inputs are ordered by token count first so each engine call pads little and the ETA is honest.
pub fn embed_texts(
    engine: &Engine,
    texts: &[String],
    prompt: &str,
    progress: &dyn Progress,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let opts = EmbedOptions { prompt: prompt.to_string(), normalize: Some(true), ..Default::default() };
    let toks = engine.tokenize_texts(texts, &opts)?;
    let total: usize = toks.iter().map(|t| t.len()).sum();
    let mut order: Vec<usize> = (0..toks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(toks[i].len()));
    progress.start("tokens", total as u64);
    let mut out = vec![Vec::new(); texts.len()];
    for chunk in order.chunks(EMBED_CHUNK) {
        let part: Vec<_> = chunk.iter().map(|&i| toks[i].clone()).collect();
        let e = engine.embed_tokens(&part, &opts)?;
        for (v, &i) in e.vectors.into_iter().zip(chunk) {
            out[i] = v;
        }
        progress.advance(e.tokens as u64);
    }
    progress.finish();
    Ok((out, total))
}

/// Where the corpus vectors came from.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheUse {
    /// Read from this file.
    Hit(PathBuf),
    /// Embedded and written to this file.
    Stored(PathBuf),
    /// Embedded; writing the cache failed (the evaluation is still valid).
    StoreFailed(String),
    /// Caching switched off.
    Off,
}

impl CacheUse {
    pub fn label(&self) -> &'static str {
        match self {
            CacheUse::Hit(_) => "hit",
            CacheUse::Stored(_) => "stored",
            CacheUse::StoreFailed(_) => "store-failed",
            CacheUse::Off => "off",
        }
    }
}

/// Cache key of a model's embeddings of a corpus with a document prompt.
pub fn corpus_cache_key(engine: &Engine, prompt: &str, corpus_sha256: &str) -> Result<cache::CacheKey> {
    let spec = &engine.spec;
    let mut key = cache::CacheKey::default();
    key.push("format", "1");
    key.push("embedrank", env!("CARGO_PKG_VERSION"));
    key.push("model", spec.name.clone());
    key.push("repo", spec.repo_id.clone().unwrap_or_default());
    key.push("commit", spec.commit.clone().unwrap_or_default());
    if spec.commit.is_none() {
        // A local folder has no revision: its location and file stamps stand in for one.
        let dir = spec.dir.canonicalize().unwrap_or_else(|_| spec.dir.clone());
        key.push("dir", dir.display().to_string());
    }
    // config.json carries the quantization entry (bits, group size) of MLX checkpoints.
    key.push("config_sha256", spec.config_sha256.clone());
    for w in &spec.weight_stamps {
        key.push("weights", format!("{}:{}:{}", w.name, w.bytes, w.mtime_ns));
    }
    key.push("dtype", format!("{:?}", engine.dtype));
    // Compute-path switches change the arithmetic (kernels, integer activations): vectors made under
    // other settings are never reused. Only the variables that pick a path count.
    for var in [
        "EMBEDRANK_CPU_FAST",
        "EMBEDRANK_PACKED_F32",
        "EMBEDRANK_QKERNEL",
        "EMBEDRANK_QKERNEL_INT",
        "EMBEDRANK_CUDA_KERNELS",
    ] {
        if let Some(v) = std::env::var_os(var) {
            key.push("env", format!("{var}={}", v.to_string_lossy()));
        }
    }
    key.push("quantized_at_load", format!("{:?}", engine.load_quant_bits));
    key.push(
        "device",
        if engine.device.is_cpu() {
            "cpu"
        } else if engine.device.is_cuda() {
            "cuda"
        } else {
            "metal"
        },
    );
    let pooling = match spec.head {
        Head::Pool(p) => p.as_str().to_string(),
        ref h => format!("{h:?}"),
    };
    key.push("pooling", pooling);
    key.push("pooling_excludes_prompt", spec.pooling_excludes_prompt.to_string());
    key.push("max_length", spec.max_length.to_string());
    key.push("prompt", prompt);
    key.push("normalized", "true");
    key.push("corpus_sha256", corpus_sha256);
    Ok(key)
}

/// Corpus vectors and how they were obtained.
pub struct CorpusEmbeddings {
    pub vectors: Vec<Vec<f32>>,
    pub cache: CacheUse,
    /// Tokens embedded (0 on a cache hit).
    pub tokens: usize,
    pub seconds: f64,
}

/// Embed the corpus, or read it from the cache in `cache_dir` (None: no caching).
pub fn embed_corpus(
    engine: &Engine,
    corpus: &beir::Corpus,
    prompt: &str,
    cache_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<CorpusEmbeddings> {
    let t0 = Instant::now();
    let key = match cache_dir {
        Some(_) => Some(corpus_cache_key(engine, prompt, &corpus.sha256)?),
        None => None,
    };
    if let (Some(dir), Some(key)) = (cache_dir, &key) {
        if let Some(vectors) = cache::load(dir, key, corpus.ids.len()) {
            let path = cache::path_for(dir, key);
            tracing::info!(path = %path.display(), "corpus embeddings from cache");
            return Ok(CorpusEmbeddings {
                vectors,
                cache: CacheUse::Hit(path),
                tokens: 0,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
    }
    let (vectors, tokens) = embed_texts(engine, &corpus.texts, prompt, progress)?;
    let cache = match (cache_dir, &key) {
        (Some(dir), Some(key)) => match cache::store(dir, key, &vectors) {
            Ok(p) => CacheUse::Stored(p),
            Err(e) => {
                tracing::warn!("corpus cache not written: {e}");
                CacheUse::StoreFailed(e.to_string())
            }
        },
        _ => CacheUse::Off,
    };
    Ok(CorpusEmbeddings { vectors, cache, tokens, seconds: t0.elapsed().as_secs_f64() })
}

/// The document prompt: the model's `document` prompt, else its `passage` prompt, else none.
pub fn document_prompt(spec: &ModelSpec, literal: Option<&str>) -> Result<String> {
    if let Some(p) = literal {
        return Ok(p.to_string());
    }
    let name = if spec.prompts.contains_key("document") { "document" } else { "passage" };
    spec.prompt_for(Some(name), None, None)
}

/// Every retrieval metric of `engine` on `set` with the model's own query and document prompts,
/// corpus embedded afresh (no cache): what `convert --calibrate --eval` measures.
pub fn retrieval_eval(engine: &Engine, set: &beir::BeirSet, progress: &dyn Progress) -> Result<metrics::Evaluation> {
    let qprompt = engine.spec.prompt_for(Some("query"), None, None)?;
    let dprompt = document_prompt(&engine.spec, None)?;
    let corpus = embed_corpus(engine, &set.corpus, &dprompt, None, progress)?;
    let qtexts: Vec<String> = set.queries.iter().map(|(_, q)| q.clone()).collect();
    let (qvecs, _) = embed_texts(engine, &qtexts, &qprompt, progress)?;
    let r = retrieve(set, &qvecs, &corpus.vectors, RETRIEVAL_DEPTH, false)?;
    Ok(metrics::evaluate(&set.qrels, &r.run, &all_metrics()))
}

/// Retrieved documents per query (indices into the corpus, best first) and the same as a run.
pub struct Retrieval {
    pub hits: Vec<Vec<(usize, f32)>>,
    pub run: Run,
}

/// Exact cosine search of every query of `set` over the corpus, `depth` docs per query.
/// `ignore_identical_ids` drops a document whose id equals the query's (BEIR's default, MTEB's
/// per-task option for sets like ArguAna and Quora where a query is also in the corpus).
pub fn retrieve(
    set: &beir::BeirSet,
    query_vectors: &[Vec<f32>],
    doc_vectors: &[Vec<f32>],
    depth: usize,
    ignore_identical_ids: bool,
) -> Result<Retrieval> {
    // One extra so dropping an identical id still leaves `depth`.
    let k = depth + ignore_identical_ids as usize;
    let mut hits = search::top_k(query_vectors, doc_vectors, &set.corpus.ids, k)?;
    let mut run = Run::new();
    for ((qid, _), h) in set.queries.iter().zip(hits.iter_mut()) {
        if ignore_identical_ids {
            h.retain(|(i, _)| set.corpus.ids[*i] != *qid);
        }
        h.truncate(depth);
        run.insert(qid.clone(), h.iter().map(|(i, s)| (set.corpus.ids[*i].clone(), *s as f64)).collect());
    }
    Ok(Retrieval { hits, run })
}

/// Rerank the top `top` hits of each query with a reranker; the run holds only those, scored by
/// the reranker (as BEIR's `Rerank` does). Raw scores (logits) are used: a sigmoid saturates to
/// 1.0 in f32 and would turn confident documents into ties.
pub fn rerank(
    reranker: &Engine,
    set: &beir::BeirSet,
    hits: &[Vec<(usize, f32)>],
    top: usize,
    progress: &dyn Progress,
) -> Result<Run> {
    let opts = RerankOptions { raw_scores: true, batch_size: Some(32), ..Default::default() };
    let mut run = Run::new();
    progress.start("queries", set.queries.len() as u64);
    for ((qid, query), h) in set.queries.iter().zip(hits) {
        let picked: Vec<usize> = h.iter().take(top).map(|(i, _)| *i).collect();
        if picked.is_empty() {
            run.insert(qid.clone(), Vec::new());
            continue;
        }
        let docs: Vec<String> = picked.iter().map(|&i| set.corpus.texts[i].clone()).collect();
        let results = reranker.rerank(query, &docs, &opts)?;
        run.insert(
            qid.clone(),
            results.into_iter().map(|r| (set.corpus.ids[picked[r.index]].clone(), r.relevance_score as f64)).collect(),
        );
        progress.advance(1);
    }
    progress.finish();
    Ok(run)
}

/// Spearman and Pearson (×1 scale, −1…1) of cosine similarity against the gold scores.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StsScores {
    pub spearman: f64,
    pub pearson: f64,
    pub pairs: usize,
}

/// Embed both sides of every pair with `prompt` and correlate cosine with the gold scores.
pub fn sts_scores(engine: &Engine, set: &sts::StsSet, prompt: &str, progress: &dyn Progress) -> Result<StsScores> {
    let mut texts: Vec<String> = Vec::with_capacity(set.pairs.len() * 2);
    for (a, b) in &set.pairs {
        texts.push(a.clone());
        texts.push(b.clone());
    }
    let (v, _) = embed_texts(engine, &texts, prompt, progress)?;
    let cos: Vec<f64> = v.chunks(2).map(|p| sts::cosine(&p[0], &p[1])).collect();
    Ok(StsScores {
        spearman: sts::spearman(&cos, &set.scores),
        pearson: sts::pearson(&cos, &set.scores),
        pairs: set.pairs.len(),
    })
}
