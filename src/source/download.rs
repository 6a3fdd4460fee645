//! The hub's HTTP protocol (huggingface_hub's, see reference/model-formats.md §6): repo info, tree
//! listing, per-file metadata by HEAD, and resumable verified transfers into a blob's `.incomplete`
//! file. [`crate::source::pull`] puts these together into cache entries; `resolve()`'s
//! download-if-missing ([`snapshot`]) is a pull with the default file selection.
//!
//! Written on ureq rather than the hf-hub crate because hf-hub 0.4's sync client appends whatever
//! the server sends to a partial file (a 200 answer to a Range request would corrupt it), never
//! checks sha256 against the LFS etag, follows every redirect on metadata requests, and fetches one
//! file at a time.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

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

/// HF_TOKEN, else the token file (HF_TOKEN_PATH, else `$HF_HOME/token`).
pub fn token() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Some(t);
        }
    }
    let path = match std::env::var_os("HF_TOKEN_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("HF_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))?
            .join("token"),
    };
    let t = std::fs::read_to_string(path).ok()?;
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

/// Download what inference needs of `reference` into `root` (resolve()'s download-if-missing).
pub fn snapshot(reference: &ModelRef, root: &Path) -> Result<ResolvedModel> {
    let opts = super::pull::PullOptions {
        root: root.to_path_buf(),
        progress: std::io::stderr().is_terminal(),
        ..super::pull::PullOptions::from_env(root.to_path_buf())
    };
    let report = super::pull::pull(reference, &opts).map_err(|e| match e {
        Error::Hub { .. } | Error::Offline { .. } => {
            Error::Download { repo: reference.repo_id.clone(), message: e.to_string() }
        }
        other => other,
    })?;
    if !report.files.iter().any(|f| f.path == "config.json") {
        return Err(Error::Download { repo: reference.repo_id.clone(), message: "the repo has no config.json".into() });
    }
    Ok(ResolvedModel {
        dir: report.snapshot,
        repo_id: Some(reference.repo_id.clone()),
        commit: Some(report.commit),
        name: reference.repo_id.clone(),
    })
}

/// `quote(s, safe="")` of Python: everything but unreserved characters percent-encoded.
pub fn quote_all(s: &str) -> String {
    quote(s, "")
}

/// `quote(s)` of Python (keeps `/`), for file paths in URLs.
pub fn quote_path(s: &str) -> String {
    quote(s, "/")
}

fn quote(s: &str, safe: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || "_.-~".contains(c) || safe.contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A file of a repo as the tree listing describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub oid: String,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    #[serde(alias = "sha256")]
    pub oid: String,
    pub size: u64,
}

/// What a HEAD on a file's resolve URL says.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub commit: String,
    /// sha256 for LFS files, git blob sha1 otherwise; the blob's name in the cache.
    pub etag: String,
    pub size: u64,
    /// Where to GET the content (the CDN for LFS files), absolute.
    pub url: String,
}

impl FileMeta {
    /// LFS etags are sha256 hex digests, which the content must hash to.
    pub fn sha256(&self) -> Option<&str> {
        (self.etag.len() == 64 && self.etag.chars().all(|c| c.is_ascii_hexdigit())).then_some(self.etag.as_str())
    }
}

/// A small synchronous hub client.
#[derive(Clone)]
pub struct HubClient {
    agent: ureq::Agent,
    pub endpoint: String,
    token: Option<String>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("HubClient").field("endpoint", &self.endpoint).field("token", &self.token.is_some()).finish()
    }
}

fn env_secs(key: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(key).ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(default))
}

