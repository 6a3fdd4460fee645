//! Text Embeddings Inference routes: `POST /embed`, `/rerank`, `/tokenize`, `GET /info`.
//! TEI serves one model; here the optional `model` field (or `?model=` on /info) picks one, and
//! without it the first model of the right kind answers.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{EmbedCall, Input, JsonBody, PromptChoice, RerankCall};
use crate::engine::tokenize::cut_chars;
use crate::engine::Truncation;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::Shared;
use crate::spec::{Head, Task};

/// TEI's `truncate` and `truncation_direction` (`right` keeps the start, `left` the end).
fn truncation(truncate: Option<bool>, direction: &Option<String>) -> ApiResult<Truncation> {
    let left = match direction.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("right") => false,
        Some("left") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!("truncation_direction must be `right` or `left`, got `{other}`")))
        }
    };
    Ok(match (truncate.unwrap_or(true), left) {
        (false, _) => Truncation::Refuse,
        (true, false) => Truncation::End,
        (true, true) => Truncation::Start,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = TeiEmbedRequest)]
pub struct EmbedRequest {
    pub inputs: Input,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub truncation_direction: Option<String>,
    #[serde(default)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub normalize: Option<bool>,
    #[serde(default)]
    pub dimensions: Option<usize>,
    #[serde(default)]
    pub model: Option<String>,
}

/// Vectors only, one per input: `[[...], ...]`. `normalize` defaults to true, as in TEI.
pub async fn embed_route(st: &Shared, req: EmbedRequest) -> ApiResult<Json<Vec<Vec<f32>>>> {
    let truncation = truncation(req.truncate, &req.truncation_direction)?;
    let e = super::embed(
        st,
        EmbedCall {
            model: req.model,
            input: req.inputs,
            ids_from: super::IdsFrom::Model,
            prompt: PromptChoice { prompt_name: req.prompt_name, ..Default::default() },
            dimensions: req.dimensions,
            normalize: Some(req.normalize.unwrap_or(true)),
            truncation,
        },
    )
    .await?;
    Ok(Json(e.vectors))
}

pub async fn embed(State(st): State<Shared>, JsonBody(req): JsonBody<EmbedRequest>) -> ApiResult<Json<Vec<Vec<f32>>>> {
    embed_route(&st, req).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = TeiRerankRequest)]
pub struct RerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub truncation_direction: Option<String>,
    #[serde(default)]
    pub raw_scores: Option<bool>,
    #[serde(default)]
    pub return_text: Option<bool>,
    #[serde(default)]
    pub model: Option<String>,
}

