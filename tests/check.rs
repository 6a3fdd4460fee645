//! `embedrank check` on the real test model (probes pass, numbers reported) and on models that
//! cannot pass (missing, broken files): exit codes and messages.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bin(hub: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.env("HF_HUB_CACHE", hub).env_remove("EMBEDRANK_CACHE_DIRS").env_remove("HF_HOME").env_remove("HF_HUB_OFFLINE");
    c
}

#[test]
fn check_passes_on_the_test_model() {
    let hub = common::test_hub();
    let out = bin(&hub).args(["check", common::MINILM, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["passed"], true);
    let m = &v["models"][0];
    assert_eq!(m["task"], "embedding");
    let names: Vec<&str> = m["probes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shape", "unit_norm", "paraphrase"]);
    assert!(m["probes"].as_array().unwrap().iter().all(|p| p["passed"] == true));
    for k in ["load_ms", "latency_ms", "throughput_per_s", "tokens_per_s"] {
        assert!(m[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {}", m[k]);
    }
    if cfg!(target_os = "linux") {
        assert!(m["peak_rss_bytes"].as_u64().is_some_and(|x| x > 10 << 20), "the model's weights alone are 90 MB");
    }
}

#[test]
fn check_defaults_to_the_wanted_list() {
    let hub = common::test_hub();
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("w.toml");
    std::fs::write(&w, format!("[[model]]\nrepo = \"{}\"\n[[model]]\nrepo = \"acme/not-here\"\n", common::MINILM))
        .unwrap();
    let out = bin(&hub).args(["check", "--wanted"]).arg(&w).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(common::MINILM) && text.contains("PASS") && !text.contains("acme/not-here"), "{text}");

    // Nothing of the list available: nothing verified, exit 1.
    std::fs::write(&w, "[[model]]\nrepo = \"acme/not-here\"\n").unwrap();
    let out = bin(&hub).args(["check", "--wanted"]).arg(&w).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model to check"));
}

#[test]
fn check_fails_on_missing_and_broken_models() {
    let hub = common::test_hub();
    // A folder with a config but a tokenizer and weights that do not load.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken-model");
    std::fs::create_dir_all(&broken).unwrap();
    let src = common::spec(common::MINILM).dir;
    std::fs::copy(src.join("config.json"), broken.join("config.json")).unwrap();
    std::fs::write(broken.join("tokenizer.json"), "{not json").unwrap();
    std::fs::write(broken.join("model.safetensors"), b"\x08\0\0\0\0\0\0\0{}").unwrap();
    let out = bin(&hub).args(["check", common::MINILM, "acme/not-here", "--json"]).arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["passed"], false);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models[0]["passed"], true, "a good model still passes beside bad ones");
    assert_eq!(models[1]["passed"], false);
    assert!(models[1]["error"].as_str().unwrap().contains("not found"), "{}", models[1]["error"]);
    assert_eq!(models[2]["passed"], false);
    assert!(models[2]["error"].as_str().unwrap().contains("tokenizer"), "{}", models[2]["error"]);

    let out = bin(&hub).arg("check").arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

#[test]
fn check_runs_reranker_probes() {
    use embedrank::synth::{write_checkpoint, Naming, SynthOptions};
    // A random-weight BERT cross-encoder with MiniLM's tokenizer: the probes must run and the exit
    // code must follow the ranking probe (random weights may rank either way, deterministically).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("tiny-cross-encoder");
    let cfg = serde_json::json!({
        "architectures": ["BertForSequenceClassification"], "model_type": "bert",
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2, "vocab_size": 30522,
        "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}
    });
    let opts = SynthOptions { seed: 7, std: 0.1, dtype: candle_core::DType::F32, naming: Naming::Prefixed };
    write_checkpoint(&d, &cfg, &opts).unwrap();
    let src = common::spec(common::MINILM).dir;
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let out = bin(&common::test_hub()).arg("check").arg(&d).arg("--json").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let m = &v["models"][0];
    assert_eq!(m["task"], "reranker", "{m}");
    assert_eq!(m["error"], Value::Null);
    let probes = m["probes"].as_array().unwrap();
    let names: Vec<&str> = probes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shape", "ranking"]);
    assert_eq!(probes[0]["passed"], true, "3 finite scores");
    let ranked = probes[1]["passed"].as_bool().unwrap();
    assert_eq!(m["passed"], ranked);
    assert_eq!(out.status.code(), Some(if ranked { 0 } else { 1 }));
    assert!(m["latency_ms"].as_f64().is_some_and(|x| x > 0.0));
    assert!(m["throughput_per_s"].as_f64().is_some_and(|x| x > 0.0));
}
