//! Entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`) and of their bounded
//! replay in `tests/fuzz_corpus.rs`. Each takes arbitrary bytes and must return; a panic, an
//! abort or a broken answer is a finding.
//!
//! The request-body targets go through the whole server in-process ([`crate::server::build`]:
//! every layer, handler, tokenizer and forward pass, on tiny seeded models), and check the answer:
//! never a 5xx, always a JSON body, an error always in the `{"error": {...}}` shape.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use tower::ServiceExt;

use crate::server::ServeConfig;

/// Fuzz target name → the route its bodies go to.
pub const ROUTES: &[(&str, &str)] = &[
    ("openai_embeddings", "/v1/embeddings"),
    ("cohere_embed", "/v2/embed"),
    ("cohere_embed_v1", "/v1/embed"),
    ("rerank", "/v1/rerank"),
    ("rerank_v2", "/v2/rerank"),
    ("tei_embed", "/embed"),
    ("tei_rerank", "/rerank"),
    ("tei_tokenize", "/tokenize"),
    ("tei_predict", "/predict"),
    ("root_task", "/"),
];

/// The route of a request-body target.
pub fn route(target: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(t, _)| *t == target).map(|(_, r)| *r)
}

struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
}

/// Where the harness's tiny models live: `EMBEDRANK_FUZZ_MODELS`, else `.cache/fuzz-models` in
/// the source tree; written on first use from the test tokenizers (scripts/fetch-test-models.sh):
/// the MiniLM snapshot in `EMBEDRANK_TEST_HUB` (else `.cache/hub`) and the Qwen3 tokenizer's
/// folder `EMBEDRANK_TEST_TOKENIZERS` (else `.cache/tokenizers`), so prebuilt fuzz binaries run
/// on another machine (scripts/fuzz.sh --prebuilt).
fn models_dir() -> PathBuf {
    std::env::var_os("EMBEDRANK_FUZZ_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/fuzz-models"))
}

fn write_models(dir: &Path) -> crate::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let marker = dir.join(".complete-v1");
    if marker.exists() {
        return Ok(());
    }
    let hub = std::env::var_os("EMBEDRANK_TEST_HUB").map_or_else(|| root.join(".cache/hub"), PathBuf::from);
    let opts = crate::source::ResolveOptions { roots: crate::source::CacheRoots::new(vec![hub]), offline: true };
    let minilm = crate::source::resolve("sentence-transformers/all-MiniLM-L6-v2", &opts)?.dir;
    let tmp = dir.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tokenizers =
        std::env::var_os("EMBEDRANK_TEST_TOKENIZERS").map_or_else(|| root.join(".cache/tokenizers"), PathBuf::from);
    crate::synth::tiny::write_all(&tmp, &tokenizers.join("qwen3"), &minilm)?;
    crate::synth::tiny::write_bert_embedder(&tmp.join("tiny-bert-embedder"), &minilm, [32, 2, 4, 64])?;
    std::fs::write(tmp.join(".complete-v1"), b"").map_err(|e| crate::Error::io(&tmp, e))?;
    if std::fs::rename(&tmp, dir).is_err() {
        // Another fuzz process finished first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// The served models: a BERT and a Qwen3 embedder, a BERT cross-encoder and a Qwen3-Reranker,
/// so every tokenization path (pairs, templates, prompts, instructions, token ids) is reachable.
/// Inputs and documents are capped at 16 a request (the defaults are 2,048 and 1,000): the paths
/// past the cap are the same code, and without it mutated bodies of hundreds of documents made an
/// execution hundreds of forward passes (52 executions a second a process on /v1/rerank).
fn harness_config(dir: &Path) -> String {
    let m = |id: &str, sub: &str, extra: &str| {
        format!("[[models]]\nid = \"{id}\"\nsource = {:?}\n{extra}\n", dir.join(sub).display().to_string())
    };
    [
        "max_client_batch_size = 16\nmax_rerank_documents = 16\n".to_string(),
        m("bert", "tiny-bert-embedder", ""),
        m("qwen3", crate::synth::tiny::QWEN3_EMBED, "instruction = \"Find the passage\""),
        m("rerank", crate::synth::tiny::BERT_CROSS_ENCODER, ""),
        m("qwen3-rerank", crate::synth::tiny::QWEN3_RERANKER, "alias = [\"qr\"]"),
        m("bert-ids", "tiny-bert-embedder", "token_ids = \"model\""),
    ]
    .concat()
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = models_dir();
        if let Err(e) = write_models(&dir) {
            panic!(
                "fuzz harness: cannot write its models in {} ({e}); run scripts/fetch-test-models.sh",
                dir.display()
            );
        }
        let text = harness_config(&dir);
        let cfg = match ServeConfig::parse(&text, Path::new("fuzz-harness.toml")) {
            Ok(c) => c,
            Err(e) => panic!("fuzz harness config: {e}\n{text}"),
        };
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => panic!("fuzz harness runtime: {e}"),
        };
        let app = match rt.block_on(crate::server::build(&cfg)) {
            Ok(a) => a,
            Err(e) => panic!("fuzz harness server: {e}"),
        };
        Harness { rt, router: app.router }
    })
}

