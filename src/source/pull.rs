//! `pull`: fetch a repo revision into a hub cache root exactly as huggingface_hub writes it — blobs
//! named by etag, relative snapshot symlinks, `refs/<revision>` — so Python tools reuse our
//! downloads and we reuse theirs.
//!
//! Safety: content lands in `blobs/<etag>.incomplete` and is renamed to `blobs/<etag>` only after
//! its size (and, for LFS files, sha256) checked out; the snapshot symlink is made after that, and
//! `refs/<revision>` is written last, once every selected file is in place. An interrupted pull
//! therefore never leaves a file or a ref that looks complete, and the next pull resumes the
//! `.incomplete` blobs with Range requests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use super::download::{self, FileMeta, HubClient, TreeEntry};
use super::reference::{is_commit_hash, ModelRef};
use crate::{Error, Result};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The hub cache root to write into.
    pub root: PathBuf,
    /// Extra files to fetch beyond what inference needs (globs on repo paths, e.g. `onnx/*`, `*.gguf`).
    pub include: Vec<String>,
    /// Files transferred at once.
    pub jobs: usize,
    /// Extra attempts per file after a transfer error (each resumes where the last stopped).
    pub retries: usize,
    /// Show progress bars (on a terminal).
    pub progress: bool,
    /// HF_HUB_OFFLINE: no HTTP; succeed only when the cache already holds a complete copy.
    pub offline: bool,
    pub endpoint: String,
    pub token: Option<String>,
    /// Re-hash blobs already in the cache against their names (sha256 / git blob sha1) and fetch
    /// again those that do not match; offline, a mismatch is an error.
    pub verify: bool,
}

impl PullOptions {
    /// HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE from the environment; no progress bars.
    pub fn from_env(root: PathBuf) -> Self {
        PullOptions {
            root,
            include: Vec::new(),
            jobs: DEFAULT_JOBS,
            retries: DEFAULT_RETRIES,
            progress: false,
            offline: super::offline_from_env(),
            endpoint: download::endpoint(),
            token: download::token(),
            verify: false,
        }
    }
}

pub const DEFAULT_JOBS: usize = 4;
pub const DEFAULT_RETRIES: usize = 2;

/// One worker's answer for one file: what was done and how many bytes it transferred.
type FileResult = Result<(PulledFile, u64)>;

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fetched whole.
    Downloaded,
    /// A `.incomplete` blob was continued with a Range request.
    Resumed,
    /// The blob was already in the cache.
    Cached,
    /// The cached blob did not hash to its name (`--verify`) and was fetched again.
    Repaired,
}

#[derive(Debug, Clone, Serialize)]
pub struct PulledFile {
    pub path: String,
    pub size: u64,
    pub etag: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub repo_id: String,
    pub revision: String,
    pub commit: String,
    /// `snapshots/<commit>` folder.
    pub snapshot: PathBuf,
    pub files: Vec<PulledFile>,
    /// Bytes transferred by this pull.
    pub downloaded_bytes: u64,
    pub offline: bool,
}

/// The files a pull fetches: what inference needs, plus those matching `include`.
pub fn select(entries: &[TreeEntry], include: &[String]) -> Result<Vec<TreeEntry>> {
    let set = globs(include)?;
    let names: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
    let needed = download::files_for_inference(&names);
    Ok(entries.iter().filter(|e| needed.contains(&e.path) || set.is_match(&e.path)).cloned().collect())
}

fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| Error::InvalidInput(format!("bad --include pattern `{p}`: {e}")))?;
        b.add(g);
    }
    b.build().map_err(|e| Error::InvalidInput(format!("bad --include patterns: {e}")))
}

