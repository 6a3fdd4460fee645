//! Hugging Face hub cache roots and lookup in the standard layout:
//! `models--org--name/{refs/<rev>, snapshots/<commit>/..., blobs/<etag>}`.

use std::path::{Path, PathBuf};

use super::reference::{is_commit_hash, ModelRef};
use super::ResolvedModel;

/// Cache roots in lookup order: `--cache-dir` folders first, then EMBEDRANK_CACHE_DIRS, then the
/// standard one (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
#[derive(Debug, Clone, Default)]
pub struct CacheRoots(Vec<PathBuf>);

impl CacheRoots {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        let mut out: Vec<PathBuf> = Vec::new();
        for r in roots {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        CacheRoots(out)
    }

    pub fn from_env(extra: &[PathBuf]) -> Self {
        let mut roots: Vec<PathBuf> = extra.to_vec();
        if let Ok(dirs) = std::env::var("EMBEDRANK_CACHE_DIRS") {
            roots.extend(dirs.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        }
        if let Some(d) = default_hub_cache() {
            roots.push(d);
        }
        Self::new(roots)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PathBuf> {
        self.0.iter()
    }

    pub fn first(&self) -> Option<&PathBuf> {
        self.0.first()
    }
}

/// The hub cache huggingface_hub itself would use.
pub fn default_hub_cache() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = nonempty("HF_HUB_CACHE").or_else(|| nonempty("HUGGINGFACE_HUB_CACHE")) {
        return Some(p);
    }
    if let Some(home) = nonempty("HF_HOME") {
        return Some(home.join("hub"));
    }
    if let Some(xdg) = nonempty("XDG_CACHE_HOME") {
        return Some(xdg.join("huggingface").join("hub"));
    }
    nonempty("HOME").map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// A repo folder inside one cache root.
#[derive(Debug, Clone)]
pub struct CachedRepo {
    pub repo_id: String,
    pub path: PathBuf,
}

impl CachedRepo {
    /// The commit a ref (branch/tag) points to, read from `refs/<rev>`.
    pub fn read_ref(&self, rev: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.path.join("refs").join(rev)).ok()?;
        let s = s.trim().to_string();
        is_commit_hash(&s).then_some(s)
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.path.join("snapshots").join(commit)
    }
}

/// Find `reference` under `root`; returns the snapshot folder when it has a config.json.
pub fn lookup(root: &Path, reference: &ModelRef) -> Option<ResolvedModel> {
    let repo = CachedRepo { repo_id: reference.repo_id.clone(), path: root.join(reference.folder_name()) };
    if !repo.path.is_dir() {
        return None;
    }
    let rev = reference.revision_or_main();
    let commit = if is_commit_hash(rev) { rev.to_string() } else { repo.read_ref(rev)? };
    let dir = repo.snapshot_dir(&commit);
    if !dir.join("config.json").exists() {
        return None;
    }
    Some(ResolvedModel {
        dir,
        repo_id: Some(reference.repo_id.clone()),
        commit: Some(commit),
        name: reference.repo_id.clone(),
    })
}
