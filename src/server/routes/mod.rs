//! Route table and the parts every API shares: JSON bodies with JSON errors, embedding and
//! reranking through the model's batcher, health, readiness and metrics.

pub mod cohere;
pub mod openai;
pub mod openapi;
pub mod rerank;
pub mod root;
pub mod tei;

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::batcher::{Output, Work};
use super::errors::{ApiError, ApiResult};
use super::metrics::Hist;
use super::registry::Loaded;
use super::token_ids::TokenIds;
use super::Shared;
use crate::engine::{rerank as engine_rerank, EmbedOptions, RerankOptions, RerankResult, Tokens, Truncation};
use crate::spec::{Arch, Task};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/rerank", post(rerank::v1))
        .route("/v2/rerank", post(rerank::v2))
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route("/tokenize", post(tei::tokenize))
        .route("/info", get(tei::info))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/", get(root::describe).post(root::task))
        .route("/invocations", post(root::task))
        .route("/predict", post(root::predict))
        .route("/v1/embed", post(cohere::embed_v1))
        .route("/v2/embed", post(cohere::embed_v2))
        .route("/openapi.json", get(openapi::json))
        .route("/docs", get(openapi::page))
}

/// A JSON body whose errors are JSON too: 413 over the payload limit, 400 when it does not parse
/// or has the wrong shape. The Content-Type header is not required (curl users forget it).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body's bytes with [`JsonBody`]'s errors, for routes that look at a body before picking
/// its type (`POST /`).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("request body is larger than the server's payload limit")
            } else {
                ApiError::malformed(format!("cannot read request body: {}", r.body_text()))
            }
        })
    }
}

/// A JSON object body into `T`; 400 with the reason otherwise.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    // serde reads a JSON array into a struct field by field; every request body is an object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[') => return Err(ApiError::malformed("request body must be a JSON object, not an array")),
        _ => return Err(ApiError::malformed("request body must be a JSON object")),
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(format!("invalid JSON body: {e}")))
}

/// Embedding input: string | string[] | int[] | int[][] (token ids).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdsBatch(Vec<Vec<u32>>),
}

enum Inputs {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

impl Input {
    fn into_inputs(self) -> Inputs {
        match self {
            Input::Text(t) => Inputs::Texts(vec![t]),
            Input::Texts(t) => Inputs::Texts(t),
            Input::Ids(ids) => Inputs::Ids(vec![ids]),
            Input::IdsBatch(b) => Inputs::Ids(b),
        }
    }
}

/// How to pick the prompt for an embedding request.
#[derive(Debug, Default, Clone)]
pub struct PromptChoice {
    pub prompt_name: Option<String>,
    pub instruction: Option<String>,
    /// "query" | "document" (and Cohere's "search_query" | "search_document").
    pub input_type: Option<String>,
}

/// Whose vocabulary token-id input is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdsFrom {
    /// The model's `token_ids` setting decides (OpenAI routes).
    Configured,
    /// The model's own ids (TEI's semantics).
    Model,
}

pub struct EmbedCall {
    pub model: Option<String>,
    pub input: Input,
    pub ids_from: IdsFrom,
    pub prompt: PromptChoice,
    pub dimensions: Option<usize>,
    pub normalize: Option<bool>,
    pub truncation: Truncation,
}

pub struct Embedded {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

fn resolve_prompt(loaded: &Loaded, default_instruction: Option<&str>, p: &PromptChoice) -> ApiResult<String> {
    let spec = &loaded.engine.spec;
    let mut name = p.prompt_name.clone();
    let mut instruction = p.instruction.clone();
    if let Some(t) = p.input_type.as_deref() {
        if p.prompt_name.is_some() {
            return Err(ApiError::invalid("give either input_type or prompt_name, not both"));
        }
        match t {
            "query" | "search_query" => {
                // Instruction-aware models: the configured default instruction, if any, else the
                // model's own `query` prompt.
                if instruction.is_none() && spec.instruction_template.is_some() {
                    instruction = default_instruction.map(str::to_string);
                }
                if instruction.is_none() {
                    name = Some("query".into());
                }
            }
            "document" | "search_document" | "passage" => name = Some("document".into()),
            // Cohere's other input types: the model's prompt of that name, else none.
            "classification" | "clustering" if p.instruction.is_none() => match spec.prompts.contains_key(t) {
                true => name = Some(t.into()),
                false => return Ok(String::new()),
            },
            other => {
                return Err(ApiError::invalid(format!(
                    "input_type must be `query` or `document` (or search_query / search_document / \
                     classification / clustering), got `{other}`"
                )))
            }
        }
    }
    Ok(spec.prompt_for(name.as_deref(), None, instruction.as_deref())?)
}

/// Counts a request as dropped if its future is dropped (client gone, timeout) before it reaches
/// the worker's queue; from there on the worker counts drops itself.
struct GoneGuard<'a> {
    st: &'a Shared,
    model: String,
    armed: bool,
}

