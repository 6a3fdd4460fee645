//! Server configuration: the `serve.toml` format, also filled from command-line flags.
//!
//! ```toml
//! host = "127.0.0.1"
//! port = 8080
//! memory_budget = "4GiB"
//! [[models]]
//! id = "sentence-transformers/all-MiniLM-L6-v2"
//! alias = ["minilm"]
//! keep_alive = "10m"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// One served model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients send; also the model reference unless `source` is set.
    pub id: String,
    /// Where to load it from: a folder or `org/name[@rev]` (default: `id`).
    #[serde(default)]
    pub source: Option<String>,
    /// Other names clients may use.
    #[serde(default, deserialize_with = "one_or_many")]
    pub alias: Vec<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    /// Unload after this long without requests: "5m", "30s", "1h", or "forever" (default).
    #[serde(default)]
    pub keep_alive: Option<String>,
    #[serde(default)]
    pub max_batch_tokens: Option<usize>,
    #[serde(default)]
    pub max_length: Option<usize>,
    /// "embed" or "rerank", overriding detection.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub pooling: Option<String>,
    /// Instruction used for `input_type: "query"` on instruction-aware models, and the reranker's.
    #[serde(default)]
    pub instruction: Option<String>,
    /// What token ids in OpenAI `/v1/embeddings` input are: "openai" (cl100k_base, decoded and
    /// re-tokenized; the default), "model" (the model's own ids) or "reject" (422).
    #[serde(default)]
    pub token_ids: Option<super::token_ids::TokenIds>,
}

impl ModelConfig {
    pub fn new(id: impl Into<String>) -> Self {
        ModelConfig {
            id: id.into(),
            source: None,
            alias: Vec::new(),
            device: None,
            dtype: None,
            keep_alive: None,
            max_batch_tokens: None,
            max_length: None,
            task: None,
            pooling: None,
            instruction: None,
            token_ids: None,
        }
    }
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.id)
    }
}

/// Everything `serve` needs. Field defaults are the documented ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Load every model at start; /ready answers 200 once all are loaded.
    #[serde(default)]
    pub preload: bool,
    /// Accepted bearer keys; empty means no authentication.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Require the key on /health, /ready and /metrics too.
    #[serde(default)]
    pub protect_health: bool,
    /// Largest request body, e.g. "2MiB".
    #[serde(default = "default_payload_limit")]
    pub payload_limit: String,
    /// Per-request time limit, e.g. "60s".
    #[serde(default = "default_timeout")]
    pub request_timeout: String,
    /// Allowed CORS origins ("*" for any); empty: no CORS headers.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Requests waiting or running per model before new ones get 429.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Estimated tokens admitted per model (tokenizing, waiting or running) before new requests
    /// get 429; reserved before tokenizing, from byte lengths (an upper bound).
    #[serde(default = "default_max_queue_tokens")]
    pub max_queue_tokens: usize,
    /// How long a request may wait for room in a full queue before its 429, e.g. "500ms"; "0s"
    /// refuses at once (for a load balancer that should try another replica).
    #[serde(default = "default_admission_wait")]
    pub admission_wait: String,
    /// Inputs per embedding or /tokenize request (TEI's `max_client_batch_size`; OpenAI's 2,048).
    #[serde(default = "default_max_client_batch_size")]
    pub max_client_batch_size: usize,
    /// Documents per rerank request (Cohere allows 1,000).
    #[serde(default = "default_max_rerank_documents")]
    pub max_rerank_documents: usize,
    /// Total estimated weight memory of loaded models, e.g. "8GiB"; least recently used models are
    /// unloaded to make room. None: no limit.
    #[serde(default)]
    pub memory_budget: Option<String>,
    /// Defaults for models that do not set their own.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub keep_alive: Option<String>,
    #[serde(default)]
    pub max_batch_tokens: Option<usize>,
    /// Extra hub cache roots searched first.
    #[serde(default)]
    pub cache_dirs: Vec<PathBuf>,
    /// Connection limits (see [`ConnLimits`]): a request head must arrive within `header_timeout`
    /// (also the idle keep-alive time), its body within `body_timeout` (which also bounds a write
    /// of the answer that makes no progress).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// Open connections at most; above it idle ones are closed, else new ones get 503.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long SIGTERM/SIGINT waits for in-flight requests before dropping their connections.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    /// Accept POST bodies with any Content-Type (default: JSON only, 415 otherwise).
    #[serde(default)]
    pub allow_any_content_type: bool,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}
