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
            if r.is_empty() || r.contains("..") {
                return Err(Error::InvalidInput(format!("bad revision in `{s}`")));
            }
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
}