/// A TEI rerank result, serialized straight from the f32 score.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TeiRank)]
pub struct Rank {
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `[{"index", "score", "text"?}]`, best first.
pub async fn rerank(State(st): State<Shared>, JsonBody(req): JsonBody<RerankRequest>) -> ApiResult<Json<Vec<Rank>>> {
    if truncation(req.truncate, &req.truncation_direction)? == Truncation::Start {
        return Err(ApiError::invalid(
            "truncation_direction `left` is not supported for reranking (pairs are cut longest-first); use `right`",
        ));
    }
    let r = super::rerank(
        &st,
        RerankCall {
            model: req.model,
            query: req.query,
            documents: req.texts,
            top_n: None,
            return_documents: req.return_text.unwrap_or(false),
            raw_scores: req.raw_scores.unwrap_or(false),
            truncate: req.truncate.unwrap_or(true),
            max_tokens_per_doc: None,
            instruction: None,
        },
    )
    .await?;
    Ok(Json(
        r.results.into_iter().map(|x| Rank { index: x.index, score: x.relevance_score, text: x.document }).collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TextOrTexts {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenizeRequest {
    pub inputs: TextOrTexts,
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    #[serde(default)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// One token of a /tokenize answer, serialized straight from these fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPiece {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

/// `[[{"id", "text", "special", "start", "stop"}]]` with byte offsets into the (prompted) input.
/// Inside the same limits as embedding: at most `max_client_batch_size` inputs, each cut to 16
/// characters per token of the max length, the whole answer's estimated tokens admitted in the
/// model's queue first (429 when it is full, 413 when one request alone is larger than it).
pub async fn tokenize(
    State(st): State<Shared>,
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> ApiResult<Json<Vec<Vec<TokenPiece>>>> {
    let slot = match req.model.as_deref() {
        Some(_) => st.registry.find(req.model.as_deref(), Task::Embed)?,
        None => st.registry.slots.first().ok_or_else(|| ApiError::invalid("no models"))?,
    };
    let texts = match req.inputs {
        TextOrTexts::One(t) => vec![t],
        TextOrTexts::Many(t) => t,
    };
    if texts.is_empty() {
        return Err(ApiError::invalid("inputs must not be empty"));
    }
    let caps = st.registry.caps;
    if texts.len() > caps.max_client_batch_size {
        return Err(super::too_many(texts.len(), "inputs", caps.max_client_batch_size, "max_client_batch_size"));
    }
    let loaded = st.registry.get(slot).await?;
    let prompt = loaded.engine.spec.prompt_for(req.prompt_name.as_deref(), None, None)?;
    let special = req.add_special_tokens.unwrap_or(true);
    let limit = loaded.engine.tokenizer.char_limit();
    // Every token is answered (no truncation here), so the estimate is the cut text's bytes.
    let fixed = prompt.len() + loaded.engine.tokenizer.added_tokens(false);
    let estimate: usize = texts.iter().map(|t| fixed + t.len().min(limit.saturating_mul(4))).sum();
    if estimate > caps.max_queue_tokens {
        return Err(ApiError::too_large(format!(
            "this /tokenize request may produce about {estimate} tokens; one request may produce at most \
             {} (max_queue_tokens); split it",
            caps.max_queue_tokens
        )));
    }
    let permit = loaded.batcher.admit_wait(estimate, caps.admission_wait).await?;
    let busy = loaded.batcher.tokenizing.clone().acquire_owned().await;
    let busy = busy.map_err(|_| ApiError::internal("model is shutting down"))?;
    let out = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Vec<TokenPiece>>> {
        let _held = (busy, permit);
        texts
            .into_iter()
            .map(|t| {
                let text = format!("{prompt}{}", cut_chars(&t, limit));
                let enc = loaded
                    .tokenizer
                    .encode(text.as_str(), special)
                    .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))?;
                Ok(enc
                    .get_ids()
                    .iter()
                    .zip(enc.get_offsets())
                    .zip(enc.get_special_tokens_mask())
                    .zip(enc.get_tokens())
                    .map(|(((&id, &(start, stop)), &sp), piece)| {
                        let special = sp == 1;
                        let text =
                            if special { piece.clone() } else { text.get(start..stop).unwrap_or(piece).to_string() };
                        let (start, stop) = if special { (None, None) } else { (Some(start), Some(stop)) };
                        TokenPiece { id, text, special, start, stop }
                    })
                    .collect())
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
pub struct InfoQuery {
    pub model: Option<String>,
}

/// TEI's `/info` for one model (the first, or `?model=`), plus every served model under `models`.
pub async fn info(State(st): State<Shared>, Query(q): Query<InfoQuery>) -> ApiResult<Json<Value>> {
    let slot = match q.model.as_deref() {
        Some(_) => st.registry.find(q.model.as_deref(), Task::Embed)?,
        None => st.registry.slots.first().ok_or_else(|| ApiError::invalid("no models"))?,
    };
    let spec = &slot.spec;
    let model_type = match &spec.head {
        Head::Pool(p) => json!({ "embedding": { "pooling": p.as_str() } }),
        _ => json!({ "reranker": { "id2label": { "0": "LABEL_0" }, "label2id": { "LABEL_0": 0 } } }),
    };
    let dtype = match slot.spec.arch {
        _ if !slot.is_loaded() => Value::Null,
        _ => json!(st.registry.get(slot).await?.engine.dtype_label()),
    };
    Ok(Json(json!({
        "model_id": slot.id(),
        "model_sha": spec.commit,
        "model_dtype": dtype,
        "model_type": model_type,
        "max_input_length": spec.max_length,
        "max_batch_tokens": slot.max_batch_tokens(),
        "max_client_batch_size": st.registry.caps.max_client_batch_size,
        "max_rerank_documents": st.registry.caps.max_rerank_documents,
        "max_queue_tokens": st.registry.caps.max_queue_tokens,
        "max_queue_seconds": st.registry.caps.max_queue_seconds,
        "auto_truncate": true,
        "version": env!("CARGO_PKG_VERSION"),
        "models": st.registry.names(),
    })))
}
