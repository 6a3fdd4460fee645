//! Text Embeddings Inference routes: `POST /embed`, `/rerank`, `/tokenize`, `GET /info`.
//! TEI serves one model; here the optional `model` field (or `?model=` on /info) picks one, and
//! without it the first model of the right kind answers.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{EmbedCall, Input, JsonBody, PromptChoice, RerankCall};
use crate::server::errors::{ApiError, ApiResult};
use crate::server::Shared;
use crate::spec::{Head, Task};

fn check_direction(d: &Option<String>) -> ApiResult<()> {
    match d.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("right") => Ok(()),
        Some("left") => Err(ApiError::invalid("truncation_direction `left` is not supported; use `right`")),
        Some(other) => Err(ApiError::invalid(format!("truncation_direction must be `right`, got `{other}`"))),
    }
}

#[derive(Debug, Deserialize)]
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
pub async fn embed_route(st: &Shared, req: EmbedRequest) -> ApiResult<Json<Value>> {
    check_direction(&req.truncation_direction)?;
    let e = super::embed(
        st,
        EmbedCall {
            model: req.model,
            input: req.inputs,
            prompt: PromptChoice { prompt_name: req.prompt_name, ..Default::default() },
            dimensions: req.dimensions,
            normalize: Some(req.normalize.unwrap_or(true)),
            truncate: req.truncate.unwrap_or(true),
        },
    )
    .await?;
    Ok(Json(json!(e.vectors)))
}

pub async fn embed(State(st): State<Shared>, JsonBody(req): JsonBody<EmbedRequest>) -> ApiResult<Json<Value>> {
    embed_route(&st, req).await
}

#[derive(Debug, Deserialize)]
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

/// `[{"index", "score", "text"?}]`, best first.
pub async fn rerank(State(st): State<Shared>, JsonBody(req): JsonBody<RerankRequest>) -> ApiResult<Json<Value>> {
    check_direction(&req.truncation_direction)?;
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
    let out: Vec<Value> = r
        .results
        .iter()
        .map(|x| match &x.document {
            Some(t) => json!({ "index": x.index, "score": x.relevance_score, "text": t }),
            None => json!({ "index": x.index, "score": x.relevance_score }),
        })
        .collect();
    Ok(Json(json!(out)))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TextOrTexts {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub inputs: TextOrTexts,
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    #[serde(default)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// `[[{"id", "text", "special", "start", "stop"}]]` with byte offsets into the (prompted) input.
pub async fn tokenize(State(st): State<Shared>, JsonBody(req): JsonBody<TokenizeRequest>) -> ApiResult<Json<Value>> {
    let slot = match req.model.as_deref() {
        Some(_) => st.registry.find(req.model.as_deref(), Task::Embed)?,
        None => st.registry.slots.first().ok_or_else(|| ApiError::invalid("no models"))?,
    };
    let loaded = st.registry.get(slot).await?;
    let prompt = loaded.engine.spec.prompt_for(req.prompt_name.as_deref(), None, None)?;
    let texts = match req.inputs {
        TextOrTexts::One(t) => vec![t],
        TextOrTexts::Many(t) => t,
    };
    if texts.is_empty() {
        return Err(ApiError::invalid("inputs must not be empty"));
    }
    let special = req.add_special_tokens.unwrap_or(true);
    let out = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Value>> {
        texts
            .into_iter()
            .map(|t| {
                let text = format!("{prompt}{t}");
                let enc = loaded
                    .tokenizer
                    .encode(text.as_str(), special)
                    .map_err(|e| ApiError::internal(format!("tokenizer: {e}")))?;
                let toks: Vec<Value> = enc
                    .get_ids()
                    .iter()
                    .zip(enc.get_offsets())
                    .zip(enc.get_special_tokens_mask())
                    .zip(enc.get_tokens())
                    .map(|(((id, &(start, stop)), &sp), piece)| {
                        let is_special = sp == 1;
                        let piece_text =
                            if is_special { piece.clone() } else { text.get(start..stop).unwrap_or(piece).to_string() };
                        let (start, stop) = if is_special { (None, None) } else { (Some(start), Some(stop)) };
                        json!({ "id": id, "text": piece_text, "special": is_special, "start": start, "stop": stop })
                    })
                    .collect();
                Ok(Value::Array(toks))
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    Ok(Json(Value::Array(out)))
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
        "max_client_batch_size": null,
        "auto_truncate": true,
        "version": env!("CARGO_PKG_VERSION"),
        "models": st.registry.names(),
    })))
}