impl Drop for GoneGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.st.metrics.dropped(&self.model);
        }
    }
}

/// Tokenize, queue on the model's worker, wait for vectors.
pub async fn embed(st: &Shared, call: EmbedCall) -> ApiResult<Embedded> {
    let slot = st.registry.find(call.model.as_deref(), Task::Embed)?;
    if slot.spec.task != Task::Embed {
        return Err(crate::Error::WrongTask {
            model: slot.id().to_string(),
            actual: slot.spec.task.as_str(),
            wanted: Task::Embed.as_str(),
        }
        .into());
    }
    if call.dimensions == Some(0) {
        return Err(ApiError::invalid("dimensions must be at least 1"));
    }
    let mut inputs = call.input.into_inputs();
    let n = match &inputs {
        Inputs::Texts(t) => t.len(),
        Inputs::Ids(i) => i.len(),
    };
    if n == 0 {
        return Err(ApiError::invalid("input must not be empty"));
    }
    let caps = st.registry.caps;
    if n > caps.max_client_batch_size {
        return Err(too_many(n, "inputs", caps.max_client_batch_size, "max_client_batch_size"));
    }
    let loaded = st.registry.get(slot).await?;
    let engine = loaded.engine.clone();
    engine.check_dimensions(call.dimensions)?;
    if let (Inputs::Ids(rows), IdsFrom::Configured) = (&inputs, call.ids_from) {
        match slot.cfg.token_ids.unwrap_or_default() {
            TokenIds::Openai => {
                // A few bytes past what the tokenizer keeps, so an over-long input stays over-long.
                let limit = engine.tokenizer.char_limit().saturating_mul(4).saturating_add(4);
                inputs = Inputs::Texts(super::token_ids::decode_openai(rows, limit)?);
            }
            TokenIds::Model => {}
            TokenIds::Reject => {
                return Err(ApiError::invalid(format!(
                    "model `{}` does not take token ids (token_ids = \"reject\"); send text",
                    slot.id()
                )))
            }
        }
    }
    let prompt = resolve_prompt(&loaded, slot.cfg.instruction.as_deref(), &call.prompt)?;
    let model = slot.id().to_string();
    let mut guard = GoneGuard { st, model: model.clone(), armed: true };
    let truncation = call.truncation;
    // Admission before any work: an upper bound of the tokens from byte lengths.
    let max = engine.tokenizer.max_length();
    let estimate: usize = match &inputs {
        Inputs::Texts(t) => {
            let fixed = prompt.len() + engine.tokenizer.added_tokens(false) + engine.spec.append_eos.is_some() as usize;
            t.iter().map(|x| (fixed + x.len()).min(max)).sum()
        }
        Inputs::Ids(i) => i.iter().map(|x| x.len().clamp(1, max)).sum(),
    };
    let permit = loaded.batcher.admit_wait(estimate, caps.admission_wait).await?;
    let busy = loaded.batcher.tokenizing.clone().acquire_owned().await;
    let busy = busy.map_err(|_| ApiError::internal("model is shutting down"))?;
    let t0 = Instant::now();
    let eng = engine.clone();
    // The permits travel with the blocking task: a client that goes away does not free its place
    // while its tokenization still runs.
    let (toks, prompt_len, mut permit) =
        tokio::task::spawn_blocking(move || -> ApiResult<(Vec<Tokens>, usize, super::batcher::Permit)> {
            let _busy = busy;
            match inputs {
                Inputs::Texts(texts) => {
                    let opts = EmbedOptions { prompt: prompt.clone(), truncation, ..Default::default() };
                    let toks = eng.tokenize_texts(&texts, &opts)?;
                    let prompt_len = if eng.spec.pooling_excludes_prompt && !prompt.is_empty() {
                        eng.tokenizer.prompt_length(&prompt)?
                    } else {
                        0
                    };
                    Ok((toks, prompt_len, permit))
                }
                Inputs::Ids(ids) => {
                    if !prompt.is_empty() {
                        return Err(ApiError::invalid("prompts and instructions cannot be applied to token-id input"));
                    }
                    Ok((token_inputs(&eng, ids, truncation)?, 0, permit))
                }
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    st.metrics.observe_time(Hist::TokenizeSeconds, &model, t0.elapsed());
    let tokens = toks.iter().map(Tokens::len).sum();
    permit.resize(tokens, caps.max_queue_tokens);
    let work = Work::Embed {
        prompt_len,
        dimensions: call.dimensions,
        normalize: call.normalize.unwrap_or(engine.spec.normalize),
    };
    guard.armed = false;
    let rx = loaded.batcher.submit(work, toks, permit)?;
    match rx.await {
        Ok(Ok(Output::Vectors(vectors))) => Ok(Embedded { model, vectors, tokens }),
        Ok(Ok(Output::Scores(_))) => Err(ApiError::internal("worker returned scores for an embedding request")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::internal("model worker stopped")),
    }
}

/// Token-id inputs: checked against the vocabulary, cut to the max length when truncating.
fn token_inputs(engine: &crate::engine::Engine, ids: Vec<Vec<u32>>, truncation: Truncation) -> ApiResult<Vec<Tokens>> {
    let vocab = match &engine.spec.arch {
        Arch::Bert(c) => c.vocab_size,
        Arch::Qwen3(c) => c.vocab_size,
    };
    let max = engine.tokenizer.max_length();
    ids.into_iter()
        .enumerate()
        .map(|(i, mut row)| {
            if row.is_empty() {
                return Err(ApiError::invalid(format!("input {i} has no token ids")));
            }
            if let Some(bad) = row.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::invalid(format!(
                    "input {i}: token id {bad} is outside the vocabulary (size {vocab})"
                )));
            }
            if row.len() > max {
                match truncation {
                    Truncation::Refuse => {
                        return Err(crate::Error::InputTooLong { index: i, tokens: row.len(), max }.into())
                    }
                    Truncation::End => row.truncate(max),
                    Truncation::Start => {
                        row.drain(..row.len() - max);
                    }
                }
            }
            Ok(Tokens { type_ids: vec![0; row.len()], ids: row })
        })
        .collect()
}

pub struct RerankCall {
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<String>,
    pub top_n: Option<usize>,
    pub return_documents: bool,
    pub raw_scores: bool,
    pub truncate: bool,
    pub max_tokens_per_doc: Option<usize>,
    pub instruction: Option<String>,
}

pub struct Reranked {
    pub model: String,
    pub results: Vec<RerankResult>,
    pub tokens: usize,
}

pub async fn rerank(st: &Shared, call: RerankCall) -> ApiResult<Reranked> {
    if call.documents.is_empty() {
        return Err(ApiError::invalid("documents must not be empty"));
    }
    if call.top_n == Some(0) {
        return Err(ApiError::invalid("top_n must be at least 1"));
    }
    if call.max_tokens_per_doc == Some(0) {
        return Err(ApiError::invalid("max_tokens_per_doc must be at least 1"));
    }
    let slot = st.registry.find(call.model.as_deref(), Task::Rerank)?;
    if slot.spec.task != Task::Rerank {
        return Err(crate::Error::WrongTask {
            model: slot.id().to_string(),
            actual: slot.spec.task.as_str(),
            wanted: Task::Rerank.as_str(),
        }
        .into());
    }
    let caps = st.registry.caps;
    if call.documents.len() > caps.max_rerank_documents {
        return Err(too_many(call.documents.len(), "documents", caps.max_rerank_documents, "max_rerank_documents"));
    }
    let loaded = st.registry.get(slot).await?;
    let model = slot.id().to_string();
    let instruction = call.instruction.or_else(|| slot.cfg.instruction.clone());
    let mut guard = GoneGuard { st, model: model.clone(), armed: true };
    // Admission before any work: each pair holds at most the max length, and at most its bytes
    // plus the template's.
    let max = loaded.engine.tokenizer.max_length();
    let fixed = call.query.len()
        + instruction.as_ref().map_or(0, String::len)
        + loaded.engine.tokenizer.added_tokens(true)
        + loaded
            .engine
            .spec
            .rerank_template
            .as_ref()
            .map_or(0, |t| t.prefix.len() + t.suffix.len() + t.body(&t.default_instruction, "", "").len());
    let estimate: usize = call.documents.iter().map(|d| (fixed + d.len()).min(max)).sum();
    let permit = loaded.batcher.admit_wait(estimate, caps.admission_wait).await?;
    let busy = loaded.batcher.tokenizing.clone().acquire_owned().await;
    let busy = busy.map_err(|_| ApiError::internal("model is shutting down"))?;
    let t0 = Instant::now();
    let lo = loaded.clone();
    let (query, docs, max_doc, truncate) = (call.query, call.documents, call.max_tokens_per_doc, call.truncate);
    let (toks, docs, mut permit) =
        tokio::task::spawn_blocking(move || -> ApiResult<(Vec<Tokens>, Vec<String>, super::batcher::Permit)> {
            let _busy = busy;
            let opts = RerankOptions { instruction, no_truncate: !truncate, ..Default::default() };
            let toks = match max_doc {
                Some(n) => {
                    let limit = lo.engine.tokenizer.char_limit();
                    let cut: Vec<String> =
                        docs.iter().map(|d| first_tokens(&lo.tokenizer, d, n, limit)).collect::<ApiResult<_>>()?;
                    engine_rerank::tokenize_pairs(&lo.engine, &query, &cut, &opts)?
                }
                None => engine_rerank::tokenize_pairs(&lo.engine, &query, &docs, &opts)?,
            };
            Ok((toks, docs, permit))
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    st.metrics.observe_time(Hist::TokenizeSeconds, &model, t0.elapsed());
    let tokens = toks.iter().map(Tokens::len).sum();
    permit.resize(tokens, caps.max_queue_tokens);
    guard.armed = false;
    let rx = loaded.batcher.submit(Work::Score { raw: call.raw_scores }, toks, permit)?;
    let scores = match rx.await {
        Ok(Ok(Output::Scores(s))) => s,
        Ok(Ok(Output::Vectors(_))) => return Err(ApiError::internal("worker returned vectors for a rerank request")),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ApiError::internal("model worker stopped")),
    };
    let mut results: Vec<RerankResult> = scores
        .into_iter()
        .enumerate()
        .map(|(index, relevance_score)| RerankResult {
            index,
            relevance_score,
            document: call.return_documents.then(|| docs[index].clone()),
        })
        .collect();
    // Same order as the engine's rerank: best first, ties by input position.
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score).then(a.index.cmp(&b.index)));
    if let Some(n) = call.top_n {
        results.truncate(n);
    }
    Ok(Reranked { model, results, tokens })
}

