//! Parsing `org/name[@revision]`.

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub repo_id: String,
    pub revision: Option<String>,
}

impl ModelRef {
    pub fn parse(s: &str) -> Result<Self> {
        let (repo, rev) = match s.split_once('@') {
            Some((r, v)) => (r, Some(v)),
            None => (s, None),
        };
        let valid_part = |p: &str| {
            !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let ok = match parts.as_slice() {
            [name] => valid_part(name),
            [org, name] => valid_part(org) && valid_part(name),
            _ => false,
        };
        if !ok {
            return Err(Error::InvalidInput(format!(
                "`{s}` is neither a folder nor a model id of the form org/name[@revision]"
            )));
        }
        if let Some(r) = rev {
            check_revision(r).map_err(|reason| Error::InvalidRevision {
                reference: s.to_string(),
                revision: r.to_string(),
                reason: reason.to_string(),
            })?;
        }
        Ok(ModelRef { repo_id: repo.to_string(), revision: rev.map(str::to_string) })
    }

    /// `models--org--name`, the hub cache folder of this repo.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.repo_id.replace('/', "--"))
    }

    pub fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// Longest revision accepted (git allows more; hub branch and tag names are far shorter).
pub const MAX_REVISION_LEN: usize = 256;

/// A revision names a file under `refs/` and a URL segment: a branch, tag (`v1.0`, `refs/pr/1`) or
/// commit. Refused: empty, absolute, backslashes, empty / `.` / `..` components, components
/// starting with `.`, characters outside `A-Z a-z 0-9 - _ . + /`, and names over 256 bytes.
pub fn check_revision(r: &str) -> std::result::Result<(), &'static str> {
    if r.is_empty() {
        return Err("it is empty");
    }
    if r.len() > MAX_REVISION_LEN {
        return Err("it is longer than 256 characters");
    }
    if r.starts_with('/') {
        return Err("it is an absolute path");
    }
    if r.contains('\\') {
        return Err("it contains a backslash");
    }
    if !r.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+/".contains(c)) {
        return Err("it contains a character other than letters, digits and - _ . + /");
    }
    for c in r.split('/') {
        if c.is_empty() {
            return Err("it has an empty path component");
        }
        if c == "." || c == ".." {
            return Err("it has a `.` or `..` component");
        }
        if c.starts_with('.') {
            return Err("a component starts with `.`");
        }
    }
    Ok(())
}

/// A full 40-hex commit sha.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repo_and_revision() {
        let r = ModelRef::parse("sentence-transformers/all-MiniLM-L6-v2@abc").unwrap();
        assert_eq!(r.repo_id, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(r.revision.as_deref(), Some("abc"));
        assert_eq!(r.folder_name(), "models--sentence-transformers--all-MiniLM-L6-v2");
        assert!(ModelRef::parse("a/b/c").is_err());
        assert!(ModelRef::parse("../x").is_err());
        assert!(ModelRef::parse("a/b@").is_err());
        assert!(ModelRef::parse("bert-base-uncased").is_ok());
    }

    #[test]
    fn revisions_stay_inside_the_cache() {
        for ok in ["main", "v1.0", "refs/pr/1", "feature/x_y-z", &"a".repeat(40)] {
            assert!(ModelRef::parse(&format!("a/b@{ok}")).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_REVISION_LEN + 1);
        for bad in [
            "",
            "/abs/path",
            "/etc/passwd",
            "a\\b",
            "..",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "a/.",
            ".hidden",
            "a b",
            "a\0b",
            "é",
            &long,
        ] {
            match ModelRef::parse(&format!("a/b@{bad}")) {
                Err(Error::InvalidRevision { revision, .. }) => assert_eq!(revision, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
