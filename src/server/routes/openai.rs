//! OpenAI `POST /v1/embeddings` and `GET /v1/models`.

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{embed, EmbedCall, Input, JsonBody, PromptChoice};
use crate::engine::Truncation;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::Shared;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingsRequest {
    pub input: Input,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted and ignored, as OpenAI uses it only for abuse monitoring.
    #[serde(default)]
    #[allow(dead_code)]
    pub user: Option<String>,
    // Extensions beyond OpenAI's fields.
    #[serde(default)]
    pub input_type: Option<String>,
    #[serde(default)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub instruction: Option<String>,
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// The answer, serialized straight from the f32 vectors (shortest text that reads back as the same
/// f32, e.g. `0.1`, not the f64 widening `0.10000000149011612`), with no JSON tree in between.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingsResponse {
    #[schema(value_type = String)]
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingItem {
    #[schema(value_type = String)]
    pub object: &'static str,
    pub index: usize,
    pub embedding: Embedding,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Embedding {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

pub async fn embeddings(
    State(st): State<Shared>,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> ApiResult<Json<EmbeddingsResponse>> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!("encoding_format must be float or base64, got `{other}`")))
        }
    };
    let call = EmbedCall {
        model: req.model,
        input: req.input,
        ids_from: super::IdsFrom::Configured,
        prompt: PromptChoice { prompt_name: req.prompt_name, instruction: req.instruction, input_type: req.input_type },
        dimensions: req.dimensions,
        normalize: None,
        truncation: Truncation::refuse_if(!req.truncate.unwrap_or(true)),
    };
    let e = embed(&st, call).await?;
    let data = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 { Embedding::Base64(encode_base64(&v)) } else { Embedding::Float(v) };
            EmbeddingItem { object: "embedding", index, embedding }
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: e.model,
        usage: Usage { prompt_tokens: e.tokens, total_tokens: e.tokens },
    }))
}

/// Standard base64 of the little-endian f32 bytes, as OpenAI and TEI send it.
pub fn encode_base64(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn models(State(st): State<Shared>) -> Json<Value> {
    let data: Vec<Value> = st
        .registry
        .slots
        .iter()
        .map(|s| {
            json!({
                "id": s.id(),
                "object": "model",
                "created": 0,
                "owned_by": "embedrank",
                "aliases": s.cfg.alias,
                "task": s.spec.task.key(),
                "loaded": s.is_loaded(),
                "max_input_length": s.spec.max_length,
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(super::encode_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}
