//! Prometheus metrics in the text exposition format.
//!
//! Written by hand rather than with the `prometheus` crate: we export a dozen series with one or two
//! labels each, and a small map behind a mutex does that without another dependency tree.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Seconds buckets for tokenization, queue wait and inference.
const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const BATCH_ROWS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const BATCH_TOKENS: &[f64] = &[16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hist {
    BatchSize,
    BatchTokens,
    TokenizeSeconds,
    QueueSeconds,
    InferenceSeconds,
}

impl Hist {
    fn name(self) -> &'static str {
        match self {
            Hist::BatchSize => "embedrank_batch_size",
            Hist::BatchTokens => "embedrank_batch_tokens",
            Hist::TokenizeSeconds => "embedrank_tokenization_duration_seconds",
            Hist::QueueSeconds => "embedrank_queue_duration_seconds",
            Hist::InferenceSeconds => "embedrank_inference_duration_seconds",
        }
    }
    fn help(self) -> &'static str {
        match self {
            Hist::BatchSize => "Inputs per forward pass.",
            Hist::BatchTokens => "Padded tokens per forward pass.",
            Hist::TokenizeSeconds => "Time to tokenize one request.",
            Hist::QueueSeconds => "Time a request waited before its first forward pass.",
            Hist::InferenceSeconds => "Time of one forward pass.",
        }
    }
    fn buckets(self) -> &'static [f64] {
        match self {
            Hist::BatchSize => BATCH_ROWS,
            Hist::BatchTokens => BATCH_TOKENS,
            _ => SECONDS,
        }
    }
    const ALL: [Hist; 5] =
        [Hist::BatchSize, Hist::BatchTokens, Hist::TokenizeSeconds, Hist::QueueSeconds, Hist::InferenceSeconds];
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (route, status code) → count
    requests: BTreeMap<(String, u16), u64>,
    /// model → requests dropped because the client went away
    dropped: BTreeMap<String, u64>,
    queue_depth: BTreeMap<String, i64>,
    loaded: BTreeMap<String, i64>,
    loads: BTreeMap<String, u64>,
    unloads: BTreeMap<String, u64>,
    hists: BTreeMap<(Hist, String), Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update; counters stay usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn request(&self, route: &str, code: u16) {
        self.with(|m| *m.requests.entry((route.to_string(), code)).or_default() += 1);
    }
    pub fn dropped(&self, model: &str) {
        self.with(|m| *m.dropped.entry(model.to_string()).or_default() += 1);
    }
    pub fn queue_depth(&self, model: &str, depth: usize) {
        self.with(|m| m.queue_depth.insert(model.to_string(), depth as i64));
    }
    /// A served model, not loaded yet.
    pub fn register(&self, model: &str) {
        self.with(|m| m.loaded.insert(model.to_string(), 0));
    }
    pub fn set_loaded(&self, model: &str, loaded: bool) {
        self.with(|m| {
            m.loaded.insert(model.to_string(), loaded as i64);
            let c = if loaded { &mut m.loads } else { &mut m.unloads };
            *c.entry(model.to_string()).or_default() += 1;
        });
    }
    pub fn observe(&self, h: Hist, model: &str, v: f64) {
        self.with(|m| {
            let e = m.hists.entry((h, model.to_string())).or_default();
            if e.counts.is_empty() {
                e.counts = vec![0; h.buckets().len()];
            }
            for (i, b) in h.buckets().iter().enumerate() {
                if v <= *b {
                    e.counts[i] += 1;
                }
            }
            e.sum += v;
            e.count += 1;
        });
    }
    pub fn observe_time(&self, h: Hist, model: &str, d: Duration) {
        self.observe(h, model, d.as_secs_f64());
    }

    /// Current value of a model's queue depth (for tests and /v1/models).
    pub fn current_queue_depth(&self, model: &str) -> usize {
        self.with(|m| m.queue_depth.get(model).copied().unwrap_or(0).max(0) as usize)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|m| {
            let _ = writeln!(out, "# HELP embedrank_requests_total HTTP requests by route and status code.");
            let _ = writeln!(out, "# TYPE embedrank_requests_total counter");
            for ((route, code), n) in &m.requests {
                let _ = writeln!(out, "embedrank_requests_total{{route=\"{}\",code=\"{code}\"}} {n}", esc(route));
            }
            let _ = writeln!(out, "# HELP embedrank_errors_total HTTP responses with status >= 400 by route and code.");
            let _ = writeln!(out, "# TYPE embedrank_errors_total counter");
            for ((route, code), n) in m.requests.iter().filter(|((_, c), _)| *c >= 400) {
                let _ = writeln!(out, "embedrank_errors_total{{route=\"{}\",code=\"{code}\"}} {n}", esc(route));
            }
            let per_model =
                |out: &mut String, name: &str, kind: &str, help: &str, map: &dyn Fn() -> Vec<(String, f64)>| {
                    let _ = writeln!(out, "# HELP {name} {help}");
                    let _ = writeln!(out, "# TYPE {name} {kind}");
                    for (model, v) in map() {
                        let _ = writeln!(out, "{name}{{model=\"{}\"}} {v}", esc(&model));
                    }
                };
            let f = |b: &BTreeMap<String, i64>| b.iter().map(|(k, v)| (k.clone(), *v as f64)).collect::<Vec<_>>();
            let g = |b: &BTreeMap<String, u64>| b.iter().map(|(k, v)| (k.clone(), *v as f64)).collect::<Vec<_>>();
            per_model(&mut out, "embedrank_queue_depth", "gauge", "Requests waiting or running per model.", &|| {
                f(&m.queue_depth)
            });
            per_model(&mut out, "embedrank_model_loaded", "gauge", "1 when the model is loaded.", &|| f(&m.loaded));
            per_model(&mut out, "embedrank_model_loads_total", "counter", "Model loads.", &|| g(&m.loads));
            per_model(
                &mut out,
                "embedrank_model_unloads_total",
                "counter",
                "Model unloads (idle or evicted).",
                &|| g(&m.unloads),
            );
            per_model(
                &mut out,
                "embedrank_dropped_requests_total",
                "counter",
                "Requests dropped before (the rest of) their compute because the client went away or timed out.",
                &|| g(&m.dropped),
            );
            for h in Hist::ALL {
                let _ = writeln!(out, "# HELP {} {}", h.name(), h.help());
                let _ = writeln!(out, "# TYPE {} histogram", h.name());
                for ((hh, model), e) in m.hists.iter().filter(|((hh, _), _)| *hh == h) {
                    let model = esc(model);
                    for (b, c) in hh.buckets().iter().zip(&e.counts) {
                        let _ = writeln!(out, "{}_bucket{{model=\"{model}\",le=\"{b}\"}} {c}", h.name());
                    }
                    let _ = writeln!(out, "{}_bucket{{model=\"{model}\",le=\"+Inf\"}} {}", h.name(), e.count);
                    let _ = writeln!(out, "{}_sum{{model=\"{model}\"}} {}", h.name(), e.sum);
                    let _ = writeln!(out, "{}_count{{model=\"{model}\"}} {}", h.name(), e.count);
                }
            }
        });
        if let Some(rss) = resident_memory_bytes() {
            let _ = writeln!(out, "# HELP embedrank_resident_memory_bytes Resident memory of the server process.");
            let _ = writeln!(out, "# TYPE embedrank_resident_memory_bytes gauge");
            let _ = writeln!(out, "embedrank_resident_memory_bytes {rss}");
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident set size from /proc (Linux only; other systems report no value).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // 4 KiB pages on every Linux platform we build for.
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("/v1/embeddings", 200);
        m.request("/v1/embeddings", 429);
        m.observe(Hist::BatchSize, "m", 3.0);
        let t = m.render();
        assert!(t.contains("embedrank_requests_total{route=\"/v1/embeddings\",code=\"200\"} 1"));
        assert!(t.contains("embedrank_errors_total{route=\"/v1/embeddings\",code=\"429\"} 1"));
        assert!(!t.contains("embedrank_errors_total{route=\"/v1/embeddings\",code=\"200\"}"));
        assert!(t.contains("embedrank_batch_size_bucket{model=\"m\",le=\"2\"} 0"));
        assert!(t.contains("embedrank_batch_size_bucket{model=\"m\",le=\"4\"} 1"));
        assert!(t.contains("embedrank_batch_size_count{model=\"m\"} 1"));
    }
}
