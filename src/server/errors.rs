//! HTTP errors: every failure leaves the server as an OpenAI-style body
//! `{"error": {"message", "type", "code"}}` with a status that says whose fault it was.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Error;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, code, retry_after: None }
    }
    /// 400: the body is not the JSON we expect.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "malformed_request", message)
    }
    /// 422: well-formed, but a value is out of range.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", "invalid_value", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "missing or wrong API key (send `Authorization: Bearer <key>`)",
        )
    }
    pub fn model_not_found(name: &str, known: &[String]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("model `{name}` is not served here (served: {})", known.join(", ")),
        )
    }
    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", format!("no route for {path}"))
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "payload_too_large", message)
    }
    pub fn overloaded(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded_error",
            "queue_full",
            format!("model `{model}` has too many queued requests; retry later"),
        );
        e.retry_after = Some(1);
        e
    }
    pub fn not_ready(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable_error", "not_ready", message);
        e.retry_after = Some(1);
        e
    }
    pub fn timeout(secs: f64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            "request_timeout",
            format!("request took longer than the server's limit of {secs}s"),
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match &e {
            Error::InvalidInput(_) => ApiError::invalid(msg),
            Error::PromptTooLong { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", "prompt_too_long", msg)
            }
            Error::InputTooLong { .. } | Error::TextTooLong { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "input_too_long", msg)
            }
            Error::WrongTask { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "model_task_mismatch", msg)
            }
            // A configured model whose files are missing or broken: the server cannot serve it.
            Error::ModelNotFound { .. }
            | Error::MissingFile { .. }
            | Error::Config { .. }
            | Error::UnsupportedArchitecture { .. }
            | Error::Tokenizer { .. }
            | Error::Weights { .. }
            | Error::Io { .. }
            | Error::Download { .. }
            | Error::Hub { .. }
            | Error::Integrity { .. }
            | Error::Offline { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "model_load_failed",
                format!("model could not be loaded: {msg}"),
            ),
            _ => ApiError::internal(msg),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "code": self.code }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;
