//! `embedrank eval`: retrieval quality on a BEIR folder (optionally reranked), sentence similarity
//! on an STS file, one model or two side by side (`--compare`, e.g. float vs 4-bit).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use embedrank::engine::Engine;
use embedrank::eval::metrics::{self, Metric};
use embedrank::eval::{self, beir, sts, CacheUse, Progress, StsScores};
use embedrank::spec::Task;
use serde_json::{json, Value};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Qrels split to evaluate (qrels/<split>.tsv).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Sentence-similarity file (STS-B tab-separated layout) for Spearman/Pearson.
    #[arg(long, value_name = "FILE")]
    pub sts: Option<PathBuf>,
    /// Second embedding model (e.g. a 4-bit copy) run on the same data, shown side by side.
    #[arg(long, value_name = "MODEL")]
    pub compare: Option<String>,
    /// Reranker: rerank each query's top --rerank-top documents and report that row too.
    #[arg(long, value_name = "MODEL")]
    pub reranker: Option<String>,
    /// Documents per query passed to the reranker.
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub rerank_top: usize,
    /// Query instruction for instruction-aware models (default: the model's query prompt).
    #[arg(long, conflicts_with = "query_prompt")]
    pub instruction: Option<String>,
    /// Literal query prompt (default: the model's `query` prompt, none for most BERT models).
    #[arg(long)]
    pub query_prompt: Option<String>,
    /// Literal document prompt (default: the model's `document`/`passage` prompt, usually none).
    #[arg(long)]
    pub document_prompt: Option<String>,
    /// Literal prompt for both sentences of STS pairs (default: the model's default prompt, if any).
    #[arg(long)]
    pub sts_prompt: Option<String>,
    /// Drop a retrieved document whose id equals the query id (BEIR's default; MTEB sets it for
    /// ArguAna, Quora and a few others).
    #[arg(long)]
    pub ignore_identical_ids: bool,
    /// Corpus embedding cache folder (default: the user cache dir, embedrank/eval).
    #[arg(long, value_name = "DIR", env = "EMBEDRANK_EVAL_CACHE")]
    pub eval_cache: Option<PathBuf>,
    /// Embed the corpus even if cached, and do not write the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// One JSON document on stdout instead of tables (metrics as fractions, 0…1).
    #[arg(long)]
    pub json: bool,
    /// Try a subset first: the first N queries of the split (by id).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queries: Option<u64>,
    /// Corpus subset: every document judged for the kept queries, then the corpus's first documents
    /// up to M in all.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_docs: Option<u64>,
}

/// A progress bar on a terminal; off a terminal (and without --json) a plain line on stderr every
/// 30 seconds, so a long run in a log or CI is never silent.
struct Bar {
    bar: indicatif::ProgressBar,
    label: String,
    lines: Option<std::sync::Mutex<LineProgress>>,
}

struct LineProgress {
    unit: String,
    total: u64,
    done: u64,
    started: std::time::Instant,
    last: std::time::Instant,
}

const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Bar {
    fn new(show: Show, label: String) -> Self {
        let bar = if show == Show::Bar { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
        let lines = (show == Show::Lines).then(|| {
            let now = std::time::Instant::now();
            std::sync::Mutex::new(LineProgress { unit: String::new(), total: 0, done: 0, started: now, last: now })
        });
        Bar { bar, label, lines }
    }

    fn line(&self, p: &LineProgress) {
        let secs = p.started.elapsed().as_secs_f64().max(1e-9);
        let rate = p.done as f64 / secs;
        let eta =
            if rate > 0.0 { format!("{:.0} s", p.total.saturating_sub(p.done) as f64 / rate) } else { "?".into() };
        let pct = if p.total > 0 { 100.0 * p.done as f64 / p.total as f64 } else { 100.0 };
        eprintln!("{}: {}/{} {} ({pct:.0}%), {rate:.0} {}/s, eta {eta}", self.label, p.done, p.total, p.unit, p.unit);
    }
}

/// How a run shows progress.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Show {
    Bar,
    Lines,
    Nothing,
}

