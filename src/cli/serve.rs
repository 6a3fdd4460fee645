//! `embedrank serve`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use embedrank::server::{self, ModelConfig, ServeConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model to serve (repeatable): a folder or org/name[@rev]; `NAME=MODEL` serves it as NAME too.
    #[arg(short, long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    /// TOML config (models with id, alias, device, dtype, keep_alive, …); see docs/serve.md.
    /// Flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub host: Option<String>,
    /// Port (0: any free port; the chosen address is printed on stdout).
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Load every model at start (/ready turns 200 when done) instead of on first request.
    #[arg(long)]
    pub preload: bool,
    /// Accepted API key (repeatable); also EMBEDRANK_API_KEY, comma-separated.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// Require the API key on /health, /ready and /metrics too.
    #[arg(long)]
    pub protect_health: bool,
    /// Extra hub cache folder to search first (repeatable).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dirs: Vec<PathBuf>,
    /// Default device for models: cpu, cuda[:N], metal[:N] or auto.
    #[arg(long)]
    pub device: Option<String>,
    /// Default compute dtype: f32, f16 or bf16.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Default padded-token budget of one forward pass.
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// Unload a model after this long without requests (e.g. 5m; default: never).
    #[arg(long)]
    pub keep_alive: Option<String>,
    /// Estimated weight memory all loaded models may use (e.g. 8GiB); LRU models are unloaded.
    #[arg(long)]
    pub memory_budget: Option<String>,
    /// Requests waiting or running per model before answering 429.
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// Largest request body (default 2MiB).
    #[arg(long)]
    pub payload_limit: Option<String>,
    /// Per-request time limit (default 60s).
    #[arg(long)]
    pub request_timeout: Option<String>,
    /// Allowed CORS origin (repeatable; `*` for any).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// A request head must arrive within this (also the idle keep-alive time; default 10s).
    #[arg(long)]
    pub header_timeout: Option<String>,
    /// A request body must arrive within this, else 408; an answer the client reads nothing of for
    /// this long is dropped (default 30s).
    #[arg(long)]
    pub body_timeout: Option<String>,
    /// Open connections at most (default 1024); past it idle ones are closed, else 503.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// On SIGTERM/SIGINT, wait this long for in-flight requests, then drop them (default 30s).
    #[arg(long)]
    pub shutdown_timeout: Option<String>,
    /// A request may wait this long for room in a full queue before its 429 (default 500ms; 0s:
    /// refuse at once).
    #[arg(long)]
    pub admission_wait: Option<String>,
    /// Accept POST bodies of any Content-Type (default: JSON only, else 415).
    #[arg(long)]
    pub allow_any_content_type: bool,
    /// What token ids in OpenAI /v1/embeddings input are, for models that do not set token_ids:
    /// openai (cl100k_base, decoded and re-tokenized; default), model (the model's own) or reject.
    #[arg(long, value_name = "MODE")]
    pub token_ids: Option<String>,
}

impl ServeArgs {
    fn config(self) -> Result<ServeConfig> {
        let mut c = match &self.config {
            Some(p) => ServeConfig::load(p)?,
            None => ServeConfig::default(),
        };
        for m in &self.models {
            // NAME=MODEL, unless the whole thing is an existing path (folders may contain `=`).
            let (id, source) = match m.split_once('=') {
                Some((name, src)) if !std::path::Path::new(m).exists() => (name.to_string(), Some(src.to_string())),
                _ => (m.clone(), None),
            };
            let mut mc = ModelConfig::new(id);
            mc.source = source;
            c.models.push(mc);
        }
        if let Some(h) = self.host {
            c.host = h;
        }
        if let Some(p) = self.port {
            c.port = p;
        }
        c.preload |= self.preload;
        c.protect_health |= self.protect_health;
        c.api_keys.extend(self.api_keys);
        if let Ok(env) = std::env::var("EMBEDRANK_API_KEY") {
            c.api_keys.extend(server::auth::split_keys(&env));
        }
        c.cache_dirs.splice(0..0, self.cache_dirs);
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = Some(v); } )* };
        }
        set!(device, dtype, max_batch_tokens, keep_alive, memory_budget);
        if let Some(q) = self.max_queue {
            c.max_queue = q;
        }
        if let Some(p) = self.payload_limit {
            c.payload_limit = p;
        }
        if let Some(t) = self.request_timeout {
            c.request_timeout = t;
        }
        c.cors_origins.extend(self.cors_origins);
        if let Some(v) = self.header_timeout {
            c.header_timeout = v;
        }
        if let Some(v) = self.body_timeout {
            c.body_timeout = v;
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = self.shutdown_timeout {
            c.shutdown_timeout = v;
        }
        if let Some(v) = self.admission_wait {
            c.admission_wait = v;
        }
        c.allow_any_content_type |= self.allow_any_content_type;
        if let Some(v) = self.token_ids {
            let mode = server::token_ids::TokenIds::parse(&v)?;
            for m in c.models.iter_mut().filter(|m| m.token_ids.is_none()) {
                m.token_ids = Some(mode);
            }
        }
        Ok(c)
    }
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let cfg = a.config()?;
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let r = rt.block_on(server::serve(cfg, |addr| {
        // One parseable line on stdout, so scripts (and tests using --port 0) learn the address.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}");
        let _ = out.flush();
    }));
    // Work cut off at the shutdown deadline (or by a second signal) may still sit in blocking
    // tasks; do not wait for it.
    rt.shutdown_background();
    r?;
    Ok(ExitCode::SUCCESS)
}
