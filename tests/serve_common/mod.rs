//! Helpers for the HTTP server tests: spawn `embedrank serve` on a free loopback port, talk to it
//! with a plain HTTP client, and build a tiny BERT cross-encoder from the MiniLM test model.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../common/mod.rs"]
pub mod common;

pub use common::{test_hub, MINILM};

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Start `embedrank serve --port 0 ARGS…` offline against the test hub; wait for its address.
    pub fn start(args: &[&str]) -> Server {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let hub = test_hub();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedrank"));
        cmd.arg("serve").arg("--port").arg("0").arg("--cache-dir").arg(&hub).args(args);
        if !args.contains(&"--request-timeout") {
            // Tests share a few busy cores with builds; the 60 s default is not what they test.
            cmd.args(["--request-timeout", "600s"]);
        }
        cmd.env("HF_HUB_OFFLINE", "1").env_remove("EMBEDRANK_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn embedrank serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("server printed no address in 60s");
        let base =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_string();
        Server { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, None)
    }

    pub fn post_with(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = ureq::post(&self.url(path)).timeout(Duration::from_secs(600));
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        answer(req.send_json(body.clone()))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        answer(ureq::post(&self.url(path)).set("Content-Type", "application/json").send_string(body))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        answer(ureq::get(&self.url(path)).call())
    }

    pub fn get_text(&self, path: &str) -> String {
        ureq::get(&self.url(path)).call().expect("GET").into_string().expect("text")
    }

    /// Value of a metric line `name{labels} v` (first match containing `needle`), 0 when absent.
    pub fn metric(&self, needle: &str) -> f64 {
        self.get_text("/metrics")
            .lines()
            .find(|l| !l.starts_with('#') && l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(resp) => {
            let code = resp.status();
            (code, resp.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// The folder of the MiniLM snapshot in the test hub.
pub fn minilm_dir() -> PathBuf {
    let repo = test_hub().join("models--sentence-transformers--all-MiniLM-L6-v2");
    let commit = std::fs::read_to_string(repo.join("refs/main")).expect("refs/main");
    repo.join("snapshots").join(commit.trim())
}

/// A tiny BERT cross-encoder: MiniLM's encoder and pooler plus a fixed pseudo-random one-label
/// classifier, saved as BertForSequenceClassification. Real weights, so scores vary with the text.
pub fn make_cross_encoder(dir: &Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let src = minilm_dir();
    std::fs::create_dir_all(dir).expect("mkdir");
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy tokenizer file");
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).expect("config")).expect("json");
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["num_labels"] = serde_json::json!(1);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    config["label2id"] = serde_json::json!({"LABEL_0": 0});
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).expect("ser")).expect("write");

    let bytes = std::fs::read(src.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let hidden = config["hidden_size"].as_u64().expect("hidden_size") as usize;
    // Deterministic weights in [-0.5, 0.5): a linear congruential sequence.
    let mut state = 12345u64;
    let w: Vec<u8> = (0..hidden)
        .flat_map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32).to_le_bytes()
        })
        .collect();
    let b: Vec<u8> = 0.1f32.to_le_bytes().to_vec();
    let mut tensors: Vec<(String, TensorView)> = st.tensors().into_iter().collect();
    tensors.push(("classifier.weight".into(), TensorView::new(Dtype::F32, vec![1, hidden], &w).expect("w")));
    tensors.push(("classifier.bias".into(), TensorView::new(Dtype::F32, vec![1], &b).expect("b")));
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).expect("write weights");
}

/// MiniLM with sentence-transformers prompts `query: ` and `passage: ` (as E5-style models have).
pub fn make_prompted_embedder(dir: &Path) {
    let src = minilm_dir();
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("mkdir");
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "model.safetensors",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    let st = serde_json::json!({"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": null});
    std::fs::write(dir.join("config_sentence_transformers.json"), st.to_string()).expect("write");
}

/// A model folder whose spec reads fine but whose weights are garbage: loading it fails.
pub fn make_broken_model(dir: &Path) {
    let src = minilm_dir();
    std::fs::create_dir_all(dir).expect("mkdir");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy");
    }
    std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").expect("write");
}

pub fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("num") as f32).collect())
        .collect()
}

pub fn openai_vectors(v: &Value) -> Vec<Vec<f32>> {
    let data = v["data"].as_array().expect("data");
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"].as_u64(), Some(i as u64), "data in input order");
        assert_eq!(d["object"], "embedding");
    }
    vectors(&Value::Array(data.iter().map(|d| d["embedding"].clone()).collect()))
}

pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "dimension");
            x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

/// Texts of varied length, deterministic.
pub fn texts(n: usize, seed: usize) -> Vec<String> {
    let words = ["embedding", "rerank", "query", "document", "vector", "search", "model", "token", "batch", "server"];
    (0..n)
        .map(|i| {
            (0..1 + (i * 7 + seed * 13) % 60).map(|j| words[(i + j + seed) % words.len()]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}