impl Progress for Bar {
    fn start(&self, unit: &str, total: u64) {
        if let Some(l) = &self.lines {
            if let Ok(mut p) = l.lock() {
                let now = std::time::Instant::now();
                *p = LineProgress { unit: unit.to_string(), total, done: 0, started: now, last: now };
                eprintln!("{}: {total} {unit} to go", self.label);
            }
        }
        let tpl = format!("{{msg}} {{bar:30}} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}");
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(&tpl).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        self.bar.set_message(self.label.clone());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.reset_eta();
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
        if let Some(l) = &self.lines {
            if let Ok(mut p) = l.lock() {
                p.done += n;
                if p.last.elapsed() >= LINE_EVERY {
                    p.last = std::time::Instant::now();
                    self.line(&p);
                }
            }
        }
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(l) = &self.lines {
            if let Ok(p) = l.lock() {
                self.line(&p);
            }
        }
    }
}

/// Seconds spent in each step of one model's evaluation.
#[derive(Default, Debug, Clone, serde::Serialize)]
struct Timing {
    load: f64,
    corpus: f64,
    queries: f64,
    search: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rerank: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sts: Option<f64>,
    total: f64,
}

struct RetrievalRow {
    label: String,
    reranker: Option<String>,
    eval: metrics::Evaluation,
}

struct ModelResult {
    name: String,
    rows: Vec<RetrievalRow>,
    corpus_cache: Option<CacheUse>,
    corpus_tokens: usize,
    sts: Option<StsScores>,
    timing: Timing,
}

fn model_args_for(base: &ModelArgs, model: &str, reranker: bool) -> ModelArgs {
    let mut m = base.clone();
    m.model = model.to_string();
    if reranker {
        // The reranker keeps its own task detection, max length and head; only device, dtype and
        // hub caches are shared.
        m.task = None;
        m.pooling = None;
        m.max_length = None;
    }
    m
}

fn load_engine(args: &ModelArgs, want: Task) -> Result<Engine> {
    let engine = args.engine().with_context(|| format!("loading `{}`", args.model))?;
    if engine.spec.task != want {
        bail!("`{}` is {}, not {}", args.model, engine.spec.task.as_str(), want.as_str());
    }
    Ok(engine)
}

