//! Source stage: turn a model reference (`org/name[@rev]` or a local folder) into a folder on disk.
//!
//! Order: a local folder, then every hub cache root (standard `models--org--name` layout), then a
//! download into the first root unless offline.

pub mod cache;
pub mod download;
pub mod inventory;
pub mod pull;
pub mod reference;
pub mod verify;
pub mod wanted;

use std::path::PathBuf;

pub use cache::{CacheRoots, CachedRepo};
pub use reference::ModelRef;

use crate::{Error, Result};

/// Where a model's files were found.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The folder holding config.json, tokenizer.json, weights.
    pub dir: PathBuf,
    /// `org/name` when it came from a hub cache or download; None for a local folder.
    pub repo_id: Option<String>,
    /// The commit of the snapshot, when known.
    pub commit: Option<String>,
    /// The name users see: the repo id, or the folder's name.
    pub name: String,
}

/// How to resolve references.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    pub roots: CacheRoots,
    /// Never touch the network (HF_HUB_OFFLINE).
    pub offline: bool,
}

impl ResolveOptions {
    /// Roots from the environment plus extra `--cache-dir` folders; offline from HF_HUB_OFFLINE.
    pub fn from_env(extra_dirs: &[PathBuf]) -> Self {
        ResolveOptions { roots: CacheRoots::from_env(extra_dirs), offline: offline_from_env() }
    }
}

/// HF_HUB_OFFLINE (or the legacy TRANSFORMERS_OFFLINE) set to a truthy value.
pub fn offline_from_env() -> bool {
    ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"].iter().any(|k| {
        std::env::var(k)
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false)
    })
}

/// Resolve a reference to a folder, downloading it if needed and allowed.
pub fn resolve(reference: &str, opts: &ResolveOptions) -> Result<ResolvedModel> {
    let mut searched = Vec::new();
    let local = PathBuf::from(reference);
    if local.is_dir() {
        let name = local
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| reference.to_string());
        return Ok(ResolvedModel { dir: local, repo_id: None, commit: None, name });
    }
    searched.push(format!("local folder {reference}"));

    let parsed = match ModelRef::parse(reference) {
        Ok(r) => r,
        Err(e @ Error::InvalidRevision { .. }) => return Err(e),
        Err(_) => {
            return Err(Error::ModelNotFound { reference: reference.into(), searched });
        }
    };
    for root in opts.roots.iter() {
        searched.push(root.join(parsed.folder_name()).display().to_string());
        if let Some(hit) = cache::lookup(root, &parsed) {
            return Ok(hit);
        }
    }
    if opts.offline {
        let why = if offline_from_env() {
            "HF_HUB_OFFLINE is set"
        } else {
            "this command only reads the cache; `embedrank pull` downloads"
        };
        searched.push(format!("(not downloaded: {why})"));
        return Err(Error::ModelNotFound { reference: reference.into(), searched });
    }
    let Some(root) = opts.roots.first() else {
        return Err(Error::ModelNotFound { reference: reference.into(), searched });
    };
    match download::snapshot(&parsed, root) {
        Ok(hit) => Ok(hit),
        Err(Error::Download { message, .. }) => {
            searched.push(format!("{} (download failed: {message})", download::endpoint()));
            Err(Error::ModelNotFound { reference: reference.into(), searched })
        }
        Err(e) => Err(e),
    }
}
