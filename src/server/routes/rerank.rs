//! Jina/Cohere v1 `POST /v1/rerank` and Cohere v2 `POST /v2/rerank`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{rerank, response_id, JsonBody, RerankCall, Reranked};
use crate::server::errors::ApiResult;
use crate::server::Shared;

/// A document: a string, or `{"text": ...}` (Jina, Cohere v1).
#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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

fn results(r: &Reranked) -> Vec<Value> {
    r.results
        .iter()
        .map(|x| match &x.document {
            Some(d) => json!({ "index": x.index, "relevance_score": x.relevance_score, "document": { "text": d } }),
            None => json!({ "index": x.index, "relevance_score": x.relevance_score }),
        })
        .collect()
}

/// Jina / Cohere v1 shape; documents are echoed unless `return_documents: false` (Jina's default).
pub async fn v1(State(st): State<Shared>, JsonBody(req): JsonBody<RerankRequest>) -> ApiResult<Json<Value>> {
    let r = run(&st, req, true).await?;
    Ok(Json(json!({
        "id": response_id("rerank"),
        "object": "list",
        "model": r.model,
        "results": results(&r),
        "usage": { "prompt_tokens": r.tokens, "total_tokens": r.tokens },
    })))
}

/// Cohere v2 shape; documents only with `return_documents: true`.
pub async fn v2(State(st): State<Shared>, JsonBody(req): JsonBody<RerankRequest>) -> ApiResult<Json<Value>> {
    let r = run(&st, req, false).await?;
    Ok(Json(json!({
        "id": response_id("rerank"),
        "model": r.model,
        "results": results(&r),
        "meta": {
            "api_version": { "version": "2" },
            "billed_units": { "search_units": 1 },
            "tokens": { "input_tokens": r.tokens, "output_tokens": 0 },
        },
        "usage": { "prompt_tokens": r.tokens, "total_tokens": r.tokens },
    })))
}
