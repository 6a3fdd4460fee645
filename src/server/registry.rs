//! The served models: names and aliases, lazy loading, idle unloading (keep_alive) and a memory
//! budget with least-recently-used eviction.
//!
//! Each model's spec is read at start (so a missing model fails the start, not the first request);
//! weights are loaded on first use or at start with `preload`. A loaded model is an
//! `Arc<Loaded>`: unloading only drops the registry's reference, so requests already holding it
//! finish normally and the worker thread exits after them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batcher::{Batcher, QueueLimits};
use super::config::{ModelConfig, RequestCaps, ServeConfig};
use super::errors::{ApiError, ApiResult};
use super::metrics::Metrics;
use crate::engine::{DeviceChoice, DtypeChoice, Engine, EngineOptions};
use crate::source::{self, ResolveOptions};
use crate::spec::{ModelSpec, Pooling, SpecOverrides, Task};
use crate::{Error, Result};

/// A model in memory, ready for requests.
pub struct Loaded {
    pub engine: Arc<Engine>,
    pub batcher: Batcher,
    /// The raw tokenizer, for /tokenize offsets and `max_tokens_per_doc` cuts.
    pub tokenizer: tokenizers::Tokenizer,
}

pub struct Slot {
    pub cfg: ModelConfig,
    pub spec: ModelSpec,
    pub keep_alive: Option<Duration>,
    opts: EngineOptions,
    /// Estimated bytes when loaded (weight file sizes).
    pub size: u64,
    state: tokio::sync::Mutex<Option<Arc<Loaded>>>,
    /// `size` while loaded, else 0: summed without taking every state lock.
    resident: AtomicU64,
    last_used: Mutex<Instant>,
}

