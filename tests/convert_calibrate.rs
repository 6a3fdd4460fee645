//! `embedrank convert --calibrate` end to end: the report (JSON on stdout, quantization_report.json
//! and the README section), `--eval`/`--eval-sts` scoring of the float model and of each candidate,
//! a reranker's score agreement, and the refusals.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::eval_data::{tiny_beir, tiny_sts};
use common::*;
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.env("HF_HUB_OFFLINE", "1").env_remove("HF_HUB_CACHE").env("HF_HOME", repo_root().join(".cache/none"));
    c.arg("--quiet");
    c
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn frac(v: &Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((0.0..=1.0).contains(&x), "{x} outside 0..1");
    x
}

#[test]
fn embedder_candidates_are_scored_on_the_eval_data_beside_the_float_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("beir");
    tiny_beir(&data);
    let sts = tmp.path().join("sts.csv");
    tiny_sts(&sts);
    let out = tmp.path().join("q4");
    let o = bin()
        .args(["convert", MINILM, "--cache-dir"])
        .arg(test_hub())
        .args(["--bits", "4", "--calibrate", "--method", "rtn", "--json", "--eval"])
        .arg(&data)
        .arg("--eval-sts")
        .arg(&sts)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let v = json_of(&o);
    let cal = &v["calibration"];
    assert_eq!(cal["method"], "rtn", "{cal}");
    let float = &cal["float_eval"];
    assert!(frac(&float["ndcg_at_10"]) > 0.9, "paraphrase queries find their document: {float}");
    assert_eq!(frac(&float["recall_at_100"]), 1.0, "{float}");
    assert!(float["sts_spearman"].as_f64().unwrap() > 0.8, "{float}");
    let cands = cal["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 1, "{cal}");
    let q = &cands[0]["eval"];
    frac(&q["ndcg_at_10"]);
    frac(&q["recall_at_100"]);
    assert!(q["sts_spearman"].as_f64().unwrap().abs() <= 1.0, "{q}");

    // The file on disk says the same, and the README shows the evaluation table.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quantization_report.json")).unwrap()).unwrap();
    assert_eq!(report["float_eval"], *float);
    assert_eq!(report["candidates"][0]["eval"], *q);
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("nDCG@10") && readme.contains("STS Spearman"), "{readme}");

    // The candidate's score is the written model's: `embedrank eval` on the output agrees.
    let e = json_of(
        &bin()
            .args(["eval", "--no-cache", "--json", "--model"])
            .arg(&out)
            .arg("--data")
            .arg(&data)
            .arg("--sts")
            .arg(&sts)
            .output()
            .unwrap(),
    );
    let m = &e["retrieval"]["rows"][0]["metrics"];
    assert!((m["ndcg@10"].as_f64().unwrap() - q["ndcg_at_10"].as_f64().unwrap()).abs() < 1e-9, "{m} vs {q}");
    let sp = e["sts"]["rows"][0]["spearman"].as_f64().unwrap();
    assert!((sp - q["sts_spearman"].as_f64().unwrap()).abs() < 1e-9, "{sp} vs {q}");
}

fn reranker() -> std::path::PathBuf {
    tiny_dir().join(embedrank::synth::tiny::QWEN3_RERANKER)
}

#[test]
fn reranker_candidates_report_score_agreement() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q4");
    let o = bin()
        .arg("convert")
        .arg(reranker())
        .args(["--bits", "4", "--group-size", "32", "--calibrate", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let v = json_of(&o);
    let cal = &v["calibration"];
    assert_eq!(cal["task"], "rerank", "{cal}");
    let cands = cal["candidates"].as_array().unwrap();
    let names: Vec<&str> = cands.iter().map(|c| c["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["rtn", "gptq", "gptq-refit"], "auto measures every method");
    for c in cands {
        let held = &c["held"];
        assert!(held["score_diff_mean"].as_f64().unwrap() >= 0.0, "{c}");
        assert!(held["score_diff_max"].as_f64().unwrap() >= held["score_diff_mean"].as_f64().unwrap(), "{c}");
        frac(&held["same_order"]);
        frac(&held["same_top"]);
        assert!(held.get("cosine_mean").is_none(), "rerankers have no vectors: {c}");
        assert!(c.get("eval").is_none(), "{c}");
    }
    assert!(names.contains(&cal["method"].as_str().unwrap()));
    // The written model reranks.
    let o = bin()
        .args(["rerank", "-m"])
        .arg(&out)
        .args(["--query", "What is the capital of France?", "Paris is the capital of France.", "Bread needs yeast."])
        .output()
        .unwrap();
    let r = json_of(&o);
    assert_eq!(r["results"].as_array().unwrap().len(), 2, "{r}");
}

/// A failed run: exit code 1, one line on stderr starting with "error:", no panic, nothing written.
fn assert_refused(o: &Output, needle: &str, out: &Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: ") && err.contains(needle), "{err}");
    assert!(!out.exists(), "nothing written on refusal");
}

#[test]
fn eval_data_is_refused_where_it_cannot_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("beir");
    tiny_beir(&data);
    let out = tmp.path().join("out");
    let o = bin()
        .arg("convert")
        .arg(reranker())
        .args(["--bits", "4", "--group-size", "32", "--calibrate", "--eval"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused(&o, "--eval", &out);
    // A BEIR folder without the split is named before any work.
    let o = bin()
        .args(["convert", MINILM, "--cache-dir"])
        .arg(test_hub())
        .args(["--bits", "4", "--calibrate", "--eval-split", "dev", "--eval"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_refused(&o, "dev", &out);
    // --eval without --calibrate is a usage error (clap: exit 2).
    let o = bin().args(["convert", MINILM, "--bits", "4", "--eval"]).arg(&data).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}
