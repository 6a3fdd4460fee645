//! The client matrix: every popular client library, unchanged, against `embedrank serve`
//! (scripts/client_matrix.py: openai, cohere v1/v2, huggingface_hub, langchain-openai,
//! langchain-cohere, llama-index), each compared with the CLI's vectors and scores. Needs the
//! Python packages pinned in scripts/requirements-ci.txt (EMBEDRANK_PYTHON, else `.venv/bin/python`);
//! fails, not skips, without them. Ports 19300-19349.

mod serve_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serve_common::*;
use sha2::Digest;

/// tiktoken's cache name for cl100k_base: sha1 of its download URL.
const CL100K_CACHE_NAME: &str = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4";
/// The sha256 tiktoken checks the file against.
const CL100K_SHA256: &str = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7";

/// Writes cl100k_base.tiktoken (one `base64(token bytes) rank` line per rank) from the table
/// compiled into embedrank (tiktoken-rs) into a TIKTOKEN_CACHE_DIR, so Python's tiktoken never
/// downloads it; the file must be byte-identical to OpenAI's or tiktoken refuses it.
fn tiktoken_cache(dir: &Path) -> PathBuf {
    let bpe = tiktoken_rs::cl100k_base().expect("cl100k_base");
    let mut text = String::new();
    let mut rank = 0u32;
    while let Ok(bytes) = bpe.decode_bytes(&[rank]) {
        if bytes.starts_with(b"<|") && bytes.ends_with(b"|>") {
            break; // special tokens follow the ranks and are not in the file
        }
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        text.push_str(&format!(" {rank}\n"));
        rank += 1;
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, CL100K_SHA256, "rebuilt cl100k_base differs from OpenAI's file ({rank} ranks)");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(CL100K_CACHE_NAME), text).expect("write cl100k");
    dir.to_path_buf()
}

fn python() -> String {
    let python = std::env::var("EMBEDRANK_PYTHON")
        .unwrap_or_else(|_| common::repo_root().join(".venv/bin/python").to_string_lossy().into_owned());
    let mods = "import openai, cohere, huggingface_hub, langchain_openai, langchain_cohere, tiktoken, \
                llama_index.embeddings.openai, llama_index.postprocessor.cohere_rerank, numpy";
    let probe = Command::new(&python).args(["-c", mods]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "`{python}` cannot import the clients: run `.venv/bin/pip install -r scripts/requirements-ci.txt` \
         or set EMBEDRANK_PYTHON"
    );
    python
}

