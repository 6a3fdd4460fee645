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
