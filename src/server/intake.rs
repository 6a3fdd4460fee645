//! Request intake, before any handler runs: `413` when `Content-Length` announces more than the
//! payload limit (without reading a byte of the body), `415` for a POST whose Content-Type is not
//! JSON (unless `allow_any_content_type`; JSON-only keeps other web pages from sending cross-site
//! "simple" `text/plain` or form POSTs) or whose Content-Encoding is not identity, and `408` when
//! the body does not arrive within the body timeout. The body is read here, so handlers get it whole.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::errors::ApiError;

#[derive(Debug, Clone)]
pub struct Intake {
    pub payload_limit: usize,
    pub body_timeout: Duration,
    pub allow_any_content_type: bool,
}

pub async fn check(State(cfg): State<Arc<Intake>>, req: Request, next: Next) -> Response {
    match admit(&cfg, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            let mut resp = e.into_response();
            // The body may be unread: the connection cannot carry another request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

async fn admit(cfg: &Intake, req: Request) -> Result<Request, ApiError> {
    if let Some(len) = content_length(req.headers()) {
        if len > cfg.payload_limit as u64 {
            return Err(too_large(cfg.payload_limit));
        }
    }
    if req.method() != Method::POST {
        return Ok(req);
    }
    check_encoding(req.headers())?;
    if !cfg.allow_any_content_type {
        check_content_type(req.headers())?;
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(cfg.body_timeout, read_body(body, cfg.payload_limit)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                "body_timeout",
                format!("request body did not arrive within {}s", cfg.body_timeout.as_secs_f64()),
            ))
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("request body is larger than the server's payload limit of {limit} bytes"))
}

fn unsupported(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", code, message)
}

fn check_encoding(h: &HeaderMap) -> Result<(), ApiError> {
    for v in h.get_all(header::CONTENT_ENCODING) {
        let text = v.to_str().unwrap_or("?");
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("identity") {
                return Err(unsupported(
                    "unsupported_content_encoding",
                    format!("Content-Encoding `{coding}` is not supported; send the body uncompressed"),
                ));
            }
        }
    }
    Ok(())
}

/// `application/json` or `application/*+json`, any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn check_content_type(h: &HeaderMap) -> Result<(), ApiError> {
    let ct = h.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
    match ct {
        Some(ct) if is_json(ct) => Ok(()),
        other => Err(unsupported(
            "unsupported_media_type",
            format!(
                "Content-Type must be application/json (got {}); the server can be started with \
                 --allow-any-content-type",
                other.map_or("none".to_string(), |c| format!("`{c}`"))
            ),
        )),
    }
}

/// The whole body, 413 past the limit (chunked bodies announce no length).
async fn read_body(mut body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::malformed(format!("cannot read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("multipart/form-data; boundary=x"));
        assert!(!is_json(""));
    }

    #[test]
    fn encodings() {
        let mut h = HeaderMap::new();
        assert!(check_encoding(&h).is_ok());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert!(check_encoding(&h).is_ok());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(check_encoding(&h).map_err(|e| e.status), Err(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
}
