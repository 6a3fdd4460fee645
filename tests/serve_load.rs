//! The load test's bounded form (`scripts/serve_load.py` runs the full one, docs/serve.md): wrk
//! with mixed embed / rerank sizes at 20 and 300 closed-loop clients, then 300 clients that honour
//! Retry-After, a few seconds each, against a queue small enough that 300 clients overflow it.
//! Fails on any 5xx, any 429/503 without Retry-After, any socket error or client timeout, or an
//! overload that refused nothing. Nothing timed is asserted.

mod common;

use std::process::Command;

use common::{repo_root, test_hub};

#[test]
fn mixed_load_has_no_errors_and_every_refusal_says_when_to_retry() {
    let wrk = Command::new("wrk").arg("--version").output();
    assert!(wrk.is_ok(), "wrk is missing: run scripts/setup.sh (it installs Debian's wrk)");
    let ce = repo_root().join(".cache/load/minilm-shape-cross-encoder");
    if !ce.join("model.safetensors").exists() {
        let minilm = embedrank::source::resolve(common::MINILM, &common::offline_opts()).expect("minilm").dir;
        let tmp = ce.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        embedrank::synth::tiny::write_bert_cross_encoder(
            &tmp,
            &minilm,
            embedrank::synth::tiny::MINILM_SHAPE_CROSS_ENCODER,
        )
        .expect("write the cross-encoder");
        if std::fs::rename(&tmp, &ce).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("scripts/serve_load.py"))
        .arg(env!("CARGO_BIN_EXE_embedrank"))
        .arg("--hub")
        .arg(test_hub())
        .arg("--ce")
        .arg(&ce)
        .args(["--clients", "20,300", "--secs", "4", "--check", "--json", "--", "--max-queue", "48"])
        .output()
        .expect("run scripts/serve_load.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "load test failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for r in &rows {
        assert!(r["ok"].as_u64().unwrap_or(0) > 0, "no request succeeded: {r}");
        assert_eq!(r["5xx"], 0, "{r}");
        assert_eq!(r["no_retry_after"], 0, "{r}");
    }
    assert!(rows[1]["429"].as_u64().unwrap_or(0) > 0, "300 clients against a queue of 48 refused nothing: {}", rows[1]);
}
