//! TEI's task routes: `POST /`, `POST /invocations` (SageMaker) and `POST /predict`, and `GET /`.
//!
//! TEI serves one model and answers `POST /` as that model's task: `/embed` for an embedder,
//! `/rerank` for a reranker. Here several models may be served, so the body picks: `query` and
//! `texts` is a rerank; `inputs` goes to the model named by `model` (else the first served model)
//! and is embedded by an embedder or scored as (query, document) pairs by a reranker, as TEI's
//! `/predict` does. `huggingface_hub.InferenceClient(base_url)` posts here.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::tei::{self, EmbedRequest, RerankRequest};
use super::{rerank, JsonBody, RawBody, RerankCall};
use crate::server::errors::{ApiError, ApiResult};
use crate::server::Shared;
use crate::spec::Task;

/// Just enough of any body to pick the route; serde skips the rest without building it.
#[derive(Debug, Deserialize)]
struct Probe {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    query: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    texts: Option<serde::de::IgnoredAny>,
}

pub async fn task(State(st): State<Shared>, RawBody(bytes): RawBody) -> ApiResult<Response> {
    let probe: Probe = super::parse_json(&bytes)?;
    if probe.query.is_some() && probe.texts.is_some() {
        let req: RerankRequest = super::parse_json(&bytes)?;
        return Ok(tei::rerank(State(st), JsonBody(req)).await?.into_response());
    }
    let slot = match probe.model.as_deref() {
        Some(_) => st.registry.find(probe.model.as_deref(), Task::Embed)?,
        None => st.registry.slots.first().ok_or_else(|| ApiError::invalid("no models"))?,
    };
    match slot.spec.task {
        Task::Embed => {
            let mut req: EmbedRequest = super::parse_json(&bytes)?;
            req.model = Some(slot.id().to_string());
            Ok(tei::embed_route(&st, req).await?.into_response())
        }
        Task::Rerank => {
            let mut req: PredictRequest = super::parse_json(&bytes)?;
            req.model = Some(slot.id().to_string());
            Ok(predict_route(&st, req).await?.into_response())
        }
    }
}

/// TEI's `/predict` on a reranker: `inputs` is one `[query, document]` pair or a list of pairs.
pub async fn predict(State(st): State<Shared>, JsonBody(req): JsonBody<PredictRequest>) -> ApiResult<Response> {
    Ok(predict_route(&st, req).await?.into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PredictInputs {
    Pair(Vec<String>),
    Pairs(Vec<Vec<String>>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PredictRequest {
    pub inputs: PredictInputs,
    #[serde(default)]
    pub raw_scores: Option<bool>,
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub model: Option<String>,
}

/// One label's score, serialized straight from the f32.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LabelScore {
    #[schema(value_type = String)]
    pub label: &'static str,
    pub score: f32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Predictions {
    One(Vec<LabelScore>),
    Many(Vec<Vec<LabelScore>>),
}

async fn predict_route(st: &Shared, req: PredictRequest) -> ApiResult<Json<Predictions>> {
    let (pairs, single) = match req.inputs {
        PredictInputs::Pair(p) => (vec![p], true),
        PredictInputs::Pairs(p) => (p, false),
    };
    if pairs.is_empty() {
        return Err(ApiError::invalid("inputs must not be empty"));
    }
    let caps = st.registry.caps;
    if pairs.len() > caps.max_rerank_documents {
        return Err(super::too_many(pairs.len(), "pairs", caps.max_rerank_documents, "max_rerank_documents"));
    }
    // Every pair is checked before any is scored: a bad last pair costs no work.
    let pairs: Vec<[&str; 2]> = pairs.iter().enumerate().map(|(i, p)| pair(p, i)).collect::<ApiResult<_>>()?;
    // Consecutive pairs with the same query go to the model as one rerank call.
    let mut scores = vec![0f32; pairs.len()];
    let mut i = 0;
    while i < pairs.len() {
        let query = pairs[i][0];
        let j = i + pairs[i..].iter().take_while(|p| p[0] == query).count();
        let r = rerank(
            st,
            RerankCall {
                model: req.model.clone(),
                query: query.to_string(),
                documents: pairs[i..j].iter().map(|p| p[1].to_string()).collect(),
                top_n: None,
                return_documents: false,
                raw_scores: req.raw_scores.unwrap_or(false),
                truncate: req.truncate.unwrap_or(true),
                max_tokens_per_doc: None,
                instruction: None,
            },
        )
        .await?;
        for x in r.results {
            scores[i + x.index] = x.relevance_score;
        }
        i = j;
    }
    let mut out: Vec<Vec<LabelScore>> =
        scores.into_iter().map(|score| vec![LabelScore { label: "LABEL_0", score }]).collect();
    Ok(Json(match (single, out.pop()) {
        (true, Some(one)) => Predictions::One(one),
        (_, last) => {
            out.extend(last);
            Predictions::Many(out)
        }
    }))
}

fn pair(p: &[String], i: usize) -> ApiResult<[&str; 2]> {
    match p {
        [q, d] => Ok([q.as_str(), d.as_str()]),
        _ => Err(ApiError::invalid(format!(
            "inputs[{i}]: a reranker scores pairs; send [query, document] (got {} texts)",
            p.len()
        ))),
    }
}

/// A short description: what this is, which models, which routes.
pub async fn describe(State(st): State<Shared>) -> Json<serde_json::Value> {
    let models: Vec<serde_json::Value> = st
        .registry
        .slots
        .iter()
        .map(|s| json!({ "id": s.id(), "task": s.spec.task.key(), "loaded": s.is_loaded() }))
        .collect();
    Json(json!({
        "name": "embedrank",
        "version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "routes": {
            "openai": ["POST /v1/embeddings", "GET /v1/models"],
            "cohere": ["POST /v1/embed", "POST /v2/embed", "POST /v1/rerank", "POST /v2/rerank"],
            "tei": ["POST /", "POST /invocations", "POST /embed", "POST /rerank", "POST /predict", "POST /tokenize", "GET /info"],
            "ops": ["GET /health", "GET /ready", "GET /metrics"],
        },
        "docs": "docs/serve.md in the source tree",
    }))
}