/// The text of `doc` up to the end of its `n`-th token (Cohere's `max_tokens_per_doc`), cut at a
/// token boundary of the original string so nothing is re-spelled by decoding.
fn first_tokens(tok: &tokenizers::Tokenizer, doc: &str, n: usize, char_limit: usize) -> ApiResult<String> {
    // Cut by characters first, as every text is (the n tokens kept are within the cut for any
    // normal text): a long document costs no more to cut than a short one.
    let doc = crate::engine::tokenize::cut_chars(doc, char_limit);
    let enc = tok.encode(doc, false).map_err(|e| ApiError::internal(format!("tokenizer: {e}")))?;
    let offsets = enc.get_offsets();
    if offsets.len() <= n {
        return Ok(doc.to_string());
    }
    let end = offsets[n - 1].1;
    Ok(doc.get(..end).unwrap_or(doc).to_string())
}

async fn health(State(st): State<Shared>) -> Response {
    if st.shutting_down.load(Ordering::SeqCst) {
        return ApiError::not_ready("shutting down").into_response();
    }
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn ready(State(st): State<Shared>) -> Response {
    if st.shutting_down.load(Ordering::SeqCst) {
        return ApiError::not_ready("shutting down").into_response();
    }
    if !st.ready.load(Ordering::SeqCst) {
        let missing: Vec<String> =
            st.registry.slots.iter().filter(|s| !s.is_loaded()).map(|s| s.id().to_string()).collect();
        return ApiError::not_ready(format!("models still loading: {}", missing.join(", "))).into_response();
    }
    let loaded: Vec<&str> = st.registry.slots.iter().filter(|s| s.is_loaded()).map(|s| s.id()).collect();
    axum::Json(serde_json::json!({ "status": "ready", "loaded": loaded })).into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

/// 413 for a request with more inputs than the server takes at once.
pub fn too_many(n: usize, what: &str, limit: usize, setting: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "too_many_inputs",
        format!("{n} {what} in one request; this server takes at most {limit} ({setting}); split the request"),
    )
}

/// A short unique id for responses that carry one.
pub fn response_id(prefix: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}-{t:x}{:04x}", COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff)
}
