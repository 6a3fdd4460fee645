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
    // Random weights separate the documents by hundredths of a logit: never a pass.
    assert!(!ranked, "a random-weight reranker passed the ranking probe: {}", probes[1]);
    assert_eq!(m["passed"], ranked);
    assert_eq!(out.status.code(), Some(if ranked { 0 } else { 1 }));
    assert!(m["latency_ms"].as_f64().is_some_and(|x| x > 0.0));
    assert!(m["throughput_per_s"].as_f64().is_some_and(|x| x > 0.0));
}

/// A copy of a tiny model with its config.json edited.
fn edited_copy(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let src = common::tiny_dir().join(name);
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
        } else {
            let d = tmp.path().join(e.file_name());
            std::fs::create_dir_all(&d).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
            }
        }
    }
    let p = tmp.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    tmp
}

#[test]
fn check_lists_unknown_config_keys_and_the_rope_it_read() {
    let hub = common::test_hub();
    let d = edited_copy("tiny-Qwen3-Reranker", |c| {
        c["fancy_new_norm"] = Value::Bool(true);
        c.as_object_mut().unwrap().remove("rope_theta");
        c["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0, "rope_theta": 1000000.0,
                                                   "original_max_position_embeddings": 16});
    });
    let out = bin(&hub).args(["check", "--json"]).arg(d.path()).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let m = &v["models"][0];
    assert_eq!(m["unknown_config_keys"], serde_json::json!(["fancy_new_norm"]), "{m}");
    assert!(m["rope"].as_str().unwrap().contains("yarn ×4"), "{m}");
    assert!(m["rope"].as_str().unwrap().contains("theta 1000000"), "{m}");
    // The table says it too.
    let out = bin(&hub).arg("check").arg(d.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fancy_new_norm"), "{text}");
}

#[test]
fn rope_types_we_do_not_implement_fail_by_name() {
    let hub = common::test_hub();
    for (rope, want) in [
        (serde_json::json!({"rope_type": "longrope", "rope_theta": 1e6}), "longrope"),
        (serde_json::json!({"rope_type": "su", "rope_theta": 1e6}), "`su`"),
        (serde_json::json!({"rope_type": "yarn", "factor": 4.0, "mrope_section": [1, 2]}), "mrope_section"),
    ] {
        let d = edited_copy("tiny-qwen3-embedding", |c| c["rope_parameters"] = rope.clone());
        let out = bin(&hub).args(["embed", "-m"]).arg(d.path()).arg("hello").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{rope} loaded");
        assert!(err.contains(want) && err.contains("rope"), "{rope}: {err}");
    }
}

#[test]
fn check_backends_prints_agreement_of_every_path() {
    let hub = common::test_hub();
    let out = bin(&hub).args(["check", "--backends", "--json", common::MINILM]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = v["models"][0]["results"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["backend"].as_str().unwrap()).collect();
    assert!(names.contains(&"cpu generic tensor path") && names.contains(&"cpu --dtype int8"), "{names:?}");
    for r in &rows[1..] {
        assert_eq!(r["ran"], true, "{r}");
        assert!(r["min_cosine"].as_f64().unwrap() >= 0.999, "{r}");
    }
    // A reranker: scores and ranking compared; the table form.
    let out = bin(&hub)
        .args(["check", "--backends"])
        .arg(common::tiny_dir().join("tiny-bert-cross-encoder"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("cpu generic tensor path") && text.contains("same") && text.contains("PASS"), "{text}");
    // An MLX 4-bit model: each quantized kernel's SIMD level against the float-activation reference.
    let q = tempfile::tempdir().unwrap();
    let out = bin(&hub)
        .arg("convert")
        .arg(common::tiny_dir().join("tiny-qwen3-embedding"))
        .args(["--bits", "4", "--group-size", "32", "-q", "--force", "--out"])
        .arg(q.path().join("q4"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin(&hub).args(["check", "--backends", "--json"]).arg(q.path().join("q4")).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(0), "{v}");
    let rows = v["models"][0]["results"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["backend"] == "cpu quantized kernel scalar" && r["min_cosine"].as_f64() >= Some(0.9999)),
        "{v}"
    );
    // A model that cannot load fails the run.
    let out = bin(&hub).args(["check", "--backends", "no-such/model"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}
