//! The wanted list: which models a user expects in their cache, as TOML `[[model]]` tables
//! (`repo` required; `priority` high/medium/low, `role` embedding/reranker, `note`), and how each
//! entry stands against an [`Inventory`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inventory::{Inventory, RepoEntry, RevisionEntry};
use super::reference::ModelRef;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Medium,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Embedding,
    Reranker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Embedding => "embedding",
            Role::Reranker => "reranker",
        }
    }
}

fn default_priority() -> Priority {
    Priority::Medium
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WantedEntry {
    /// `org/name[@revision]`.
    pub repo: String,
    #[serde(default = "default_priority")]
    pub priority: Priority,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WantedFile {
    #[serde(default)]
    model: Vec<WantedEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WantedList {
    /// The file it came from; None for the built-in list.
    pub source: Option<PathBuf>,
    pub entries: Vec<WantedEntry>,
}

/// `wanted.toml` in the user's config dir (e.g. `~/.config/embedrank/wanted.toml`).
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("embedrank").join("wanted.toml"))
}

/// The built-in list (the project's seed report).
pub fn builtin() -> WantedList {
    use Priority::*;
    use Role::*;
    let e = |repo: &str, priority, role| WantedEntry { repo: repo.into(), priority, role: Some(role), note: None };
    WantedList {
        source: None,
        entries: vec![
            e("mlx-community/bge-small-en-v1.5-bf16", High, Embedding),
            e("mlx-community/Qwen3-Embedding-4B-4bit-DWQ", Medium, Embedding),
            e("Qwen/Qwen3-Embedding-0.6B", Medium, Embedding),
            e("Qwen/Qwen3-Embedding-4B", Medium, Embedding),
            e("Qwen/Qwen3-Embedding-8B", Low, Embedding),
            e("mlx-community/Qwen3-Embedding-0.6B-4bit-DWQ", Medium, Embedding),
            e("mlx-community/Qwen3-Embedding-8B-4bit-DWQ", Low, Embedding),
            e("mlx-community/bge-small-en-v1.5-4bit", Medium, Embedding),
            e("Qwen/Qwen3-Reranker-4B", Low, Reranker),
        ],
    }
}

/// Parse a wanted list.
pub fn parse(text: &str, source: &Path) -> Result<WantedList> {
    let f: WantedFile =
        toml::from_str(text).map_err(|e| Error::config(source, e.to_string().trim().replace('\n', " ")))?;
    for (i, m) in f.model.iter().enumerate() {
        ModelRef::parse(&m.repo).map_err(|e| Error::config(source, format!("[[model]] #{}: {e}", i + 1)))?;
    }
    Ok(WantedList { source: Some(source.to_path_buf()), entries: f.model })
}

/// `path` when given (must exist); else the default file when it exists; else the built-in list.
pub fn load(path: Option<&Path>) -> Result<WantedList> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => match default_path().filter(|p| p.exists()) {
            Some(p) => p,
            None => return Ok(builtin()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse(&text, &path)
}

/// How one entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Available,
    Missing,
    Broken,
}

#[derive(Debug, Clone, Serialize)]
pub struct WantedStatus {
    pub entry: WantedEntry,
    pub state: State,
    /// The cached copy used (root, commit, variant) when available or broken.
    pub root: Option<PathBuf>,
    pub commit: Option<String>,
    pub variant: Option<String>,
    pub path: Option<PathBuf>,
    pub problems: Vec<String>,
    /// The command that makes it available; None when it is.
    pub fix: Option<String>,
}

/// Match every entry against the inventory: available (a complete copy of the revision in some
/// root), broken (only incomplete copies), or missing. `default_root` is left out of fix commands.
pub fn evaluate(list: &WantedList, inv: &Inventory, default_root: Option<&Path>) -> Vec<WantedStatus> {
    list.entries.iter().map(|e| evaluate_one(e, inv, default_root)).collect()
}

fn evaluate_one(entry: &WantedEntry, inv: &Inventory, default_root: Option<&Path>) -> WantedStatus {
    let (repo_id, rev) = match ModelRef::parse(&entry.repo) {
        Ok(r) => (r.repo_id.clone(), r.revision.clone()),
        Err(_) => (entry.repo.clone(), None),
    };
    // (repo, revision) candidates in root order.
    let candidates: Vec<(&RepoEntry, Option<&RevisionEntry>)> = inv
        .find(&repo_id)
        .map(|r| (r, rev.as_deref().map_or_else(|| r.revision("main").or(r.revisions.first()), |v| r.revision(v))))
        .collect();
    let good = candidates.iter().find(|(r, v)| v.is_some_and(|v| v.complete) && r.problems.is_empty());
    let usable = good.or_else(|| candidates.iter().find(|(_, v)| v.is_some_and(|v| v.complete)));
    if let Some((r, Some(v))) = usable {
        return WantedStatus {
            entry: entry.clone(),
            state: State::Available,
            root: Some(r.root.clone()),
            commit: Some(v.commit.clone()),
            variant: Some(v.variant()),
            path: Some(v.path.clone()),
            problems: r.problems.clone(),
            fix: None,
        };
    }
    let pull = |root: Option<&Path>| {
        let mut cmd = format!("embedrank pull {}", entry.repo);
        if let Some(root) = root.filter(|r| Some(*r) != default_root) {
            cmd.push_str(&format!(" --cache-dir {}", shell_quote(&root.display().to_string())));
        }
        cmd
    };
    match candidates.first() {
        None => WantedStatus {
            entry: entry.clone(),
            state: State::Missing,
            root: None,
            commit: None,
            variant: None,
            path: None,
            problems: Vec::new(),
            fix: Some(pull(None)),
        },
        Some((r, v)) => {
            let mut problems = r.problems.clone();
            match v {
                Some(v) => problems.extend(v.problems.iter().cloned()),
                None => problems.push(format!("revision `{}` is not in the cache", rev.as_deref().unwrap_or("main"))),
            }
            let mut fix = pull(Some(&r.root));
            // Found by `status --verify`; a plain pull trusts blobs of the right size.
            if problems.iter().any(|p| p.contains("corrupt blob")) {
                fix = fix.replacen("embedrank pull ", "embedrank pull --verify ", 1);
            }
            WantedStatus {
                entry: entry.clone(),
                state: State::Broken,
                root: Some(r.root.clone()),
                commit: v.map(|v| v.commit.clone()),
                variant: v.map(|v| v.variant()),
                path: v.map(|v| v.path.clone()),
                problems,
                fix: Some(fix),
            }
        }
    }
}

/// Single-quote for a POSIX shell when needed.
fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let p = Path::new("w.toml");
        let l = parse(
            "[[model]]\nrepo = \"Qwen/Qwen3-Embedding-0.6B\"\npriority = \"high\"\nrole = \"embedding\"\nnote = \"x\"\n\
             [[model]]\nrepo = \"a/b@v1\"\n",
            p,
        )
        .unwrap();
        assert_eq!(l.entries.len(), 2);
        assert_eq!(l.entries[0].priority, Priority::High);
        assert_eq!(l.entries[1].priority, Priority::Medium);
        assert!(parse("[[model]]\npriority = \"high\"\n", p).is_err(), "repo is required");
        assert!(parse("[[model]]\nrepo = \"a/b\"\npriority = \"urgent\"\n", p).is_err());
        assert!(parse("[[model]]\nrepo = \"a/b\"\ncolour = \"red\"\n", p).is_err());
        assert!(parse("[[model]]\nrepo = \"../etc\"\n", p).is_err());
        assert_eq!(builtin().entries.len(), 9);
    }

    #[test]
    fn quotes_paths() {
        assert_eq!(shell_quote("/mnt/ssd/hub"), "/mnt/ssd/hub");
        assert_eq!(shell_quote("/Volumes/My SSD/hub"), "'/Volumes/My SSD/hub'");
    }
}
