//! `embedrank serve`: several models behind OpenAI `/v1/embeddings`, Jina/Cohere `/v1/rerank` and
//! `/v2/rerank`, and TEI `/embed`, `/rerank`, `/tokenize`, `/info`; with dynamic batching
//! ([`batcher`]), lazy loading and unloading ([`registry`]), metrics, API keys and graceful shutdown.
//! HTTP handlers stay thin: parse, validate, queue tokens for the model's worker thread, shape
//! the answer.

pub mod auth;
pub mod batcher;
pub mod config;
pub mod conn;
pub mod errors;
pub mod intake;
pub mod metrics;
pub mod registry;
pub mod routes;
pub mod token_ids;
pub mod trim;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use config::{ModelConfig, ServeConfig};
use errors::ApiError;
use metrics::Metrics;
use registry::Registry;

use crate::{Error, Result};

pub struct AppState {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub api_keys: Vec<String>,
    pub protect_health: bool,
    pub request_timeout: Duration,
    /// Set once preloading finished (immediately without preload).
    pub ready: AtomicBool,
    pub shutting_down: AtomicBool,
}

pub type Shared = Arc<AppState>;

/// The server's state and its full route table with every layer (limits, auth, metrics, intake
/// checks), before any socket: `serve` runs it on a listener, the fuzz harness calls it in-process.
pub struct App {
    pub state: Shared,
    pub router: Router,
    pub conn_limits: config::ConnLimits,
}

/// Check `cfg` and build the [`App`] (models are resolved and their specs read; weights load on
/// first use unless preloaded by `serve`).
pub async fn build(cfg: &ServeConfig) -> Result<App> {
    let limits = cfg.check()?;
    let conn_limits = cfg.conn_limits()?;
    let metrics = Arc::new(Metrics::default());
    let reg_cfg = cfg.clone();
    let reg_metrics = metrics.clone();
    let registry = tokio::task::spawn_blocking(move || Registry::new(&reg_cfg, limits.memory_budget, reg_metrics))
        .await
        .map_err(|e| Error::Server(format!("startup task failed: {e}")))??;
    let state: Shared = Arc::new(AppState {
        registry,
        metrics,
        api_keys: cfg.api_keys.clone(),
        protect_health: cfg.protect_health,
        request_timeout: limits.request_timeout,
        ready: AtomicBool::new(!cfg.preload),
        shutting_down: AtomicBool::new(false),
    });
    let intake = Arc::new(intake::Intake {
        payload_limit: limits.payload_limit,
        body_timeout: conn_limits.body_timeout,
        allow_any_content_type: conn_limits.allow_any_content_type,
    });
    let router = router(state.clone(), limits.payload_limit, intake, &cfg.cors_origins)?;
    Ok(App { state, router, conn_limits })
}

/// Run the server until SIGINT/SIGTERM. `on_listen` gets the bound address (port 0 picks one).
/// In-flight requests are finished before this returns; new connections are refused meanwhile.
pub async fn serve(cfg: ServeConfig, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    let App { state, router: app, mut conn_limits } = build(&cfg).await?;
    conn_limits.max_connections = conn::raise_fd_limit(conn_limits.max_connections);
    let signals = conn::Signals::new()?;

    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::Server(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Error::Server(format!("cannot read bound address: {e}")))?;
    if state.api_keys.is_empty() && !(cfg.host == "127.0.0.1" || cfg.host == "localhost" || cfg.host == "::1") {
        tracing::warn!("listening on {local} without an API key: anyone who can reach it can use it");
    }

    if cfg.preload {
        let st = state.clone();
        tokio::spawn(async move {
            for slot in &st.registry.slots {
                if let Err(e) = st.registry.get(slot).await {
                    tracing::error!(model = %slot.id(), "preload failed: {e}");
                    return;
                }
            }
            st.ready.store(true, Ordering::SeqCst);
            tracing::info!("all models loaded");
        });
    }
    let reaper = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                st.registry.reap_idle();
            }
        })
    };

    on_listen(local);
    tracing::info!("listening on http://{local}");
    let st = state.clone();
    let stopped =
        conn::serve(listener, app, &conn_limits, signals, move || st.shutting_down.store(true, Ordering::SeqCst)).await;
    reaper.abort();
    match stopped? {
        conn::Stopped::Drained => tracing::info!("stopped"),
        conn::Stopped::DeadlinePassed(n) => tracing::info!("stopped ({n} connection(s) cut at the deadline)"),
    }
    Ok(())
}

fn router(state: Shared, payload_limit: usize, intake: Arc<intake::Intake>, cors_origins: &[String]) -> Result<Router> {
    let app = routes::routes()
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(intake, intake::check))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(DefaultBodyLimit::max(payload_limit))
        .with_state(state);
    if cors_origins.is_empty() {
        return Ok(app);
    }
    let origin = if cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = cors_origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| Error::InvalidInput(format!("bad CORS origin `{o}`"))))
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    let cors = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any);
    Ok(app.layer(cors))
}

/// Count requests by route and status; give axum's own bodiless errors a JSON body.
async fn record(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let resp = next.run(req).await;
    let resp = if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "method not allowed",
        )
        .into_response()
    } else {
        resp
    };
    st.metrics.request(&route, resp.status().as_u16());
    resp
}

async fn authenticate(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let public =
        matches!(req.uri().path(), "/health" | "/ready" | "/metrics" | "/openapi.json" | "/docs") && !st.protect_health;
    if !st.api_keys.is_empty() && !public && req.method() != Method::OPTIONS {
        let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !auth::authorized(&st.api_keys, header) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Per-request time limit. The handler future is dropped on expiry, which also drops its queued
/// work before compute.
async fn timeout(State(st): State<Shared>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::timeout(st.request_timeout.as_secs_f64()).into_response(),
    }
}
