//! Jina/Cohere v1 `POST /v1/rerank` and Cohere v2 `POST /v2/rerank`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::openai::Usage;
use super::{rerank, response_id, JsonBody, RerankCall, Reranked};
use crate::server::errors::ApiResult;
use crate::server::Shared;

/// A document: a string, or `{"text": ...}` (Jina, Cohere v1).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    fn into_text(self) -> String {
        match self {
            Document::Text(t) | Document::Object { text: t } => t,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RerankRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<Document>,
    #[serde(default)]
    pub top_n: Option<usize>,
    #[serde(default)]
    pub return_documents: Option<bool>,
    #[serde(default)]
    pub max_tokens_per_doc: Option<usize>,
    // Extensions.
    #[serde(default)]
    pub instruction: Option<String>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub raw_scores: Option<bool>,
}

async fn run(st: &Shared, req: RerankRequest, return_documents_default: bool) -> ApiResult<Reranked> {
    rerank(
        st,
        RerankCall {
            model: req.model,
            query: req.query,
            documents: req.documents.into_iter().map(Document::into_text).collect(),
            top_n: req.top_n,
            return_documents: req.return_documents.unwrap_or(return_documents_default),
            raw_scores: req.raw_scores.unwrap_or(false),
            truncate: req.truncate.unwrap_or(true),
            max_tokens_per_doc: req.max_tokens_per_doc,
            instruction: req.instruction,
        },
    )
    .await
}

/// A result, serialized straight from the f32 score.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ranked {
    pub index: usize,
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocText>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DocText {
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RerankResponse {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub object: Option<&'static str>,
    pub model: String,
    pub results: Vec<Ranked>,
    /// Cohere v2's `meta` (no floats in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    pub usage: Usage,
}

fn results(r: Reranked) -> (String, Vec<Ranked>, usize) {
    let ranked = r
        .results
        .into_iter()
        .map(|x| Ranked {
            index: x.index,
            relevance_score: x.relevance_score,
            document: x.document.map(|text| DocText { text }),
        })
        .collect();
    (r.model, ranked, r.tokens)
}

/// Jina / Cohere v1 shape; documents are echoed unless `return_documents: false` (Jina's default).
pub async fn v1(State(st): State<Shared>, JsonBody(req): JsonBody<RerankRequest>) -> ApiResult<Json<RerankResponse>> {
    let (model, results, tokens) = results(run(&st, req, true).await?);
    Ok(Json(RerankResponse {
        id: response_id("rerank"),
        object: Some("list"),
        model,
        results,
        meta: None,
        usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
    }))
}

/// Cohere v2 shape; documents only with `return_documents: true`.
pub async fn v2(State(st): State<Shared>, JsonBody(req): JsonBody<RerankRequest>) -> ApiResult<Json<RerankResponse>> {
    let (model, results, tokens) = results(run(&st, req, false).await?);
    Ok(Json(RerankResponse {
        id: response_id("rerank"),
        object: None,
        model,
        results,
        meta: Some(json!({
            "api_version": { "version": "2" },
            "billed_units": { "search_units": 1 },
            "tokens": { "input_tokens": tokens, "output_tokens": 0 },
        })),
        usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
    }))
}