/// A repo path that stays inside the snapshot folder.
fn safe_repo_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Pull `reference` into `opts.root`.
pub fn pull(reference: &ModelRef, opts: &PullOptions) -> Result<PullReport> {
    globs(&opts.include)?;
    let repo_dir = opts.root.join(reference.folder_name());
    let revision = reference.revision_or_main().to_string();
    if opts.offline {
        return pull_offline(reference, &repo_dir, &revision, opts.verify);
    }
    let client = HubClient::new(&opts.endpoint, opts.token.clone());
    let repo = reference.repo_id.as_str();
    let commit = client.repo_commit(repo, &revision)?;
    let listing = client.list_files(repo, &commit)?;
    for e in &listing {
        if !safe_repo_path(&e.path) {
            return Err(Error::Download {
                repo: repo.into(),
                message: format!("unsafe path in listing: `{}`", e.path),
            });
        }
    }
    let selected = select(&listing, &opts.include)?;
    if selected.is_empty() {
        return Err(Error::Download { repo: repo.into(), message: format!("no files to fetch at {commit}") });
    }
    for sub in ["blobs", "refs"] {
        let d = repo_dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    let snapshot = repo_dir.join("snapshots").join(&commit);
    tracing::info!(repo, %commit, files = selected.len(), "pulling");

    let total: u64 = selected.iter().map(|e| e.lfs.as_ref().map_or(e.size, |l| l.size)).sum();
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(reference.repo_id.clone());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, FileResult)>> = Mutex::new(Vec::new());
    let jobs = opts.jobs.clamp(1, 16).min(selected.len());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(entry) = selected.get(i) else { break };
                let get = || pull_file(&client, repo, &commit, &repo_dir, &snapshot, &entry.path, &bar, opts.verify);
                let mut r = get();
                for attempt in 0..opts.retries {
                    // Only transfer failures are worth another try; the next one resumes.
                    let Err(Error::Download { message, .. }) = &r else { break };
                    tracing::warn!(file = %entry.path, attempt = attempt + 1, "{message}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(500 << attempt.min(4)));
                    r = get();
                }
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if let Ok(mut v) = results.lock() {
                    v.push((i, r));
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut results = results
        .into_inner()
        .map_err(|_| Error::Download { repo: repo.into(), message: "a download worker panicked".into() })?;
    results.sort_by_key(|(i, _)| *i);
    let mut files = Vec::new();
    let mut downloaded_bytes = 0;
    for (_, r) in results {
        let (f, n) = r?;
        downloaded_bytes += n;
        files.push(f);
    }
    if files.len() != selected.len() {
        return Err(Error::Download { repo: repo.into(), message: "not every file was fetched".into() });
    }
    if revision != commit {
        write_ref(&repo_dir, &revision, &commit)?;
    }
    Ok(PullReport { repo_id: repo.to_string(), revision, commit, snapshot, files, downloaded_bytes, offline: false })
}

/// One file: HEAD for its etag, reuse (after re-hashing it, with `verify`) or fetch the blob, link
/// it into the snapshot.
#[allow(clippy::too_many_arguments)]
fn pull_file(
    client: &HubClient,
    repo: &str,
    commit: &str,
    repo_dir: &Path,
    snapshot: &Path,
    path: &str,
    bar: &indicatif::ProgressBar,
    verify: bool,
) -> Result<(PulledFile, u64)> {
    let meta: FileMeta = client.file_meta(repo, commit, path)?;
    if meta.commit != commit {
        return Err(Error::Download {
            repo: repo.into(),
            message: format!("{path}: the hub answered for commit {} instead of {commit}", meta.commit),
        });
    }
    let blob = repo_dir.join("blobs").join(&meta.etag);
    let mut have = std::fs::metadata(&blob).ok().filter(|m| m.is_file()).map(|m| m.len());
    let mut corrupt = false;
    if verify && have == Some(meta.size) {
        if let Some((false, got)) = super::verify::matches_name(&blob, &meta.etag)? {
            tracing::warn!(file = path, "cached blob {} hashes to {got}: fetching it again", blob.display());
            // The fresh copy is renamed over it once it checked out.
            corrupt = true;
            have = None;
        }
    }
    let (outcome, transferred) = if have == Some(meta.size) {
        bar.inc(meta.size);
        (Outcome::Cached, 0)
    } else {
        let partial = repo_dir.join("blobs").join(format!("{}.incomplete", meta.etag));
        let resumed = client.fetch_to(repo, &meta, &partial, &|n| bar.inc(n))?;
        if let Err(e) = std::fs::rename(&partial, &blob) {
            // Another process (a second pull) may have finished the same blob first.
            if std::fs::metadata(&blob).map(|m| m.len()).ok() != Some(meta.size) {
                return Err(Error::io(&blob, e));
            }
        }
        if verify {
            // fetch_to checked sha256 names; git blob sha1 names are checked here.
            if let Some((false, got)) = super::verify::matches_name(&blob, &meta.etag)? {
                let _ = std::fs::remove_file(&blob);
                return Err(Error::Integrity {
                    path: blob,
                    message: format!("the downloaded content hashes to {got}; the file was deleted"),
                });
            }
        }
        let outcome = if corrupt {
            Outcome::Repaired
        } else if resumed > 0 {
            Outcome::Resumed
        } else {
            Outcome::Downloaded
        };
        (outcome, meta.size - resumed)
    };
    link(snapshot, path, &meta.etag)?;
    Ok((PulledFile { path: path.to_string(), size: meta.size, etag: meta.etag, outcome }, transferred))
}

/// `snapshots/<commit>/<path>` → `../../blobs/<etag>` (one more `../` per folder in `path`), made
/// under a temporary name and renamed over any old link so it is never half-made.
fn link(snapshot: &Path, path: &str, etag: &str) -> Result<()> {
    let dest = snapshot.join(path);
    let parent = dest.parent().unwrap_or(snapshot);
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let target = format!("{}blobs/{etag}", "../".repeat(2 + path.matches('/').count()));
    if std::fs::read_link(&dest).is_ok_and(|t| t == Path::new(&target)) {
        return Ok(());
    }
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    make_symlink(&target, &tmp)?;
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
}

#[cfg(unix)]
fn make_symlink(target: &str, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at).map_err(|e| Error::io(at, e))
}

#[cfg(not(unix))]
fn make_symlink(target: &str, at: &Path) -> Result<()> {
    // Without symlinks huggingface_hub copies blobs into snapshots; do the same.
    let blob = at.parent().unwrap_or(Path::new(".")).join(target);
    std::fs::copy(&blob, at).map(|_| ()).map_err(|e| Error::io(at, e))
}

/// `refs/<revision>` = commit, written atomically (no trailing newline, like huggingface_hub).
fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    let path = repo_dir.join("refs").join(revision);
    let parent = path.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == commit) {
        return Ok(());
    }
    let tmp = parent.join(format!(".ref.{}.tmp", std::process::id()));
    std::fs::write(&tmp, commit).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Offline: succeed only when the cache already holds a complete snapshot of the revision.
