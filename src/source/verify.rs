//! Re-hash cached blobs against their names (`status --verify`, `pull --verify`, `check --verify`).
//!
//! In the hub cache a blob's file name is its etag: the sha256 of the content for LFS files (64
//! hex), the git blob sha1 (`sha1("blob <len>\0" + content)`, 40 hex) for small files kept in git.
//! Size checks cannot see same-size corruption (a flipped bit on disk, a bad copy); this reads
//! every byte, so it costs a full read of the cache.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::inventory::{check_snapshot, RepoEntry};
use crate::{Error, Result};

/// The digest a blob's name promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    Sha256,
    GitSha1,
}

impl Algorithm {
    /// From a blob name: 64 hex → sha256, 40 hex → git blob sha1, else nothing to check against.
    pub fn for_name(name: &str) -> Option<Algorithm> {
        if !name.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        match name.len() {
            64 => Some(Algorithm::Sha256),
            40 => Some(Algorithm::GitSha1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::GitSha1 => "git-sha1",
        }
    }
}

/// The hex digest of a file under `algo`.
pub fn digest_file(path: &Path, algo: Algorithm) -> Result<String> {
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    if algo == Algorithm::GitSha1 {
        sha1.update(format!("blob {len}\0").as_bytes());
    }
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        match algo {
            Algorithm::Sha256 => sha256.update(&buf[..n]),
            Algorithm::GitSha1 => sha1.update(&buf[..n]),
        }
    }
    let bytes: Vec<u8> = match algo {
        Algorithm::Sha256 => sha256.finalize().to_vec(),
        Algorithm::GitSha1 => sha1.finalize().to_vec(),
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the file at `path` hashes to `name`. `None`: the name is not a digest (nothing to check).
pub fn matches_name(path: &Path, name: &str) -> Result<Option<(bool, String)>> {
    let Some(algo) = Algorithm::for_name(name) else { return Ok(None) };
    let got = digest_file(path, algo)?;
    Ok(Some((got.eq_ignore_ascii_case(name), got)))
}

/// A blob whose content does not hash to its name.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub repo_id: String,
    pub blob: PathBuf,
    pub algorithm: Algorithm,
    pub expected: String,
    pub actual: String,
    /// Snapshot files (`<commit>/<path>`) that link to it.
    pub files: Vec<String>,
}

/// What verifying one repo (or many) found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: usize,
    pub checked_bytes: u64,
    /// Blobs whose name is not a digest, and snapshot files that are plain copies.
    pub skipped: usize,
    pub mismatches: Vec<Mismatch>,
    /// Blobs that could not be read.
    pub errors: Vec<String>,
}

impl VerifyReport {
    pub fn merge(&mut self, o: VerifyReport) {
        self.checked += o.checked;
        self.checked_bytes += o.checked_bytes;
        self.skipped += o.skipped;
        self.mismatches.extend(o.mismatches);
        self.errors.extend(o.errors);
    }
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty() && self.errors.is_empty()
    }
}

/// Re-hash every blob of a scanned repo (`.incomplete` ones aside) and record mismatches as
/// problems of the repo and of each revision linking the blob, which then counts as broken.
pub fn verify_repo(repo: &mut RepoEntry) -> VerifyReport {
    let mut report = VerifyReport::default();
    let blobs = repo.path.join("blobs");
    let mut names: Vec<String> = match std::fs::read_dir(&blobs) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".incomplete"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    // Which snapshot files link to which blob (by etag).
    let linked: Vec<(usize, String, String)> = repo
        .revisions
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let commit = r.commit.clone();
            check_snapshot(&r.path).files.into_iter().map(move |f| (i, format!("{commit}/{}", f.path), f.etag))
        })
        .collect();
    report.skipped += linked.iter().filter(|(_, _, etag)| etag.is_empty()).count();
    for name in names {
        let path = blobs.join(&name);
        let Some(algo) = Algorithm::for_name(&name) else {
            report.skipped += 1;
            continue;
        };
        match digest_file(&path, algo) {
            Ok(got) => {
                report.checked += 1;
                report.checked_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if got.eq_ignore_ascii_case(&name) {
                    continue;
                }
                let users: Vec<&(usize, String, String)> = linked.iter().filter(|(_, _, e)| *e == name).collect();
                let what = format!("corrupt blob blobs/{name}: its {} is {got}", algo.as_str());
                repo.problems.push(what.clone());
                for (i, file, _) in &users {
                    if let Some(rev) = repo.revisions.get_mut(*i) {
                        let p = format!("{} (linked as {file}) does not match its content", what);
                        rev.problems.push(p);
                        rev.complete = false;
                    }
                }
                report.mismatches.push(Mismatch {
                    repo_id: repo.repo_id.clone(),
                    blob: path,
                    algorithm: algo,
                    expected: name,
                    actual: got,
                    files: users.iter().map(|(_, f, _)| f.clone()).collect(),
                });
            }
            Err(e) => {
                repo.problems.push(format!("unreadable blob blobs/{name}: {e}"));
                report.errors.push(e.to_string());
            }
        }
    }
    if !report.ok() {
        repo.complete = false;
    }
    report
}

/// Re-hash the blobs behind a resolved snapshot folder's symlinks (`check --verify`); files that
/// are not links to digest-named blobs are skipped.
pub fn verify_snapshot(repo_id: &str, dir: &Path) -> VerifyReport {
    let mut report = VerifyReport::default();
    let check = check_snapshot(dir);
    for f in check.files {
        let Some(algo) = Algorithm::for_name(&f.etag) else {
            report.skipped += 1;
            continue;
        };
        let path = dir.join(&f.path);
        match digest_file(&path, algo) {
            Ok(got) => {
                report.checked += 1;
                report.checked_bytes += f.size;
                if !got.eq_ignore_ascii_case(&f.etag) {
                    let blob = std::fs::canonicalize(&path).unwrap_or(path);
                    report.mismatches.push(Mismatch {
                        repo_id: repo_id.to_string(),
                        blob,
                        algorithm: algo,
                        expected: f.etag,
                        actual: got,
                        files: vec![f.path],
                    });
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_digests() {
        assert_eq!(Algorithm::for_name(&"a".repeat(64)), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::for_name(&"0".repeat(40)), Some(Algorithm::GitSha1));
        assert_eq!(Algorithm::for_name("abc.incomplete"), None);
        assert_eq!(Algorithm::for_name(&"g".repeat(40)), None);
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("f");
        std::fs::write(&p, b"hello\n").expect("write");
        // `git hash-object` of "hello\n", and its sha256.
        assert_eq!(
            digest_file(&p, Algorithm::GitSha1).ok().as_deref(),
            Some("ce013625030ba8dba906f756967f9e9ca394464a")
        );
        assert_eq!(
            digest_file(&p, Algorithm::Sha256).ok().as_deref(),
            Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        );
    }
}
