//! Dynamic batching: one worker OS thread per loaded model, fed by a bounded queue.
//!
//! Each step the worker takes every waiting request into its active set and picks one pass's worth
//! of inputs (the padded-token budget): first the requests past their deadline (arrival plus a few
//! times what the request costs alone, at most a bound: `Worker::deadline`), earliest first, so no
//! request waits for long; then those with the fewest tokens left, each at most an equal share of
//! the budget, so a one-text request overtakes a 10 000-text one between its passes. It sorts the
//! chosen inputs by length into forward passes under the budget, and answers a request as soon as
//! all its inputs are done. Requests whose client went away are dropped before their next forward
//! pass. The engine is synchronous and CPU-bound, so it never runs on the async runtime.
//!
//! Admission comes before any work: a request takes a [`Permit`] for its estimated tokens (an
//! upper bound from its byte lengths) before it is tokenized; when the model already has
//! `max_queue` requests or `max_queue_tokens` tokens admitted, the answer is 429 at once. The
//! permit shrinks to the real count after tokenizing and is released when the request is
//! answered or dropped. Once the worker has measured its compute rate (tokens per second of
//! forward passes, a moving average), the admitted tokens are also held under what it can do in
//! `QueueLimits::seconds`, so work is refused up front rather than admitted and timed out.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::errors::{ApiError, ApiResult};
use super::metrics::{Hist, Metrics};
use crate::engine::{batch, pool, rerank, Engine, Tokens};
use crate::spec::{Head, ScoreActivation};

/// What to compute for a request's inputs.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Pooled vectors. `prompt_len` leading tokens are left out of pooling when the model says so.
    Embed { prompt_len: usize, dimensions: Option<usize>, normalize: bool },
    /// Reranker scores (pairs already tokenized), activated unless `raw`.
    Score { raw: bool },
}

impl Work {
    /// Inputs can share a forward pass only when they pool the same way.
    fn key(&self) -> usize {
        match self {
            Work::Embed { prompt_len, .. } => *prompt_len,
            Work::Score { .. } => 0,
        }
    }
}

#[derive(Debug)]
pub enum Output {
    Vectors(Vec<Vec<f32>>),
    Scores(Vec<f32>),
}

type Reply = ApiResult<Output>;

struct Job {
    work: Work,
    toks: Vec<Tokens>,
    /// Taken when the request is answered.
    tx: Option<oneshot::Sender<Reply>>,
    enqueued: Instant,
    /// Released when the job is answered or dropped.
    _permit: Permit,
}