fn default_payload_limit() -> String {
    "2MiB".into()
}
fn default_timeout() -> String {
    "60s".into()
}
fn default_max_queue() -> usize {
    256
}
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_shutdown_timeout() -> String {
    "30s".into()
}
/// 1Mi estimated tokens. Estimates are byte counts (2 to 4 times the real tokens of English) until
/// a request is tokenized, then its real count: 4 MiB of token ids, and at most about a minute of
/// all-MiniLM-L6-v2 work on 2 CPU cores (15 to 20 s for typical English).
fn default_max_queue_tokens() -> usize {
    1 << 20
}
fn default_admission_wait() -> String {
    "500ms".into()
}
fn default_max_client_batch_size() -> usize {
    2048
}
fn default_max_rerank_documents() -> usize {
    1000
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            host: default_host(),
            port: default_port(),
            models: Vec::new(),
            preload: false,
            api_keys: Vec::new(),
            protect_health: false,
            payload_limit: default_payload_limit(),
            request_timeout: default_timeout(),
            cors_origins: Vec::new(),
            max_queue: default_max_queue(),
            admission_wait: default_admission_wait(),
            max_queue_tokens: default_max_queue_tokens(),
            max_client_batch_size: default_max_client_batch_size(),
            max_rerank_documents: default_max_rerank_documents(),
            memory_budget: None,
            device: None,
            dtype: None,
            keep_alive: None,
            max_batch_tokens: None,
            cache_dirs: Vec::new(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_connections: default_max_connections(),
            shutdown_timeout: default_shutdown_timeout(),
            allow_any_content_type: false,
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Per-request and per-model caps, checked before any work on a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestCaps {
    pub max_client_batch_size: usize,
    pub max_rerank_documents: usize,
    pub max_queue: usize,
    pub max_queue_tokens: usize,
    /// Queued work allowed, in seconds of the model's measured compute rate: a quarter of the
    /// request timeout, so what is admitted finishes well before it (a request may also be
    /// overtaken for half that, batcher::Worker::deadline) and overload is a 429, not a 504.
    pub max_queue_seconds: Option<f64>,
    /// How long a request waits for room in a full queue before its 429.
    pub admission_wait: Duration,
}

/// The checked form of the settings that have units.
#[derive(Debug, Clone)]
pub struct Limits {
    pub payload_limit: usize,
    pub request_timeout: Duration,
    pub memory_budget: Option<u64>,
}

/// Checked connection settings (`conn_limits`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    pub allow_any_content_type: bool,
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// A config file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ServeConfig> {
        toml::from_str(text).map_err(|e| Error::config(path, e.to_string().replace('\n', " ")))
    }

    /// Validate everything that can be checked before loading models.
    pub fn check(&self) -> Result<Limits> {
        let bad = |m: String| Error::InvalidInput(m);
        if self.models.is_empty() {
            return Err(bad("no models to serve (give --model or a config with [[models]])".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for m in &self.models {
            for n in std::iter::once(&m.id).chain(&m.alias) {
                if n.trim().is_empty() {
                    return Err(bad("model ids and aliases must not be empty".into()));
                }
                if !names.insert(n.clone()) {
                    return Err(bad(format!("model name `{n}` is used twice")));
                }
            }
            if let Some(k) = m.keep_alive.as_ref().or(self.keep_alive.as_ref()) {
                parse_keep_alive(k)?;
            }
            if m.max_batch_tokens.or(self.max_batch_tokens) == Some(0) {
                return Err(bad(format!("model `{}`: max_batch_tokens must be at least 1", m.id)));
            }
        }
        if self.max_queue == 0 {
            return Err(bad("max_queue must be at least 1".into()));
        }
        if self.max_queue_tokens == 0 || self.max_client_batch_size == 0 || self.max_rerank_documents == 0 {
            return Err(bad(
                "max_queue_tokens, max_client_batch_size and max_rerank_documents must be at least 1".into()
            ));
        }
        if self.api_keys.iter().any(|k| k.is_empty()) {
            return Err(bad("API keys must not be empty".into()));
        }
        let request_timeout = parse_duration(&self.request_timeout)?;
        if request_timeout.is_zero() {
            return Err(bad("request_timeout must be more than 0".into()));
        }
        if parse_duration(&self.admission_wait)? >= request_timeout {
            return Err(bad("admission_wait must be shorter than request_timeout".into()));
        }
        Ok(Limits {
            payload_limit: parse_size(&self.payload_limit)? as usize,
            request_timeout,
            memory_budget: self.memory_budget.as_deref().map(parse_size).transpose()?,
        })
    }

    /// The checked connection settings.
    pub fn conn_limits(&self) -> Result<ConnLimits> {
        let positive = |name: &str, v: &str| -> Result<Duration> {
            let d = parse_duration(v)?;
            if d.is_zero() {
                return Err(Error::InvalidInput(format!("{name} must be more than 0")));
            }
            Ok(d)
        };
        if self.max_connections == 0 {
            return Err(Error::InvalidInput("max_connections must be at least 1".into()));
        }
        Ok(ConnLimits {
            header_timeout: positive("header_timeout", &self.header_timeout)?,
            body_timeout: positive("body_timeout", &self.body_timeout)?,
            max_connections: self.max_connections,
            shutdown_timeout: parse_duration(&self.shutdown_timeout)?,
            allow_any_content_type: self.allow_any_content_type,
        })
    }

    pub fn request_caps(&self) -> RequestCaps {
        RequestCaps {
            max_client_batch_size: self.max_client_batch_size,
            max_rerank_documents: self.max_rerank_documents,
            max_queue: self.max_queue,
            max_queue_tokens: self.max_queue_tokens,
            max_queue_seconds: parse_duration(&self.request_timeout).ok().map(|d| d.as_secs_f64() / 4.0),
            // Checked by `limits()` at start; a bad value cannot reach a running server.
            admission_wait: parse_duration(&self.admission_wait).unwrap_or_default(),
        }
    }

    pub fn keep_alive_for(&self, m: &ModelConfig) -> Option<Duration> {
        m.keep_alive.as_ref().or(self.keep_alive.as_ref()).and_then(|k| parse_keep_alive(k).ok().flatten())
    }
}

/// "90", "90s", "5m", "1h", "250ms".
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || Error::InvalidInput(format!("bad duration `{s}` (e.g. 30s, 5m, 1h, 250ms)"));
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len()));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    // try_: a value past u64 seconds (`1e30s`) is an error, not a panic.
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// None means never unload ("forever", "-1", "never").
pub fn parse_keep_alive(s: &str) -> Result<Option<Duration>> {
    match s.trim() {
        "forever" | "never" | "-1" | "inf" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// "1048576", "512KB", "2MiB", "4GiB", "1.5GB".
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || Error::InvalidInput(format!("bad size `{s}` (e.g. 2MiB, 512KB, 8GiB)"));
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len()));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 1.0 {
        return Err(bad());
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms").ok(), Some(Duration::from_millis(250)));
        // Found by the serve_config fuzz target: past u64 seconds was a panic.
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("1e30").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert_eq!(parse_keep_alive("forever").ok(), Some(None));
        assert_eq!(parse_size("2MiB").ok(), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("1.5GB").ok(), Some(1_500_000_000));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn example_config_is_valid() {
        let c: ServeConfig = toml::from_str(include_str!("../../examples/serve.toml")).expect("examples/serve.toml");
        let limits = c.check().expect("valid");
        assert_eq!(limits.memory_budget, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(c.models[0].alias.len(), 2);
    }

    #[test]
    fn toml_format() {
        let c: ServeConfig = toml::from_str(
            r#"port = 9000
               api_keys = ["a", "b"]
               [[models]]
               id = "m"
               alias = "x"
               keep_alive = "1m""#,
        )
        .expect("parses");
        assert_eq!(c.port, 9000);
        assert_eq!(c.models[0].alias, vec!["x".to_string()]);
        assert_eq!(c.keep_alive_for(&c.models[0]), Some(Duration::from_secs(60)));
        assert!(c.check().is_ok());
        assert_eq!(c.request_caps().admission_wait, Duration::from_millis(500));
        assert!(toml::from_str::<ServeConfig>("bogus = 1").is_err());
        let c: ServeConfig = toml::from_str("admission_wait = \"0s\"\n[[models]]\nid = \"m\"").expect("parses");
        assert!(c.check().is_ok());
        assert_eq!(c.request_caps().admission_wait, Duration::ZERO);
        let c: ServeConfig = toml::from_str("admission_wait = \"90s\"\n[[models]]\nid = \"m\"").expect("parses");
        assert!(c.check().is_err(), "a wait as long as the request timeout");
        let c: ServeConfig = toml::from_str("admission_wait = \"soon\"\n[[models]]\nid = \"m\"").expect("parses");
        assert!(c.check().is_err());
    }
}