fn pull_offline(reference: &ModelRef, repo_dir: &Path, revision: &str, verify: bool) -> Result<PullReport> {
    let offline = |message: String| Error::Offline { repo: reference.repo_id.clone(), message };
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else {
        let r = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&r) {
            Ok(s) if is_commit_hash(s.trim()) => s.trim().to_string(),
            _ => {
                return Err(offline(format!(
                    "`{revision}` is not in the cache ({} has no such ref)",
                    repo_dir.display()
                )))
            }
        }
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(offline(format!("snapshot {} is missing", snapshot.display())));
    }
    let (rev, files) = super::inventory::describe_snapshot(&reference.repo_id, &snapshot);
    if !rev.problems.is_empty() {
        return Err(offline(format!("the cached copy is incomplete: {}", rev.problems.join("; "))));
    }
    if verify {
        let v = super::verify::verify_snapshot(&reference.repo_id, &snapshot);
        if let Some(m) = v.mismatches.first() {
            return Err(offline(format!(
                "the cached copy is corrupt: {} hashes to {} ({} mismatched file(s)); pull online to repair it",
                m.files.join(", "),
                m.actual,
                v.mismatches.len()
            )));
        }
        if let Some(e) = v.errors.first() {
            return Err(offline(format!("cannot verify the cached copy: {e}")));
        }
    }
    let files = files
        .into_iter()
        .map(|f| PulledFile { path: f.path, size: f.size, etag: f.etag, outcome: Outcome::Cached })
        .collect();
    Ok(PullReport {
        repo_id: reference.repo_id.clone(),
        revision: revision.to_string(),
        commit,
        snapshot,
        files,
        downloaded_bytes: 0,
        offline: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str) -> TreeEntry {
        TreeEntry { kind: "file".into(), path: p.into(), size: 1, oid: String::new(), lfs: None }
    }

    #[test]
    fn selection_adds_includes() {
        let all: Vec<TreeEntry> =
            ["config.json", "model.safetensors", "onnx/model.onnx", "model-q4.gguf", "README.md"].map(entry).to_vec();
        let names = |v: Vec<TreeEntry>| v.into_iter().map(|e| e.path).collect::<Vec<_>>();
        assert_eq!(names(select(&all, &[]).unwrap()), ["config.json", "model.safetensors"]);
        assert_eq!(
            names(select(&all, &["onnx/*".into(), "*.gguf".into()]).unwrap()),
            ["config.json", "model.safetensors", "onnx/model.onnx", "model-q4.gguf"]
        );
        assert!(select(&all, &["[".into()]).is_err());
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(safe_repo_path("1_Pooling/config.json"));
        for p in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "./a"] {
            assert!(!safe_repo_path(p), "{p}");
        }
    }
}