struct Inbox {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    ready: Condvar,
    /// Requests admitted and not yet answered (tokenizing, waiting or running).
    depth: AtomicUsize,
    /// Tokens reserved by admitted requests.
    tokens: AtomicUsize,
    /// Measured compute rate in tokens per second (f64 bits; 0 until the first pass).
    rate: AtomicU64,
    /// Signalled when admitted work shrinks: requests waiting for room look again.
    room: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Default padded tokens per forward pass when serving on the CPU (unless `max_batch_tokens` is
/// set): a pass then takes tens of milliseconds, not seconds, so a short request waits at most
/// about one such pass behind a long one; CPU throughput does not grow past about this size
/// (docs/models.md, docs/bench.md).
pub const SERVE_CPU_MAX_BATCH_TOKENS: usize = 1024;

/// How much work one model admits at once.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Requests admitted (tokenizing, waiting or running).
    pub requests: usize,
    /// Estimated tokens of the admitted requests.
    pub tokens: usize,
    /// Admitted work in seconds of the measured compute rate (no bound until it is measured).
    pub seconds: Option<f64>,
}

/// Tokens a queue of `limits` may hold at a compute rate of `rate` tokens per second (0: not yet
/// measured): what that rate computes in `limits.seconds`, never less than four passes of `pass`
/// tokens. (A storm of refused requests slows the passes, which lowers the measured rate, which
/// refuses more; the admission wait bounds that storm to a few refusals per client per second,
/// so the loop settles instead of shrinking the queue to nothing.)
fn capacity(limits: QueueLimits, rate: f64, pass: usize) -> usize {
    match limits.seconds {
        Some(s) if rate > 0.0 && s > 0.0 => {
            let by_time = (rate * s).min(usize::MAX as f64) as usize;
            limits.tokens.min(by_time.max(pass.saturating_mul(4)))
        }
        _ => limits.tokens,
    }
}

/// A request's place in a model's queue: counted in `max_queue` and `max_queue_tokens` until dropped.
pub struct Permit {
    shared: Arc<Shared>,
    tokens: usize,
    metrics: Arc<Metrics>,
    model: Arc<str>,
}

impl Permit {
    /// Tokens this permit holds.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Hold `tokens` instead of the estimate (after tokenizing: usually fewer, which makes room
    /// for others; more only for text whose normalization grows it, never above the capacity).
    pub fn resize(&mut self, tokens: usize, capacity: usize) {
        let tokens = tokens.clamp(1, capacity.max(1));
        if tokens < self.tokens {
            self.shared.tokens.fetch_sub(self.tokens - tokens, Ordering::SeqCst);
            self.shared.room.notify_waiters();
        } else {
            self.shared.tokens.fetch_add(tokens - self.tokens, Ordering::SeqCst);
        }
        self.tokens = tokens;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.tokens.fetch_sub(self.tokens, Ordering::SeqCst);
        let d = self.shared.depth.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        self.metrics.queue_depth(&self.model, d);
        self.shared.room.notify_waiters();
        super::trim::request_done();
    }
}

/// Handle to a model's worker thread. Dropping it lets the worker finish what is queued, then exit.
pub struct Batcher {
    shared: Arc<Shared>,
    model: Arc<str>,
    metrics: Arc<Metrics>,
    limits: QueueLimits,
    /// The engine's padded-token budget of one forward pass.
    max_batch_tokens: usize,
    /// Tokenizations running at once for this model: each holds a chunk of tokenizer state, so
    /// their number (not only their admitted tokens) bounds memory.
    pub tokenizing: Arc<tokio::sync::Semaphore>,
}

impl Batcher {
    pub fn start(
        engine: Arc<Engine>,
        model: String,
        metrics: Arc<Metrics>,
        limits: QueueLimits,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox { jobs: VecDeque::new(), closed: false }),
            ready: Condvar::new(),
            depth: AtomicUsize::new(0),
            tokens: AtomicUsize::new(0),
            rate: AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
        });
        let max_batch_tokens = engine.max_batch_tokens;
        // Half the admitted work's seconds: with the queue ahead (at most those seconds) an
        // admitted request is answered well within the request timeout.
        let max_overtake = Duration::from_secs_f64(limits.seconds.map_or(10.0, |s| (s / 2.0).clamp(0.0, 3600.0)));
        let worker = Worker {
            rate_acc: std::cell::Cell::new((0.0, 0.0)),
            max_overtake,
            engine,
            shared: shared.clone(),
            model: model.clone(),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new().name(format!("embedrank-worker-{model}")).spawn(move || worker.run())?;
        metrics.queue_depth(&model, 0);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Batcher {
            shared,
            model: model.into(),
            metrics,
            limits: QueueLimits { requests: limits.requests.max(1), tokens: limits.tokens.max(1), ..limits },
            max_batch_tokens,
            tokenizing: Arc::new(tokio::sync::Semaphore::new(cores.max(2))),
        })
    }

    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Tokens the queue may hold now: `max_queue_tokens`, or less once the compute rate is
    /// known, what the worker does in `seconds` (never less than one full pass).
    pub fn capacity(&self) -> usize {
        capacity(self.limits, self.rate(), self.max_batch_tokens)
    }

    /// The measured compute rate in tokens per second (0 until the first forward pass).
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.shared.rate.load(Ordering::Relaxed))
    }

    /// [`Self::admit`], but a request that does not fit waits up to `wait` for room (it holds
    /// nothing meanwhile: no permit, no tokenizer work) before its 429. Clients that retry at once
    /// on a 429 then send a few refusals a second each, not thousands, which would take the CPU
    /// from the work that was admitted.
    pub async fn admit_wait(&self, estimate: usize, wait: std::time::Duration) -> ApiResult<Permit> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.shared.room.notified();
            match self.admit(estimate) {
                Ok(p) => return Ok(p),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                // Look again on the next release, or after a short while at the latest (a
                // release between the check and the wait is not missed for longer than that).
                Err(_) => {
                    let nap = deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(50));
                    let _ = tokio::time::timeout_at(nap, notified).await;
                }
            }
        }
    }

    /// Admit a request of about `estimate` tokens, before any work on it: 429 when the model
    /// already has `max_queue` requests or `max_queue_tokens` tokens admitted. An estimate above
    /// the whole capacity is held as the capacity, so such a request runs alone rather than never.
    pub fn admit(&self, estimate: usize) -> ApiResult<Permit> {
        let prev = self.shared.depth.fetch_add(1, Ordering::SeqCst);
        if prev >= self.limits.requests {
            self.shared.depth.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::overloaded(&self.model));
        }
        let cap = self.capacity();
        let want = estimate.clamp(1, cap);
        let mut cur = self.shared.tokens.load(Ordering::SeqCst);
        loop {
            if cur + want > cap {
                self.shared.depth.fetch_sub(1, Ordering::SeqCst);
                let mut e = ApiError::overloaded(&self.model);
                e.message = format!(
                    "model `{}` has too much queued work ({cur} of {cap} tokens; this request needs about {want}); retry later",
                    self.model
                );
                return Err(e);
            }
            match self.shared.tokens.compare_exchange_weak(cur, cur + want, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.metrics.queue_depth(&self.model, prev + 1);
        super::trim::request_started();
        Ok(Permit {
            shared: self.shared.clone(),
            tokens: want,
            metrics: self.metrics.clone(),
            model: self.model.clone(),
        })
    }

    /// Queue an admitted request's tokens for the worker.
    pub fn submit(&self, work: Work, toks: Vec<Tokens>, permit: Permit) -> ApiResult<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        let mut inbox = self.shared.lock();
        inbox.jobs.push_back(Job { work, toks, tx: Some(tx), enqueued: Instant::now(), _permit: permit });
        drop(inbox);
        self.shared.ready.notify_one();
        Ok(rx)
    }

    pub fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::SeqCst)
    }

    /// Tokens reserved by admitted requests.
    pub fn queued_tokens(&self) -> usize {
        self.shared.tokens.load(Ordering::SeqCst)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// A request being worked on: its inputs longest first, and how far we got.
struct Active {
    job: Job,
    order: Vec<usize>,
    next: usize,
    done: usize,
    started: bool,
    /// Tokens of the inputs not yet picked.
    left: usize,
    /// Earliest-deadline-first key: arrival plus how long later requests may overtake it.
    deadline: Instant,
    vectors: Vec<Vec<f32>>,
    scores: Vec<f32>,
    failed: Option<ApiError>,
}

struct Worker {
    /// Decayed (tokens, seconds) of forward passes: the compute rate.
    rate_acc: std::cell::Cell<(f64, f64)>,
    /// The longest a request may be overtaken by later ones (see [`Worker::deadline`]).
    max_overtake: Duration,
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    model: String,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn run(self) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            {
                let mut inbox = self.shared.lock();
                while inbox.jobs.is_empty() && active.is_empty() && !inbox.closed {
                    inbox = self.shared.ready.wait(inbox).unwrap_or_else(|p| p.into_inner());
                }
                if inbox.jobs.is_empty() && active.is_empty() {
                    break; // closed and drained
                }
                active.extend(inbox.jobs.drain(..).map(|job| {
                    let mut order: Vec<usize> = (0..job.toks.len()).collect();
                    order.sort_by(|&a, &b| job.toks[b].len().cmp(&job.toks[a].len()).then(a.cmp(&b)));
                    let n = job.toks.len();
                    let left = job.toks.iter().map(|t| t.len().max(1)).sum();
                    let deadline = self.deadline(job.enqueued, left);
                    Active {
                        job,
                        order,
                        next: 0,
                        done: 0,
                        started: false,
                        left,
                        deadline,
                        vectors: vec![Vec::new(); n],
                        scores: vec![0.0; n],
                        failed: None,
                    }
                }));
            }
            // Clients that went away (closed connection, timeout) get no compute.
            active.retain(|a| {
                if a.job.tx.as_ref().is_some_and(|tx| tx.is_closed()) {
                    self.metrics.dropped(&self.model);
                    false
                } else {
                    true
                }
            });
            if active.is_empty() {
                continue;
            }
            self.step(&mut active);
            let mut i = 0;
            while i < active.len() {
                let a = &active[i];
                if a.job.tx.is_none() || a.failed.is_some() || a.done == a.order.len() {
                    let mut a = active.swap_remove(i);
                    self.reply(&mut a);
                } else {
                    i += 1;
                }
            }
        }
        tracing::debug!(model = %self.model, "worker stopped");
    }

    /// Answer a finished or failed request (once; later calls do nothing). Its permit goes when
    /// the worker drops it from the active set.
    fn reply(&self, a: &mut Active) {
        let Some(tx) = a.job.tx.take() else { return };
        let out = match a.failed.take() {
            Some(e) => Err(e),
            None => match a.job.work {
                Work::Embed { .. } => Ok(Output::Vectors(std::mem::take(&mut a.vectors))),
                Work::Score { raw } => {
                    let act = if raw { ScoreActivation::Identity } else { self.engine.spec.score_activation };
                    Ok(Output::Scores(a.scores.drain(..).map(|s| rerank::activate(s, act)).collect()))
                }
            },
        };
        // The receiver may be gone already; nothing to do then.
        let _ = tx.send(out);
    }

    /// When a request of `tokens` that arrived at `enqueued` is due: after `STRETCH` times the time
    /// it needs alone at the measured rate, at most `max_overtake`. Until then shorter requests
    /// may overtake it; after it, it goes ahead of every request not yet due. Without deadlines a
    /// stream of short requests kept long ones waiting until their request timeout (504s at 200
    /// clients).
    fn deadline(&self, enqueued: Instant, tokens: usize) -> Instant {
        const STRETCH: f64 = 8.0;
        // Before the first pass is measured: assume a full pass per 100 ms.
        let rate = match f64::from_bits(self.shared.rate.load(Ordering::Relaxed)) {
            r if r > 0.0 => r,
            _ => self.engine.max_batch_tokens as f64 * 10.0,
        };
        let alone = Duration::from_secs_f64((tokens as f64 / rate * STRETCH).min(3600.0));
        enqueued + alone.min(self.max_overtake)
    }

    /// Choose one pass's worth of inputs across active requests, then run them in length-sorted
    /// forward passes, the shortest first, answering each request as soon as its last input is
    /// done. Requests past their deadline go first, earliest deadline first, taking what fits;
    /// then the others, fewest tokens left first (a short request overtakes a long one between
    /// its passes), each at most an equal share of the pass.
    fn step(&self, active: &mut [Active]) {
        let budget = self.engine.max_batch_tokens;
        let share = (budget / active.len()).max(1);
        let now = Instant::now();
        // One pass's worth per step, so requests that arrive meanwhile join at the next pass.
        let mut turn: Vec<usize> = (0..active.len()).collect();
        turn.sort_by_key(|&i| {
            let a = &active[i];
            match a.deadline <= now {
                true => (false, a.deadline, 0, a.job.enqueued),
                false => (true, now, a.left, a.job.enqueued),
            }
        });
        // key → (job index, row index)
        let mut picks: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        let mut total = 0;
        for ji in turn {
            let a = &mut active[ji];
            let cap = if a.deadline <= now { budget } else { share };
            let mut used = 0;
            while a.next < a.order.len() {
                let r = a.order[a.next];
                let len = a.job.toks[r].len().max(1);
                if (used > 0 && used + len > cap) || (total > 0 && total + len > budget) {
                    break;
                }
                if !a.started {
                    a.started = true;
                    self.metrics.observe_time(Hist::QueueSeconds, &self.model, a.job.enqueued.elapsed());
                }
                used += len;
                total += len;
                a.left -= len;
                picks.entry(a.job.work.key()).or_default().push((ji, r));
                a.next += 1;
            }
        }
        for (key, rows) in picks {
            let toks: Vec<Tokens> = rows.iter().map(|&(j, r)| active[j].job.toks[r].clone()).collect();
            // A row shorter than a quarter of a pass's width gets a pass of its own, and short
            // passes go first: a one-sentence request beside a 512-token one is neither padded to
            // 512 nor kept waiting for that pass.
            for group in batch::plan_shortest_first(&toks, budget, 4) {
                let t0 = Instant::now();
                let result =
                    std::panic::catch_unwind(AssertUnwindSafe(|| self.forward(&toks, &group, key, active, &rows)));
                let width = group.iter().map(|&i| toks[i].len()).max().unwrap_or(0);
                let took = t0.elapsed();
                self.record_rate(group.iter().map(|&i| toks[i].len()).sum(), took);
                self.metrics.observe_time(Hist::InferenceSeconds, &self.model, took);
                self.metrics.observe(Hist::BatchSize, &self.model, group.len() as f64);
                self.metrics.observe(Hist::BatchTokens, &self.model, (group.len() * width) as f64);
                let err = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(ApiError::internal(format!("inference failed: {e}"))),
                    Err(_) => Some(ApiError::internal("inference failed: the model code panicked")),
                };
                if let Some(e) = err {
                    tracing::error!(model = %self.model, "{e}");
                    for &i in &group {
                        active[rows[i].0].failed.get_or_insert_with(|| e.clone());
                    }
                }
                for &i in &group {
                    let a = &mut active[rows[i].0];
                    if a.failed.is_some() || a.done == a.order.len() {
                        self.reply(a);
                    }
                }
            }
        }
    }

    /// Fold one pass into the compute rate admission reads: tokens over seconds of compute, both
    /// decayed with a 10 s time constant, so many tiny passes do not outweigh a long one.
    fn record_rate(&self, tokens: usize, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        if tokens == 0 || secs <= 0.0 {
            return;
        }
        let (t, s) = self.rate_acc.get();
        let keep = (-secs / 10.0).exp();
        let (t, s) = (t * keep + tokens as f64, s * keep + secs);
        self.rate_acc.set((t, s));
        self.shared.rate.store((t / s).to_bits(), Ordering::Relaxed);
    }

    /// One forward pass over `group` (indices into `toks`/`rows`); results go to their requests.
    fn forward(
        &self,
        toks: &[Tokens],
        group: &[usize],
        key: usize,
        active: &mut [Active],
        rows: &[(usize, usize)],
    ) -> crate::Result<()> {
        let e = &*self.engine;
        let b = batch::build(toks, group, &e.spec, &e.device, e.dtype)?;
        match e.spec.head {
            Head::Pool(pooling) => {
                let pooled = e.pool_batch(&b, pooling, key)?;
                for (v, &i) in pooled.into_iter().zip(group) {
                    let (j, r) = rows[i];
                    let a = &mut active[j];
                    if let Work::Embed { dimensions, normalize, .. } = a.job.work {
                        a.vectors[r] = pool::finish(v, dimensions, normalize);
                    }
                    a.done += 1;
                }
            }
            _ => {
                for (v, &i) in e.score_batch(&b)?.into_iter().zip(group) {
                    let (j, r) = rows[i];
                    active[j].scores[r] = v;
                    active[j].done += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_follows_the_compute_rate_once_measured() {
        let l = QueueLimits { requests: 256, tokens: 1 << 20, seconds: Some(30.0) };
        assert_eq!(capacity(l, 0.0, 1024), 1 << 20, "unmeasured: the token cap");
        assert_eq!(capacity(l, 10_000.0, 1024), 300_000, "30 s at 10k tokens/s");
        assert_eq!(capacity(l, 1e9, 1024), 1 << 20, "never above the token cap");
        assert_eq!(capacity(l, 1.0, 1024), 4096, "never below four passes");
        let small = QueueLimits { tokens: 2000, ..l };
        assert_eq!(capacity(small, 1.0, 1024), 2000, "nor above the token cap");
        assert_eq!(capacity(QueueLimits { seconds: None, ..l }, 10_000.0, 1024), 1 << 20);
    }
}
