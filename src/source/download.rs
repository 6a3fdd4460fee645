//! Download a snapshot into a hub cache root with the hf-hub crate (HF_ENDPOINT, HF_TOKEN honoured),
//! in the same layout huggingface_hub writes, so Python tools share the files.

use std::io::IsTerminal;
use std::path::Path;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use super::reference::ModelRef;
use super::ResolvedModel;
use crate::{Error, Result};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The hub endpoint in use (HF_ENDPOINT without a trailing slash).
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
}

/// HF_TOKEN, else the token file next to the cache (`$HF_HOME/token`).
pub fn token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Some(t);
        }
    }
    let home = std::env::var_os("HF_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/huggingface")))?;
    let t = std::fs::read_to_string(home.join("token")).ok()?;
    let t = t.trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// Which files of a repo inference needs: weights (safetensors preferred over .bin), configs,
/// tokenizer and sentence-transformers module files. ONNX, GGUF, and training artefacts are skipped.
pub fn files_for_inference(files: &[String]) -> Vec<String> {
    let has_safetensors = files.iter().any(|f| f.ends_with(".safetensors") && !f.contains('/'));
    files
        .iter()
        .filter(|f| {
            let top = !f.contains('/');
            let st_module = f.starts_with("1_Pooling/")
                || f.starts_with("2_Normalize/")
                || f.starts_with("2_Dense/")
                || f.starts_with("3_Dense/");
            let weight = top
                && (f.ends_with(".safetensors")
                    || f.as_str() == "model.safetensors.index.json"
                    || (!has_safetensors
                        && (f.ends_with(".bin") && f.starts_with("pytorch_model")
                            || f.as_str() == "pytorch_model.bin.index.json")));
            let meta = top
                && (f.ends_with(".json") && !f.ends_with(".index.json")
                    || f.as_str() == "vocab.txt"
                    || f.as_str() == "merges.txt"
                    || f.ends_with(".jinja")
                    || f.ends_with(".model"));
            weight || meta || st_module
        })
        .cloned()
        .collect()
}

/// Download what inference needs of `reference` into `root`.
pub fn snapshot(reference: &ModelRef, root: &Path) -> Result<ResolvedModel> {
    let err = |message: String| Error::Download { repo: reference.repo_id.clone(), message };
    let api = ApiBuilder::new()
        .with_endpoint(endpoint())
        .with_cache_dir(root.to_path_buf())
        .with_token(token())
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .map_err(|e| err(e.to_string()))?;
    let repo = api.repo(Repo::with_revision(
        reference.repo_id.clone(),
        RepoType::Model,
        reference.revision_or_main().to_string(),
    ));
    let info = repo.info().map_err(|e| err(e.to_string()))?;
    let all: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let wanted = files_for_inference(&all);
    if !wanted.iter().any(|f| f == "config.json") {
        return Err(err("the repo has no config.json".into()));
    }
    tracing::info!(repo = %reference.repo_id, files = wanted.len(), "downloading");
    for f in &wanted {
        repo.get(f).map_err(|e| err(format!("{f}: {e}")))?;
    }
    let dir = root.join(reference.folder_name()).join("snapshots").join(&info.sha);
    Ok(ResolvedModel {
        dir,
        repo_id: Some(reference.repo_id.clone()),
        commit: Some(info.sha),
        name: reference.repo_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_inference_files() {
        let files: Vec<String> = [
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "1_Pooling/config.json",
            "tokenizer.json",
            "README.md",
            "openvino/openvino_model.xml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = files_for_inference(&files);
        assert_eq!(got, vec!["config.json", "model.safetensors", "1_Pooling/config.json", "tokenizer.json"]);
    }
}