fn matrix(extra: &[&str]) -> (bool, String) {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tiktoken_cache(&tmp.path().join("tiktoken"));
    let out = Command::new(python())
        .arg(common::repo_root().join("scripts/client_matrix.py"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_embedrank"))
        .arg("--cache-dir")
        .arg(test_hub())
        .args(["--model", MINILM])
        .arg("--cross-encoder")
        .arg(common::tiny_dir().join("tiny-bert-cross-encoder"))
        .arg("--tiktoken-cache")
        .arg(&cache)
        .args(extra)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

/// One test, so the two servers never race for a port.
#[test]
fn every_client_agrees_with_the_cli() {
    let (ok, out) = matrix(&[]);
    assert!(ok, "client matrix failed:\n{out}");
    assert!(out.contains("20 of 20 pass"), "{out}");

    // Without decoding (token_ids = "model"), langchain-openai's default mode is wrong: the matrix
    // must see that, so the passing run above means something.
    let (ok, out) = matrix(&["--only", "langchain_openai", "--serve-arg=--token-ids", "--serve-arg=model"]);
    assert!(!ok, "{out}");
    let row = out.lines().find(|l| l.contains("default (tiktoken ids)")).unwrap_or_default();
    assert!(row.contains("FAIL"), "{out}");
    assert!(out.lines().any(|l| l.contains("check_embedding_ctx_length=False") && l.contains("pass")), "{out}");
}

/// The routes behind the matrix, by hand: token_ids modes, TEI's task routes, Cohere embed's
/// refusals.
#[test]
fn token_id_modes_task_routes_and_cohere_refusals() {
    use serde_json::json;
    let ce = common::tiny_dir().join("tiny-bert-cross-encoder");
    let ce_arg = format!("ce={}", ce.display());
    let bpe = tiktoken_rs::cl100k_base().expect("cl100k");
    let cl100k = bpe.encode_ordinary("hello world");
    let model_ids = vec![101u32, 7592, 2088, 102]; // MiniLM's [CLS] hello world [SEP]

    let srv = Server::start(&["--model", MINILM, "--model", &ce_arg, "--token-ids", "reject"]);
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": [cl100k]}));
    assert_eq!(c, 422, "{b}");
    assert!(b["error"]["message"].as_str().unwrap_or_default().contains("token_ids"), "{b}");
    // TEI's /embed keeps the model's own ids whatever the setting.
    let (c, plain) = srv.post("/embed", &json!({"inputs": "hello world"}));
    assert_eq!(c, 200, "{plain}");
    let (c, b) = srv.post("/embed", &json!({"inputs": [model_ids.clone()]}));
    assert_eq!(c, 200, "{b}");
    assert_eq!(b, plain);

    // GET / describes; POST / and /invocations answer by body and model task.
    let (c, b) = srv.get("/");
    assert_eq!(c, 200, "{b}");
    assert_eq!(b["name"], "embedrank");
    assert_eq!(b["models"][1]["task"], "rerank");
    let (c, b) = srv.post("/", &json!({"inputs": "hello world"}));
    assert_eq!((c, &b), (200, &plain));
    let (c, b) = srv.post("/invocations", &json!({"query": "q", "texts": ["a", "b"]}));
    assert_eq!(c, 200, "{b}");
    assert_eq!(b.as_array().map(Vec::len), Some(2), "{b}");
    let (c, b) = srv.post("/", &json!({"model": "ce", "inputs": [["q", "a"], ["q", "b"], ["x", "b"]]}));
    assert_eq!(c, 200, "{b}");
    assert_eq!(b.as_array().map(Vec::len), Some(3), "{b}");
    assert_eq!(b[0][0]["label"], "LABEL_0", "{b}");
    let (c, one) = srv.post("/predict", &json!({"model": "ce", "inputs": ["q", "a"]}));
    assert_eq!(c, 200, "{one}");
    assert_eq!(one[0]["score"], b[0][0]["score"], "a pair alone scores as in a batch");
    let (c, b) = srv.post("/predict", &json!({"model": "ce", "inputs": [["only one"]]}));
    assert_eq!(c, 422, "{b}");

    // Cohere embed refusals are typed 4xx.
    for body in [
        json!({"texts": ["x"], "truncate": "MIDDLE"}),
        json!({"texts": ["x"], "embedding_types": ["int4"]}),
        json!({"texts": ["x"], "embedding_types": []}),
        json!({"texts": ["x"], "input_type": "sideways"}),
        json!({"images": ["data:image/png;base64,AAAA"]}),
        json!({"texts": ["x"], "output_dimension": 4096}),
    ] {
        let (c, b) = srv.post("/v2/embed", &body);
        assert_eq!(c, 422, "{body}: {b}");
        assert_eq!(b["error"]["code"], "invalid_value", "{body}: {b}");
    }
    let long = "word ".repeat(400);
    let (c, b) = srv.post("/v1/embed", &json!({"texts": [long], "truncate": "NONE"}));
    assert_eq!(c, 413, "{b}");
    // START keeps the end of a long text: the same vector as the text's last 254 tokens alone (the
    // window less [CLS] and [SEP]); END gives the vector of its first 254, a different one.
    let long = (0..600).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let ids = srv.post("/tokenize", &json!({"inputs": long, "add_special_tokens": false})).1;
    let n = ids[0].as_array().map(Vec::len).unwrap_or(0);
    assert!(n > 600, "{n} tokens");
    let kept: Vec<u32> =
        ids[0].as_array().expect("ids")[n - 254..].iter().map(|t| t["id"].as_u64().expect("id") as u32).collect();
    let with_specials: Vec<u32> = [101u32].iter().chain(&kept).chain(&[102u32]).copied().collect();
    let want = srv.post("/embed", &json!({"inputs": [with_specials]})).1;
    let (c, start) =
        srv.post("/v2/embed", &json!({"texts": [long], "truncate": "START", "embedding_types": ["float"]}));
    assert_eq!(c, 200, "{start}");
    let (c, end) = srv.post("/v2/embed", &json!({"texts": [long], "truncate": "END", "embedding_types": ["float"]}));
    assert_eq!(c, 200, "{end}");
    let cos = |a: &serde_json::Value, b: &serde_json::Value| -> f64 {
        let (a, b) = (a.as_array().expect("vector"), b.as_array().expect("vector"));
        a.iter().zip(b).map(|(x, y)| x.as_f64().unwrap_or(0.0) * y.as_f64().unwrap_or(0.0)).sum()
    };
    assert!(cos(&start["embeddings"]["float"][0], &want[0]) > 0.99999, "START is the last tokens' vector");
    assert!(cos(&end["embeddings"]["float"][0], &want[0]) < 0.99, "END differs");
    // TEI's truncation_direction left is the same cut.
    let (c, left) = srv.post("/embed", &json!({"inputs": long, "truncation_direction": "left"}));
    assert_eq!(c, 200, "{left}");
    assert!(cos(&left[0], &want[0]) > 0.99999);
    let (c, b) = srv.post("/embed", &json!({"inputs": long, "truncation_direction": "Left", "truncate": false}));
    assert_eq!(c, 413, "no truncation wins over the direction: {b}");
    let (c, b) =
        srv.post("/rerank", &json!({"model": "ce", "query": "q", "texts": ["a"], "truncation_direction": "left"}));
    assert_eq!(c, 422, "{b}");
    drop(srv);

    // token_ids = "model": OpenAI-route ids are the model's own (the old behaviour).
    let srv = Server::start(&["--model", MINILM, "--token-ids", "model"]);
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": [model_ids]}));
    assert_eq!(c, 200, "{b}");
    assert_eq!(b["data"][0]["embedding"], plain[0]);
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": [cl100k]}));
    assert!(c == 422 || b["data"][0]["embedding"] != plain[0], "cl100k ids taken as the model's: {b}");
}

/// `/openapi.json` describes every route from the handlers' own types, and `/docs` renders it in
/// a real headless browser (Debian's chromium, installed by scripts/setup.sh). Both are public
/// like /health, since a browser cannot send the bearer key.
#[test]
fn openapi_document_and_docs_page_render_in_chromium() {
    let srv = Server::start(&["--model", MINILM, "--api-key", "sk-docs"]);
    let (c, doc) = srv.get("/openapi.json");
    assert_eq!(c, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in [
        ("post", "/v1/embeddings"),
        ("post", "/v1/rerank"),
        ("post", "/v2/rerank"),
        ("post", "/v1/embed"),
        ("post", "/v2/embed"),
        ("post", "/embed"),
        ("post", "/rerank"),
        ("post", "/predict"),
        ("post", "/tokenize"),
        ("post", "/"),
        ("get", "/"),
        ("post", "/invocations"),
        ("get", "/info"),
        ("get", "/v1/models"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    for (name, field) in [
        ("EmbeddingsRequest", "dimensions"),
        ("CohereEmbedRequest", "embedding_types"),
        ("TeiEmbedRequest", "truncation_direction"),
        ("RerankRequest", "max_tokens_per_doc"),
        ("TeiRerankRequest", "raw_scores"),
    ] {
        assert!(schemas[name]["properties"].get(field).is_some(), "{name}.{field}: {}", schemas[name]);
    }

    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("no chromium: run scripts/setup.sh (apt-get install chromium)");
    let profile = tempfile::tempdir().expect("tmp");
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(srv.url("/docs"))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let count = paths.values().map(|p| p.as_object().map_or(0, |m| m.len())).sum::<usize>();
    assert!(dom.contains(&format!("data-count=\"{count}\"")), "page did not render {count} operations:\n{dom}");
    assert!(dom.contains("data-op=\"POST /v2/embed\""), "{dom}");
    assert!(dom.contains("CohereEmbedRequest"), "{dom}");
}
