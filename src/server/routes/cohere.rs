//! Cohere `POST /v2/embed` and `POST /v1/embed` (also served by vLLM).
//!
//! `input_type` picks the prompt (search_query → the model's query prompt, search_document → its
//! document prompt, classification / clustering → the model's prompt of that name if it has one).
//! `embedding_types` quantize the (normalized or not, as the model's default) float vector:
//! - `int8`: round(127 · x / max|x|) per vector, in [-127, 127]; `uint8`: int8 + 128, in [1, 255];
//! - `ubinary`: one bit per dimension, 1 where x > 0, packed 8 per byte, first dimension in the
//!   highest bit (numpy's `packbits`); `binary`: the same byte − 128, as a signed value;
//! - `base64`: standard base64 of the little-endian f32 bytes.
//!
//! Cohere calibrates its int8 ranges on its own models; for other models a per-vector scale is
//! the scheme that keeps the vector's direction without calibration data.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::openai::encode_base64;
use super::{embed, response_id, EmbedCall, IdsFrom, Input, JsonBody, PromptChoice};
use crate::engine::Truncation;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::Shared;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CohereEmbedRequest)]
pub struct EmbedRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub texts: Option<Vec<String>>,
    /// Cohere's image input; refused with a clear message (text models only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub images: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub input_type: Option<String>,
    #[serde(default)]
    pub embedding_types: Option<Vec<String>>,
    #[serde(default)]
    pub output_dimension: Option<usize>,
    /// NONE | START | END (default END).
    #[serde(default)]
    pub truncate: Option<String>,
    /// Accepted; the model's max length applies.
    #[serde(default)]
    #[allow(dead_code)]
    pub max_tokens: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int8,
    Uint8,
    Binary,
    Ubinary,
    Base64,
}

impl Kind {
    fn parse(s: &str) -> ApiResult<Kind> {
        Ok(match s {
            "float" => Kind::Float,
            "int8" => Kind::Int8,
            "uint8" => Kind::Uint8,
            "binary" => Kind::Binary,
            "ubinary" => Kind::Ubinary,
            "base64" => Kind::Base64,
            other => {
                return Err(ApiError::invalid(format!(
                    "embedding_types: `{other}` is not one of float, int8, uint8, binary, ubinary, base64"
                )))
            }
        })
    }
}

/// The embeddings of each requested type, serialized straight from the typed vectors.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ByType {
    #[serde(rename = "float", skip_serializing_if = "Option::is_none")]
    pub float: Option<Vec<Vec<f32>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int8: Option<Vec<Vec<i8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uint8: Option<Vec<Vec<u8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<Vec<Vec<i8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ubinary: Option<Vec<Vec<u8>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Embeddings {
    /// v1 without `embedding_types`: a plain list of float vectors.
    Floats(Vec<Vec<f32>>),
    ByType(ByType),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Meta {
    pub api_version: ApiVersion,
    pub billed_units: Billed,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiVersion {
    #[schema(value_type = String)]
    pub version: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Billed {
    pub input_tokens: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CohereEmbedResponse)]
pub struct EmbedResponse {
    pub id: String,
    /// v1's discriminator (`embeddings_floats` | `embeddings_by_type`); v2 sends it too, as Cohere.
    #[schema(value_type = String)]
    pub response_type: &'static str,
    pub embeddings: Embeddings,
    pub texts: Vec<String>,
    pub meta: Meta,
}

pub fn quantize_int8(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    v.iter().map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8).collect()
}

pub fn pack_bits(v: &[f32]) -> Vec<u8> {
    v.chunks(8)
        .map(|c| c.iter().enumerate().fold(0u8, |b, (i, &x)| if x > 0.0 { b | (0x80 >> i) } else { b }))
        .collect()
}

async fn run(st: &Shared, req: EmbedRequest, version: &'static str) -> ApiResult<EmbedResponse> {
    if req.images.is_some() || req.inputs.is_some() {
        return Err(ApiError::invalid("this server embeds text only: send `texts`"));
    }
    let texts = req.texts.ok_or_else(|| ApiError::invalid("`texts` is required"))?;
    let truncation = match req.truncate.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("END") => Truncation::End,
        Some("START") => Truncation::Start,
        Some("NONE") => Truncation::Refuse,
        Some(other) => return Err(ApiError::invalid(format!("truncate must be NONE, START or END, got `{other}`"))),
    };
    let kinds: Vec<Kind> = match &req.embedding_types {
        None => Vec::new(),
        Some(t) if t.is_empty() => return Err(ApiError::invalid("embedding_types must not be empty")),
        Some(t) => t.iter().map(|s| Kind::parse(s)).collect::<ApiResult<_>>()?,
    };
    let e = embed(
        st,
        EmbedCall {
            model: req.model,
            input: Input::Texts(texts.clone()),
            ids_from: IdsFrom::Model,
            prompt: PromptChoice { input_type: req.input_type, ..Default::default() },
            dimensions: req.output_dimension,
            normalize: None,
            truncation,
        },
    )
    .await?;
    let meta = Meta { api_version: ApiVersion { version }, billed_units: Billed { input_tokens: e.tokens } };
    let id = response_id("embed");
    if kinds.is_empty() && version == "1" {
        return Ok(EmbedResponse {
            id,
            response_type: "embeddings_floats",
            embeddings: Embeddings::Floats(e.vectors),
            texts,
            meta,
        });
    }
    let kinds = if kinds.is_empty() { vec![Kind::Float] } else { kinds };
    let v = &e.vectors;
    let mut by = ByType::default();
    for k in &kinds {
        match k {
            Kind::Int8 => by.int8 = Some(v.iter().map(|x| quantize_int8(x)).collect()),
            Kind::Uint8 => {
                by.uint8 = Some(
                    v.iter().map(|x| quantize_int8(x).into_iter().map(|q| (q as i16 + 128) as u8).collect()).collect(),
                )
            }
            Kind::Ubinary => by.ubinary = Some(v.iter().map(|x| pack_bits(x)).collect()),
            Kind::Binary => {
                by.binary =
                    Some(v.iter().map(|x| pack_bits(x).into_iter().map(|b| (b as i16 - 128) as i8).collect()).collect())
            }
            Kind::Base64 => by.base64 = Some(v.iter().map(|x| encode_base64(x)).collect()),
            Kind::Float => {}
        }
    }
    // Moved last so the other types could borrow the vectors.
    if kinds.contains(&Kind::Float) {
        by.float = Some(e.vectors);
    }
    Ok(EmbedResponse { id, response_type: "embeddings_by_type", embeddings: Embeddings::ByType(by), texts, meta })
}

pub async fn embed_v2(
    State(st): State<Shared>,
    JsonBody(req): JsonBody<EmbedRequest>,
) -> ApiResult<Json<EmbedResponse>> {
    Ok(Json(run(&st, req, "2").await?))
}

pub async fn embed_v1(
    State(st): State<Shared>,
    JsonBody(req): JsonBody<EmbedRequest>,
) -> ApiResult<Json<EmbedResponse>> {
    Ok(Json(run(&st, req, "1").await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization() {
        assert_eq!(quantize_int8(&[0.5, -1.0, 0.0]), vec![64, -127, 0]);
        assert_eq!(pack_bits(&[1.0, -1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.1, 3.0]), vec![0b1001_0001, 0b1000_0000]);
    }
}
