//! The official `openai` Python client against `embedrank serve` (float, base64 and the SDK's
//! default), compared with `embedrank embed`'s vectors. Needs a Python with `openai` and `numpy`:
//! EMBEDRANK_PYTHON, else `.venv/bin/python` in the repo. It fails (does not skip) without one,
//! so CI must install it: `.venv/bin/pip install openai numpy`.

mod serve_common;

use std::process::Command;

use serve_common::*;

#[test]
fn openai_python_client_matches_the_cli() {
    let python = std::env::var("EMBEDRANK_PYTHON")
        .unwrap_or_else(|_| common::repo_root().join(".venv/bin/python").to_string_lossy().into_owned());
    let probe = Command::new(&python).args(["-c", "import openai, numpy"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "`{python}` cannot import openai and numpy: run `.venv/bin/pip install openai numpy` or set EMBEDRANK_PYTHON"
    );

    let tmp = tempfile::tempdir().expect("tmp");
    let input = texts(7, 11);
    let texts_path = tmp.path().join("texts.json");
    std::fs::write(&texts_path, serde_json::to_string(&input).expect("json")).expect("write");

    // What the CLI prints for these texts.
    let expected = tmp.path().join("expected.json");
    let out = Command::new(env!("CARGO_BIN_EXE_embedrank"))
        .args(["embed", "--model", MINILM, "--cache-dir"])
        .arg(test_hub())
        .args(["--format", "json", "--output"])
        .arg(&expected)
        .args(&input)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run embedrank embed");
    assert!(out.status.success(), "embed failed: {}", String::from_utf8_lossy(&out.stderr));

    let srv = Server::start(&["--model", MINILM, "--api-key", "sk-test"]);
    let out = Command::new(&python)
        .arg(common::repo_root().join("scripts/openai_client_check.py"))
        .args(["--base-url", &srv.url("/v1"), "--model", MINILM, "--api-key", "sk-test"])
        .arg("--expected")
        .arg(&expected)
        .arg("--texts")
        .arg(&texts_path)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "openai client check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("base64: shape (7, 384)"), "{stdout}");
}