/// What a request answered.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// POST `body` to `path` on the in-process server and check the answer (see the module docs).
pub fn post(path: &str, body: &[u8]) -> Answer {
    let h = harness();
    let req = Request::post(path).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_vec()));
    let req = match req {
        Ok(r) => r,
        Err(e) => panic!("request for {path}: {e}"),
    };
    let answer = h.rt.block_on(async {
        let resp = match h.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status().as_u16();
        let body = match axum::body::to_bytes(resp.into_body(), usize::MAX).await {
            Ok(b) => b.to_vec(),
            Err(e) => panic!("{path}: unreadable answer body: {e}"),
        };
        Answer { status, body }
    });
    check_answer(path, body, &answer);
    answer
}

fn check_answer(path: &str, request: &[u8], a: &Answer) {
    let show = || {
        format!(
            "POST {path} {:?} -> {} {}",
            String::from_utf8_lossy(request),
            a.status,
            String::from_utf8_lossy(&a.body)
        )
    };
    assert!(a.status < 500, "server error: {}", show());
    let v: serde_json::Value = match serde_json::from_slice(&a.body) {
        Ok(v) => v,
        Err(e) => panic!("answer is not JSON ({e}): {}", show()),
    };
    if a.status >= 400 {
        let err = v.get("error");
        assert!(
            err.and_then(|e| e.get("message")).is_some_and(serde_json::Value::is_string),
            "error without an OpenAI-style body: {}",
            show()
        );
    } else {
        assert!(!contains_null_number(&v), "a null where a number belongs (NaN?): {}", show());
    }
}

/// A `null` inside an array of numbers: how serde writes a NaN or infinite f32.
fn contains_null_number(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Array(a) => {
            (a.iter().any(Value::is_null) && a.iter().any(Value::is_number)) || a.iter().any(contains_null_number)
        }
        Value::Object(o) => o.values().any(contains_null_number),
        _ => false,
    }
}

/// A request body for a route's target.
pub fn request_body(target: &str, data: &[u8]) {
    match route(target) {
        Some(path) => {
            post(path, data);
        }
        None => panic!("no route for fuzz target `{target}`"),
    }
}

/// `serve --config FILE`: parse and every check made before models load.
pub fn serve_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = ServeConfig::parse(text, Path::new("fuzz.toml")) else { return };
    let _ = cfg.check();
    let _ = cfg.conn_limits();
    let _ = cfg.request_caps();
    for m in &cfg.models {
        let _ = cfg.keep_alive_for(m);
    }
}

/// The wanted list of `status` (TOML) and the `org/name@revision` references in it.
pub fn wanted_list(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = crate::source::ModelRef::parse(text);
    if let Ok(list) = crate::source::wanted::parse(text, Path::new("wanted.toml")) {
        let inv = crate::source::inventory::Inventory { roots: Vec::new(), repos: Vec::new() };
        let _ = crate::source::wanted::evaluate(&list, &inv, Some(Path::new("/nonexistent")));
    }
}

/// A whole safetensors file: the weight loader's header checks, the cache inventory's summary,
/// and the safetensors crate's own parse of a file both accept.
pub fn safetensors(data: &[u8]) {
    let path = Path::new("fuzz.safetensors");
    let ours = crate::weights::check_safetensors_bytes(path, data);
    if let Some(n) = data.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())) {
        if let Some(header) = usize::try_from(n).ok().and_then(|n| data.get(8..8usize.checked_add(n)?)) {
            let _ = crate::source::inventory::summarize_safetensors_header(header, data.len() as u64);
        }
    }
    if let Ok(entries) = ours {
        if let Ok(st) = safetensors::SafeTensors::deserialize(data) {
            for (name, e) in entries {
                // Where both accept the file, they agree on every tensor's bytes.
                if let Ok(t) = st.tensor(&name) {
                    assert_eq!(t.data().len() as u64, e.len, "tensor `{name}`: sizes disagree");
                }
            }
        }
    }
}

/// config.json: the architecture, every key audited, validated, the rotary frequencies.
pub fn model_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("config.json");
    let Ok(raw) = crate::spec::RawConfig::from_text(text, path) else { return };
    let _ = crate::spec::Quantization::from_config(&raw.value, path);
    if let Ok((crate::spec::Arch::Qwen3(c), _)) = crate::spec::read_arch(&raw, path) {
        let f = c.rope.inv_freq(c.head_dim());
        assert_eq!(f.len(), c.head_dim() / 2);
        let _ = c.rope.describe();
    }
}

/// Every non-HTTP target by name (the HTTP ones go through [`request_body`]).
pub fn run(target: &str, data: &[u8]) {
    match target {
        "serve_config" => serve_config(data),
        "wanted_list" => wanted_list(data),
        "safetensors" => safetensors(data),
        "model_config" => model_config(data),
        t => request_body(t, data),
    }
}

/// Every target's name.
pub fn targets() -> Vec<&'static str> {
    let mut t: Vec<&str> = ROUTES.iter().map(|(t, _)| *t).collect();
    t.extend(["serve_config", "wanted_list", "safetensors", "model_config"]);
    t
}