pub fn run(a: EvalArgs) -> Result<ExitCode> {
    if a.data.is_none() && a.sts.is_none() {
        bail!("nothing to evaluate: give --data DIR (BEIR folder) and/or --sts FILE");
    }
    if a.reranker.is_some() && a.data.is_none() {
        bail!("--reranker needs --data (a BEIR folder to rerank)");
    }
    if a.rerank_top == 0 {
        bail!("--rerank-top must be at least 1");
    }
    let show = match (a.json, std::io::stderr().is_terminal()) {
        (true, _) => Show::Nothing,
        (false, true) => Show::Bar,
        (false, false) => Show::Lines,
    };
    let cache_dir = if a.no_cache { None } else { a.eval_cache.clone().or_else(eval::cache::default_dir) };

    // Data first: a bad file should fail before minutes of model loading.
    let set = match &a.data {
        Some(d) => {
            let set = beir::load(d, &a.split)?;
            Some(if a.max_queries.is_some() || a.max_docs.is_some() {
                let sub = set.subset(a.max_queries, a.max_docs);
                eprintln!(
                    "note: evaluating a subset: {} of {} queries, {} of {} documents (every document judged for \
                     those queries kept); scores are not comparable with full-set results",
                    sub.queries.len(),
                    set.queries.len(),
                    sub.corpus.ids.len(),
                    set.corpus.ids.len()
                );
                sub
            } else {
                set
            })
        }
        None => None,
    };
    let sts_set = match &a.sts {
        Some(p) => Some(sts::load(p)?),
        None => None,
    };
    let reranker = match &a.reranker {
        Some(r) => Some(load_engine(&model_args_for(&a.model, r, true), Task::Rerank)?),
        None => None,
    };
    let depth = eval::RETRIEVAL_DEPTH.max(a.rerank_top);

    let mut results = Vec::new();
    let mut names = vec![a.model.model.clone()];
    names.extend(a.compare.clone());
    for name in &names {
        let margs = model_args_for(&a.model, name, false);
        results.push(evaluate_model(
            &a,
            &margs,
            set.as_ref(),
            sts_set.as_ref(),
            reranker.as_ref(),
            cache_dir.as_deref(),
            depth,
            show,
        )?);
    }

    if a.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&a, set.as_ref(), sts_set.as_ref(), &results, depth))?);
    } else {
        print_tables(&a, set.as_ref(), sts_set.as_ref(), &results, depth);
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn evaluate_model(
    a: &EvalArgs,
    margs: &ModelArgs,
    set: Option<&beir::BeirSet>,
    sts_set: Option<&sts::StsSet>,
    reranker: Option<&Engine>,
    cache_dir: Option<&Path>,
    depth: usize,
    show: Show,
) -> Result<ModelResult> {
    let t_all = Instant::now();
    let mut timing = Timing::default();
    let t = Instant::now();
    let engine = load_engine(margs, Task::Embed)?;
    timing.load = t.elapsed().as_secs_f64();
    let name = engine.spec.name.clone();
    let mut out = ModelResult {
        name: name.clone(),
        rows: Vec::new(),
        corpus_cache: None,
        corpus_tokens: 0,
        sts: None,
        timing: Timing::default(),
    };

    if let Some(set) = set {
        let qprompt = engine.spec.prompt_for(Some("query"), a.query_prompt.as_deref(), a.instruction.as_deref())?;
        let dprompt = eval::document_prompt(&engine.spec, a.document_prompt.as_deref())?;
        tracing::info!(model = %name, query_prompt = %qprompt, document_prompt = %dprompt, "prompts");
        let bar = Bar::new(show, format!("{name}: corpus"));
        let corpus = eval::embed_corpus(&engine, &set.corpus, &dprompt, cache_dir, &bar)?;
        timing.corpus = corpus.seconds;
        out.corpus_tokens = corpus.tokens;
        out.corpus_cache = Some(corpus.cache.clone());

        let t = Instant::now();
        let qtexts: Vec<String> = set.queries.iter().map(|(_, q)| q.clone()).collect();
        let bar = Bar::new(show, format!("{name}: queries"));
        let (qvecs, _) = eval::embed_texts(&engine, &qtexts, &qprompt, &bar)?;
        timing.queries = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let retrieval = eval::retrieve(set, &qvecs, &corpus.vectors, depth, a.ignore_identical_ids)?;
        timing.search = t.elapsed().as_secs_f64();
        let all = eval::all_metrics();
        let run = truncate_run(&retrieval.run, eval::RETRIEVAL_DEPTH);
        out.rows.push(RetrievalRow {
            label: name.clone(),
            reranker: None,
            eval: metrics::evaluate(&set.qrels, &run, &all),
        });

        if let Some(r) = reranker {
            let t = Instant::now();
            let bar = Bar::new(show, format!("{name}: rerank"));
            let rrun = eval::rerank(r, set, &retrieval.hits, a.rerank_top, &bar)?;
            timing.rerank = Some(t.elapsed().as_secs_f64());
            out.rows.push(RetrievalRow {
                label: format!("{name} + {} (top {})", r.spec.name, a.rerank_top),
                reranker: Some(r.spec.name.clone()),
                eval: metrics::evaluate(&set.qrels, &rrun, &all),
            });
        }
    }
    if let Some(s) = sts_set {
        let t = Instant::now();
        let prompt = engine.spec.prompt_for(None, a.sts_prompt.as_deref(), None)?;
        let bar = Bar::new(show, format!("{name}: sts"));
        out.sts = Some(eval::sts_scores(&engine, s, &prompt, &bar)?);
        timing.sts = Some(t.elapsed().as_secs_f64());
    }
    timing.total = t_all.elapsed().as_secs_f64();
    out.timing = timing;
    Ok(out)
}

/// The first `n` of each query's (already best-first) list: the plain retrieval row is scored on
/// the same depth whatever --rerank-top is.
fn truncate_run(run: &metrics::Run, n: usize) -> metrics::Run {
    run.iter()
        .map(|(q, docs)| {
            let ranked: Vec<(String, f64)> =
                metrics::rank(docs).into_iter().take(n).map(|(d, s)| (d.to_string(), s)).collect();
            (q.clone(), ranked)
        })
        .collect()
}

fn metrics_json(e: &metrics::Evaluation) -> Value {
    let m: serde_json::Map<String, Value> = e.metrics.iter().zip(&e.mean).map(|(m, v)| (m.name(), json!(v))).collect();
    Value::Object(m)
}

fn diff_json(a: &metrics::Evaluation, b: &metrics::Evaluation) -> Value {
    let m: serde_json::Map<String, Value> =
        b.metrics.iter().zip(&b.mean).filter_map(|(m, v)| a.get(*m).map(|av| (m.name(), json!(v - av)))).collect();
    Value::Object(m)
}

fn to_json(
    a: &EvalArgs,
    set: Option<&beir::BeirSet>,
    sts_set: Option<&sts::StsSet>,
    results: &[ModelResult],
    depth: usize,
) -> Value {
    let mut doc = serde_json::Map::new();
    if let Some(set) = set {
        let rows: Vec<Value> = results
            .iter()
            .flat_map(|r| {
                r.rows.iter().map(move |row| {
                    json!({
                        "model": r.name,
                        "reranker": row.reranker,
                        "rerank_top": row.reranker.as_ref().map(|_| a.rerank_top),
                        "queries": row.eval.queries(),
                        "metrics": metrics_json(&row.eval),
                        "corpus_cache": r.corpus_cache.as_ref().map(CacheUse::label),
                        "corpus_tokens": r.corpus_tokens,
                    })
                })
            })
            .collect();
        let mut differences = Vec::new();
        if let [base, other] = results {
            for (ra, rb) in base.rows.iter().zip(&other.rows) {
                differences.push(json!({
                    "baseline": ra.label, "model": rb.label, "metrics": diff_json(&ra.eval, &rb.eval)
                }));
            }
        }
        doc.insert(
            "retrieval".into(),
            json!({
                "data": set.dir.display().to_string(),
                "split": set.split,
                "queries": set.queries.len(),
                "documents": set.corpus.ids.len(),
                "judged_docs_missing_from_corpus": set.missing_docs,
                "depth": depth,
                "ignore_identical_ids": a.ignore_identical_ids,
                "rows": rows,
                "differences": differences,
            }),
        );
    }
    if let Some(s) = sts_set {
        let rows: Vec<Value> = results
            .iter()
            .filter_map(|r| r.sts.map(|x| json!({"model": r.name, "spearman": x.spearman, "pearson": x.pearson})))
            .collect();
        let mut obj = json!({ "file": s.path.display().to_string(), "pairs": s.pairs.len(), "rows": rows });
        if let [ra, rb] = results {
            if let (Some(x), Some(y)) = (ra.sts, rb.sts) {
                obj["difference"] = json!({"baseline": ra.name, "model": rb.name,
                    "spearman": y.spearman - x.spearman, "pearson": y.pearson - x.pearson});
            }
        }
        doc.insert("sts".into(), obj);
    }
    let timing: Vec<Value> = results.iter().map(|r| json!({"model": r.name, "seconds": r.timing})).collect();
    doc.insert("timing".into(), Value::Array(timing));
    Value::Object(doc)
}

fn print_tables(
    a: &EvalArgs,
    set: Option<&beir::BeirSet>,
    sts_set: Option<&sts::StsSet>,
    results: &[ModelResult],
    depth: usize,
) {
    let headline: &[Metric] = &metrics::HEADLINE;
    let rows: Vec<&RetrievalRow> = results.iter().flat_map(|r| &r.rows).collect();
    let mut width = rows.iter().map(|r| r.label.len()).max().unwrap_or(5).max(12);
    width = width.max(results.iter().map(|r| r.name.len()).max().unwrap_or(0));
    if let Some(set) = set {
        println!(
            "Retrieval: {} (split {}): {} queries, {} documents; exact cosine, top {depth}{}",
            set.dir.display(),
            set.split,
            set.queries.len(),
            set.corpus.ids.len(),
            if a.ignore_identical_ids { ", identical ids ignored" } else { "" }
        );
        print!("{:<width$}", "model");
        for m in headline {
            print!("  {:>10}", m.label());
        }
        println!();
        for row in &rows {
            print!("{:<width$}", row.label);
            for m in headline {
                print!("  {:>10.2}", row.eval.get(*m).unwrap_or(f64::NAN) * 100.0);
            }
            println!();
        }
        if let [base, other] = results {
            for (ra, rb) in base.rows.iter().zip(&other.rows) {
                let label = if ra.reranker.is_some() { "difference (reranked)" } else { "difference (2nd − 1st)" };
                print!("{label:<width$}");
                for m in headline {
                    let d = rb.eval.get(*m).unwrap_or(f64::NAN) - ra.eval.get(*m).unwrap_or(f64::NAN);
                    print!("  {:>+10.2}", d * 100.0);
                }
                println!();
            }
        }
        if set.missing_docs > 0 {
            println!("note: {} judged documents are not in the corpus", set.missing_docs);
        }
    }
    if let Some(s) = sts_set {
        if set.is_some() {
            println!();
        }
        println!("STS: {}: {} pairs; cosine vs gold", s.path.display(), s.pairs.len());
        println!("{:<width$}  {:>10}  {:>10}", "model", "Spearman", "Pearson");
        for r in results {
            if let Some(x) = r.sts {
                println!("{:<width$}  {:>10.2}  {:>10.2}", r.name, x.spearman * 100.0, x.pearson * 100.0);
            }
        }
        if let [ra, rb] = results {
            if let (Some(x), Some(y)) = (ra.sts, rb.sts) {
                println!(
                    "{:<width$}  {:>+10.2}  {:>+10.2}",
                    "difference (2nd − 1st)",
                    (y.spearman - x.spearman) * 100.0,
                    (y.pearson - x.pearson) * 100.0
                );
            }
        }
    }
    println!();
    for r in results {
        let t = &r.timing;
        let corpus = match &r.corpus_cache {
            Some(CacheUse::Hit(p)) => format!("corpus {:.1}s (cache hit: {})", t.corpus, p.display()),
            Some(CacheUse::Stored(p)) => {
                format!("corpus {:.1}s ({} tokens embedded; cached at {})", t.corpus, r.corpus_tokens, p.display())
            }
            Some(CacheUse::StoreFailed(e)) => format!("corpus {:.1}s (cache not written: {e})", t.corpus),
            Some(CacheUse::Off) => format!("corpus {:.1}s (no cache)", t.corpus),
            None => String::new(),
        };
        let mut parts = vec![format!("load {:.1}s", t.load)];
        if !corpus.is_empty() {
            parts.push(corpus);
            parts.push(format!("queries {:.1}s", t.queries));
            parts.push(format!("search {:.2}s", t.search));
        }
        if let Some(x) = t.rerank {
            parts.push(format!("rerank {x:.1}s"));
        }
        if let Some(x) = t.sts {
            parts.push(format!("sts {x:.1}s"));
        }
        parts.push(format!("total {:.1}s", t.total));
        println!("time {}: {}", r.name, parts.join(", "));
    }
}