impl Slot {
    pub fn id(&self) -> &str {
        &self.cfg.id
    }
    /// The padded-token budget this model runs (or will run, once loaded) with.
    pub fn max_batch_tokens(&self) -> usize {
        let cpu = matches!(self.opts.device, DeviceChoice::Cpu);
        crate::weights::forward_token_budget(self.opts.max_batch_tokens, self.opts.quantizes(&self.spec), cpu)
    }
    pub fn is_loaded(&self) -> bool {
        self.resident.load(Ordering::SeqCst) > 0
    }
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

pub struct Registry {
    pub slots: Vec<Arc<Slot>>,
    names: HashMap<String, usize>,
    budget: Option<u64>,
    /// Per-request and queue caps of every model.
    pub caps: RequestCaps,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// Resolve every model and read its spec (blocking: may download missing models).
    pub fn new(cfg: &ServeConfig, budget: Option<u64>, metrics: Arc<Metrics>) -> Result<Registry> {
        let resolve = ResolveOptions::from_env(&cfg.cache_dirs);
        let mut slots = Vec::new();
        let mut names = HashMap::new();
        for (i, m) in cfg.models.iter().enumerate() {
            let resolved = source::resolve(m.source(), &resolve)?;
            let pooling = match &m.pooling {
                None => None,
                Some(p) => Some(Pooling::parse(p).ok_or_else(|| {
                    Error::InvalidInput(format!("model `{}`: unknown pooling `{p}` (cls, mean, max, lasttoken)", m.id))
                })?),
            };
            let task = match &m.task {
                None => None,
                Some(t) => Some(Task::parse(t).ok_or_else(|| {
                    Error::InvalidInput(format!("model `{}`: unknown task `{t}` (embed, rerank)", m.id))
                })?),
            };
            let ov = SpecOverrides { task, pooling, max_length: m.max_length };
            let spec = ModelSpec::load(&resolved, &ov)?;
            let device = DeviceChoice::parse(m.device.as_deref().or(cfg.device.as_deref()).unwrap_or("cpu"))?;
            let dtype = m.dtype.as_deref().or(cfg.dtype.as_deref()).map(DtypeChoice::parse).transpose()?;
            let mut opts = EngineOptions {
                device,
                max_batch_tokens: m.max_batch_tokens.or(cfg.max_batch_tokens),
                ..Default::default()
            };
            if let Some(d) = dtype {
                d.apply(&mut opts);
            }
            // Serving on the CPU: short passes, so short requests are not stuck behind long ones.
            if opts.max_batch_tokens.is_none() && matches!(opts.device, DeviceChoice::Cpu) {
                opts.max_batch_tokens = Some(super::batcher::SERVE_CPU_MAX_BATCH_TOKENS);
            }
            let size = spec.weight_bytes();
            for n in std::iter::once(&m.id).chain(&m.alias) {
                names.insert(n.clone(), i);
            }
            tracing::info!(model = %m.id, dir = %spec.dir.display(), task = spec.task.as_str(), "serving");
            metrics.register(&m.id);
            slots.push(Arc::new(Slot {
                cfg: m.clone(),
                keep_alive: cfg.keep_alive_for(m),
                spec,
                opts,
                size: u64::max(size, 1),
                state: tokio::sync::Mutex::new(None),
                resident: AtomicU64::new(0),
                last_used: Mutex::new(Instant::now()),
            }));
        }
        Ok(Registry { slots, names, budget, caps: cfg.request_caps(), metrics })
    }

    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.cfg.id.clone()).collect()
    }

    /// The model a request names, or without a name the first model of the wanted task.
    pub fn find(&self, name: Option<&str>, task: Task) -> ApiResult<&Arc<Slot>> {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => {
                self.names.get(n).map(|&i| &self.slots[i]).ok_or_else(|| ApiError::model_not_found(n, &self.names()))
            }
            None => self.slots.iter().find(|s| s.spec.task == task).ok_or_else(|| {
                ApiError::invalid(format!(
                    "no model served here is {}; name one with `model` (served: {})",
                    task.as_str(),
                    self.names().join(", ")
                ))
            }),
        }
    }

    /// The loaded model, loading it first (and evicting others if over the memory budget).
    pub async fn get(&self, slot: &Arc<Slot>) -> ApiResult<Arc<Loaded>> {
        slot.touch();
        let mut state = slot.state.lock().await;
        if let Some(l) = state.as_ref() {
            return Ok(l.clone());
        }
        self.make_room(slot)?;
        let s = slot.clone();
        let metrics = self.metrics.clone();
        let queue = QueueLimits {
            requests: self.caps.max_queue,
            tokens: self.caps.max_queue_tokens,
            seconds: self.caps.max_queue_seconds,
        };
        let loaded = tokio::task::spawn_blocking(move || load(&s, metrics, queue))
            .await
            .map_err(|e| ApiError::internal(format!("model load task failed: {e}")))??;
        let loaded = Arc::new(loaded);
        *state = Some(loaded.clone());
        slot.resident.store(slot.size, Ordering::SeqCst);
        slot.touch();
        self.metrics.set_loaded(slot.id(), true);
        tracing::info!(model = %slot.id(), ms = loaded.engine.load_time.as_millis() as u64, "loaded");
        Ok(loaded)
    }

    /// Unload least recently used models until `slot` fits the budget.
    fn make_room(&self, slot: &Arc<Slot>) -> ApiResult<()> {
        let Some(budget) = self.budget else { return Ok(()) };
        if slot.size > budget {
            return Err(ApiError::not_ready(format!(
                "model `{}` needs about {} bytes, more than the memory budget of {budget}",
                slot.id(),
                slot.size
            )));
        }
        loop {
            let used: u64 = self.slots.iter().map(|s| s.resident.load(Ordering::SeqCst)).sum();
            if used + slot.size <= budget {
                return Ok(());
            }
            let mut victims: Vec<&Arc<Slot>> =
                self.slots.iter().filter(|s| !Arc::ptr_eq(s, slot) && s.is_loaded()).collect();
            victims.sort_by_key(|s| std::cmp::Reverse(s.idle_for()));
            // A model whose lock is held is loading or being unloaded right now; skip it.
            let evicted = victims.into_iter().any(|v| self.unload(v, "memory budget"));
            if !evicted {
                tracing::warn!(model = %slot.id(), "over the memory budget but nothing can be unloaded now");
                return Ok(());
            }
        }
    }

    /// Drop the registry's reference to a loaded model. False when it is busy or not loaded.
    fn unload(&self, slot: &Slot, why: &str) -> bool {
        let Ok(mut state) = slot.state.try_lock() else { return false };
        if state.take().is_none() {
            return false;
        }
        slot.resident.store(0, Ordering::SeqCst);
        self.metrics.set_loaded(slot.id(), false);
        tracing::info!(model = %slot.id(), why, "unloaded");
        true
    }

    /// Unload models idle longer than their keep_alive with nothing queued.
    pub fn reap_idle(&self) {
        for s in &self.slots {
            let Some(ka) = s.keep_alive else { continue };
            if !s.is_loaded() || s.idle_for() < ka {
                continue;
            }
            let busy = s.state.try_lock().ok().and_then(|st| st.as_ref().map(|l| l.batcher.depth() > 0));
            if busy == Some(false) {
                self.unload(s, "keep_alive expired");
            }
        }
    }

    pub fn all_loaded(&self) -> bool {
        self.slots.iter().all(|s| s.is_loaded())
    }
}

fn load(slot: &Slot, metrics: Arc<Metrics>, queue: QueueLimits) -> ApiResult<Loaded> {
    let engine = Arc::new(Engine::load(slot.spec.clone(), &slot.opts)?);
    let path = &slot.spec.tokenizer_file;
    let tok_err = |e: String| Error::Tokenizer { path: path.clone(), message: e };
    let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| tok_err(e.to_string()))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| tok_err(e.to_string()))?;
    let batcher = Batcher::start(engine.clone(), slot.id().to_string(), metrics, queue)
        .map_err(|e| ApiError::internal(format!("cannot start worker thread: {e}")))?;
    Ok(Loaded { engine, batcher, tokenizer })
}