impl HubClient {
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        // Redirects are handled by hand: metadata follows only relative ones (renamed repos), as
        // huggingface_hub does, and the Authorization header must not travel to a CDN host.
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(env_secs("HF_HUB_ETAG_TIMEOUT", 10))
            .timeout_read(env_secs("HF_HUB_DOWNLOAD_TIMEOUT", 10).max(Duration::from_secs(10)))
            .user_agent(concat!("embedrank/", env!("CARGO_PKG_VERSION")))
            .build();
        HubClient { agent, endpoint: endpoint.trim_end_matches('/').to_string(), token }
    }

    /// HF_ENDPOINT and HF_TOKEN from the environment.
    pub fn from_env() -> Self {
        Self::new(&endpoint(), token())
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let mut r = self.agent.request(method, url);
        if let Some(t) = &self.token {
            if url.starts_with(&self.endpoint) {
                r = r.set("Authorization", &format!("Bearer {t}"));
            }
        }
        r
    }

    /// Send, turning error statuses into [`Error::Hub`] and transport failures into [`Error::Download`].
    fn send(&self, repo: &str, req: ureq::Request) -> Result<ureq::Response> {
        let url = req.url().to_string();
        match req.call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, resp)) => Err(hub_error(repo, status, &url, resp)),
            Err(ureq::Error::Transport(t)) => {
                Err(Error::Download { repo: repo.to_string(), message: format!("{url}: {t}") })
            }
        }
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, repo: &str, url: &str) -> Result<(T, Option<String>)> {
        let resp = self.send(repo, self.request("GET", url))?;
        let next = resp.header("Link").and_then(next_link);
        let text = resp
            .into_string()
            .map_err(|e| Error::Download { repo: repo.to_string(), message: format!("{url}: {e}") })?;
        let v = serde_json::from_str(&text)
            .map_err(|e| Error::Download { repo: repo.to_string(), message: format!("{url}: bad JSON answer: {e}") })?;
        Ok((v, next))
    }

    /// The commit a revision (branch, tag or sha) points to.
    pub fn repo_commit(&self, repo: &str, revision: &str) -> Result<String> {
        #[derive(Deserialize)]
        struct Info {
            sha: Option<String>,
        }
        let url = format!("{}/api/models/{repo}/revision/{}", self.endpoint, quote_all(revision));
        let (info, _): (Info, _) = self.get_json(repo, &url)?;
        info.sha.filter(|s| super::reference::is_commit_hash(s)).ok_or_else(|| Error::Download {
            repo: repo.to_string(),
            message: format!("{url}: the answer has no commit sha"),
        })
    }

    /// Every file of the repo at `commit` (the recursive tree listing, all pages).
    pub fn list_files(&self, repo: &str, commit: &str) -> Result<Vec<TreeEntry>> {
        let mut url =
            Some(format!("{}/api/models/{repo}/tree/{}?recursive=true&expand=false", self.endpoint, quote_all(commit)));
        let mut out = Vec::new();
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(Error::Download { repo: repo.into(), message: "tree listing does not end".into() });
            }
            let (items, next): (Vec<TreeEntry>, _) = self.get_json(repo, &u)?;
            out.extend(items.into_iter().filter(|e| e.kind == "file"));
            url = next.map(|n| self.absolute(&u, &n));
        }
        Ok(out)
    }

    /// HEAD the file's resolve URL, following only relative redirects, and read the metadata.
    pub fn file_meta(&self, repo: &str, revision: &str, path: &str) -> Result<FileMeta> {
        let mut url = format!("{}/{repo}/resolve/{}/{}", self.endpoint, quote_all(revision), quote_path(path));
        for _ in 0..10 {
            let resp = self.send(repo, self.request("HEAD", &url).set("Accept-Encoding", "identity"))?;
            let status = resp.status();
            let location = resp.header("Location").map(str::to_string);
            if (300..400).contains(&status) {
                if let Some(loc) = &location {
                    if loc.starts_with('/') {
                        url = self.absolute(&url, loc);
                        continue;
                    }
                }
            }
            let bad = |what: &str| Error::Download {
                repo: repo.to_string(),
                message: format!("{url}: the hub's answer has no {what} header"),
            };
            let commit = resp.header("X-Repo-Commit").map(str::to_string).ok_or_else(|| bad("X-Repo-Commit"))?;
            let etag = resp
                .header("X-Linked-Etag")
                .or_else(|| resp.header("ETag"))
                .map(normalize_etag)
                .ok_or_else(|| bad("ETag"))?;
            let size = resp
                .header("X-Linked-Size")
                .or_else(|| if (300..400).contains(&status) { None } else { resp.header("Content-Length") })
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| bad("size (X-Linked-Size / Content-Length)"))?;
            if etag.is_empty() || etag.contains('/') || etag.contains("..") {
                return Err(bad("usable ETag"));
            }
            let get_url = match location {
                Some(loc) if (300..400).contains(&status) => self.absolute(&url, &loc),
                _ => url.clone(),
            };
            return Ok(FileMeta { commit, etag, size, url: get_url });
        }
        Err(Error::Download { repo: repo.to_string(), message: format!("{url}: too many redirects") })
    }

    fn absolute(&self, base: &str, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_string();
        }
        // scheme://host[:port] of the base URL.
        let origin_end = base.find("://").map(|i| i + 3).and_then(|s| base[s..].find('/').map(|j| s + j));
        let origin = origin_end.map_or(base, |e| &base[..e]);
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            let dir = base.rfind('/').map_or(base, |i| &base[..=i]);
            format!("{dir}{location}")
        }
    }

    /// GET `meta.url` into `partial` (the blob's `.incomplete` file), resuming from its current
    /// length with a Range request, then check its size and, for LFS files, its sha256. On a
    /// mismatch the partial file is deleted and [`Error::Integrity`] returned; a transfer error
    /// keeps it for the next resume. `on_bytes` is told of every chunk written.
    pub fn fetch_to(&self, repo: &str, meta: &FileMeta, partial: &Path, on_bytes: &dyn Fn(u64)) -> Result<u64> {
        let io = |e: std::io::Error| Error::io(partial, e);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(io)?;
        let mut have = file.metadata().map_err(io)?.len();
        if have > meta.size {
            file.set_len(0).map_err(io)?;
            have = 0;
        }
        let mut resumed = 0;
        if have < meta.size {
            let mut url = meta.url.clone();
            let mut resp = None;
            for _ in 0..10 {
                let mut req = self.request("GET", &url);
                if have > 0 {
                    req = req.set("Range", &format!("bytes={have}-"));
                }
                let r = self.send(repo, req)?;
                if (300..400).contains(&r.status()) {
                    let loc = r.header("Location").map(str::to_string).ok_or_else(|| Error::Download {
                        repo: repo.into(),
                        message: format!("{url}: redirect without Location"),
                    })?;
                    url = self.absolute(&url, &loc);
                    continue;
                }
                resp = Some(r);
                break;
            }
            let resp =
                resp.ok_or_else(|| Error::Download { repo: repo.into(), message: "too many redirects".into() })?;
            let range_ok = resp
                .header("Content-Range")
                .is_some_and(|r| r.trim().strip_prefix("bytes ").is_some_and(|r| r.starts_with(&format!("{have}-"))));
            if have > 0 && resp.status() == 206 && range_ok {
                resumed = have;
                file.seek(SeekFrom::Start(have)).map_err(io)?;
            } else {
                // A 200 answer to a Range request is the whole file: start over. (A 206 for another
                // range than asked cannot be trusted either.)
                if resp.status() == 206 {
                    return Err(Error::Download {
                        repo: repo.into(),
                        message: format!("{url}: the server answered a range other than bytes={have}-"),
                    });
                }
                file.set_len(0).map_err(io)?;
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                have = 0;
            }
            on_bytes(have);
            let mut reader = resp.into_reader();
            let mut buf = vec![0u8; 1 << 16];
            let limit = meta.size;
            loop {
                let n = reader.read(&mut buf).map_err(|e| Error::Download {
                    repo: repo.into(),
                    message: format!("{}: transfer interrupted after {have} of {limit} bytes: {e}", meta.url),
                })?;
                if n == 0 {
                    break;
                }
                if have + n as u64 > limit {
                    drop(file);
                    let _ = std::fs::remove_file(partial);
                    return Err(Error::Integrity {
                        path: partial.to_path_buf(),
                        message: format!("the server sent more than the announced {limit} bytes"),
                    });
                }
                file.write_all(&buf[..n]).map_err(io)?;
                have += n as u64;
                on_bytes(n as u64);
            }
            file.flush().map_err(io)?;
            if have < limit {
                return Err(Error::Download {
                    repo: repo.into(),
                    message: format!("{}: connection closed after {have} of {limit} bytes", meta.url),
                });
            }
        }
        file.sync_all().map_err(io)?;
        drop(file);
        if let Some(want) = meta.sha256() {
            let got = sha256_file(partial)?;
            if !got.eq_ignore_ascii_case(want) {
                let _ = std::fs::remove_file(partial);
                return Err(Error::Integrity {
                    path: partial.to_path_buf(),
                    message: format!("sha256 is {got}, the hub says {want}; the file was deleted"),
                });
            }
        }
        Ok(resumed)
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Strip `W/` and quotes, as huggingface_hub does.
fn normalize_etag(s: &str) -> String {
    s.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// `<url>; rel="next"` from a Link header.
fn next_link(h: &str) -> Option<String> {
    h.split(',').find(|p| p.contains("rel=\"next\"")).and_then(|p| {
        let s = p.find('<')? + 1;
        let e = p.find('>')?;
        (e > s).then(|| p[s..e].to_string())
    })
}

fn hub_error(repo: &str, status: u16, url: &str, resp: ureq::Response) -> Error {
    let code = resp.header("X-Error-Code").map(str::to_string);
    let header_msg = resp.header("X-Error-Message").map(str::to_string);
    let body: String = resp.into_string().unwrap_or_default().chars().take(300).collect();
    let body_msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
    let code = code.unwrap_or_else(|| match status {
        401 => "RepoNotFound".into(),
        404 => "NotFound".into(),
        _ => "HttpError".into(),
    });
    let mut message = header_msg.or(body_msg).unwrap_or_else(|| url.to_string());
    match code.as_str() {
        "GatedRepo" => message.push_str(" (gated repo: accept its terms on the hub and set HF_TOKEN)"),
        "RepoNotFound" if status == 401 => {
            message.push_str(" (no such repo, or it is private/gated: check the name or set HF_TOKEN)")
        }
        _ => {}
    }
    Error::Hub { repo: repo.to_string(), status, code, message }
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

    #[test]
    fn quoting_and_links() {
        assert_eq!(quote_all("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(quote_path("1_Pooling/config.json"), "1_Pooling/config.json");
        assert_eq!(quote_path("a b.json"), "a%20b.json");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(next_link("<http://h/api/x?cursor=2>; rel=\"next\"").as_deref(), Some("http://h/api/x?cursor=2"));
        assert_eq!(next_link("<http://h/a>; rel=\"prev\""), None);
        let c = HubClient::new("http://127.0.0.1:9/", None);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.absolute("http://127.0.0.1:9/a/resolve/main/x", "/b/c"), "http://127.0.0.1:9/b/c");
        assert_eq!(c.absolute("http://127.0.0.1:9/a/b", "https://cdn/x"), "https://cdn/x");
    }
}
