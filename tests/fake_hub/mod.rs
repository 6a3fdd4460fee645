//! A fake Hugging Face hub on 127.0.0.1 (port 0) for tests, speaking the real protocol
//! (reference/model-formats.md §6.3–6.4): `api/models/{repo}[/revision/{rev}]`, paginated
//! `api/models/{repo}/tree/{rev}` with `Link: rel="next"`, HEAD/GET `{repo}/resolve/{rev}/{path}`
//! (200 + ETag for small files; 302 to an absolute CDN URL + X-Linked-Etag/X-Linked-Size for LFS
//! files; 307 relative redirect for a renamed repo), Range → 206 on the CDN, 404 EntryNotFound with
//! X-Repo-Commit, 401 RepoNotFound / GatedRepo.
//!
//! It serves the files of the test model's snapshot in the repo's own hub cache (blob names there are
//! the etags, so no sha1 is needed here). Fault injection: cut a transfer after N bytes, stall it
//! (for kill tests), corrupt a byte, ignore Range.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct HubFile {
    pub path: String,
    pub etag: String,
    pub data: Arc<Vec<u8>>,
}

impl HubFile {
    pub fn is_lfs(&self) -> bool {
        self.etag.len() == 64
    }
}

#[derive(Clone)]
pub struct HubRepo {
    pub commit: String,
    pub files: Vec<HubFile>,
    /// Bearer token required (a gated repo).
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Close the connection after this many body bytes of the file with this etag (once).
    pub cut: Option<(String, u64)>,
    /// After this many bytes of the file with this etag, trickle forever (until the client is gone).
    pub stall: Option<(String, u64)>,
    /// Flip one byte of this etag's content.
    pub corrupt: Option<String>,
    /// Answer Range requests with the whole file (200).
    pub ignore_range: bool,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, HubRepo>,
    /// old id → new id (renamed repos: resolve answers a relative 307).
    renamed: HashMap<String, String>,
    log: Vec<Logged>,
    faults: Faults,
    page_size: usize,
    cdn_url: String,
}

#[derive(Clone)]
pub struct FakeHub {
    pub url: String,
    state: Arc<Mutex<State>>,
}

pub const REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Read a snapshot of a hub cache: (commit, files).
pub fn load_snapshot(hub: &Path, repo: &str) -> HubRepo {
    let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).expect("refs/main").trim().to_string();
    let snap = repo_dir.join("snapshots").join(&commit);
    let mut files = Vec::new();
    let mut stack = vec![snap.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("snapshot dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let target = std::fs::read_link(&p).expect("snapshot entries are symlinks");
            let etag = target.file_name().unwrap().to_string_lossy().into_owned();
            let path = p.strip_prefix(&snap).unwrap().to_string_lossy().into_owned();
            files.push(HubFile { path, etag, data: Arc::new(std::fs::read(&p).expect("blob")) });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    HubRepo { commit, files, token: None }
}

impl FakeHub {
    /// Start serving `repos` on a fresh loopback port.
    pub fn start(repos: Vec<(String, HubRepo)>) -> FakeHub {
        // Two listeners: the hub, and a "CDN" on another origin (LFS redirects go there, and the
        // client must not send the token to it).
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let cdn = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cdn_url = format!("http://{}", cdn.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            repos: repos.into_iter().collect(),
            page_size: 1000,
            cdn_url,
            ..Default::default()
        }));
        let hub = FakeHub { url: url.clone(), state: state.clone() };
        for l in [listener, cdn] {
            let state = state.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let url = url.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &state, &url);
                    });
                }
            });
        }
        hub
    }

    pub fn set_faults(&self, f: Faults) {
        self.state.lock().unwrap().faults = f;
    }
    pub fn set_page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = n;
    }
    pub fn rename(&self, old: &str, new: &str) {
        let mut s = self.state.lock().unwrap();
        s.renamed.insert(old.to_string(), new.to_string());
    }
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
    pub fn repo(&self, id: &str) -> HubRepo {
        self.state.lock().unwrap().repos[id].clone()
    }
}

struct Req {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
}

fn read_request(conn: &TcpStream) -> Option<Req> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Req { method, path, query, headers })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Other",
    };
    let mut h = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        h.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    h.push_str("\r\n");
    conn.write_all(h.as_bytes())?;
    if !head_only {
        conn.write_all(body)?;
    }
    conn.flush()
}

fn error(
    conn: &mut TcpStream,
    status: u16,
    code: &str,
    msg: &str,
    commit: Option<&str>,
    head: bool,
) -> std::io::Result<()> {
    let mut h = vec![("X-Error-Code", code.to_string()), ("X-Error-Message", msg.to_string())];
    if let Some(c) = commit {
        h.push(("X-Repo-Commit", c.to_string()));
    }
    h.push(("Content-Type", "application/json".into()));
    let body = serde_json::json!({ "error": msg }).to_string();
    respond(conn, status, &h, body.as_bytes(), head)
}

/// `org/name` and the rest of a path after it.
fn split_repo(rest: &str) -> Option<(String, &str)> {
    let mut it = rest.splitn(3, '/');
    let org = it.next()?;
    let name = it.next()?;
    Some((format!("{org}/{name}"), it.next().unwrap_or("")))
}

fn serve(mut conn: TcpStream, state: &Arc<Mutex<State>>, base: &str) -> std::io::Result<()> {
    let Some(req) = read_request(&conn) else { return Ok(()) };
    let head = req.method == "HEAD";
    {
        let mut s = state.lock().unwrap();
        s.log.push(Logged {
            method: req.method.clone(),
            path: if req.query.is_empty() { req.path.clone() } else { format!("{}?{}", req.path, req.query) },
            range: req.headers.get("range").cloned(),
            authorization: req.headers.get("authorization").cloned(),
        });
    }
    let auth = req.headers.get("authorization").cloned();
    let path = req.path.clone();

    if let Some(sha) = path.strip_prefix("/cdn/") {
        return serve_cdn(conn, state, sha, &req);
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo_id, tail)) = split_repo(rest) else {
            return error(&mut conn, 404, "RepoNotFound", "bad path", None, head);
        };
        let repo = state.lock().unwrap().repos.get(&repo_id).cloned();
        let Some(repo) = repo else {
            return error(&mut conn, 401, "RepoNotFound", "Repository not found", None, head);
        };
        if let Some(t) = &repo.token {
            if auth.as_deref() != Some(&format!("Bearer {t}")) {
                return error(&mut conn, 401, "GatedRepo", "Access to this repo is restricted", None, head);
            }
        }
        let check_rev = |rev: &str| rev == "main" || rev == repo.commit;
        if tail.is_empty() || tail.starts_with("revision/") {
            let rev = decode(tail.strip_prefix("revision/").unwrap_or("main"));
            if !check_rev(&rev) {
                return error(&mut conn, 404, "RevisionNotFound", "Invalid rev id", None, head);
            }
            let siblings: Vec<_> = repo.files.iter().map(|f| serde_json::json!({ "rfilename": f.path })).collect();
            let body = serde_json::json!({ "id": repo_id, "sha": repo.commit, "siblings": siblings }).to_string();
            return respond(&mut conn, 200, &[("Content-Type", "application/json".into())], body.as_bytes(), head);
        }
        if let Some(t) = tail.strip_prefix("tree/") {
            let rev = decode(t.split('/').next().unwrap_or(""));
            if !check_rev(&rev) {
                return error(&mut conn, 404, "RevisionNotFound", "Invalid rev id", None, head);
            }
            let mut items = Vec::new();
            let mut dirs: Vec<String> = Vec::new();
            for f in &repo.files {
                if let Some((d, _)) = f.path.rsplit_once('/') {
                    if !dirs.contains(&d.to_string()) {
                        dirs.push(d.to_string());
                        items.push(serde_json::json!({ "type": "directory", "oid": "0".repeat(40), "path": d }));
                    }
                }
                let mut item = serde_json::json!({
                    "type": "file",
                    "oid": if f.is_lfs() { f.etag[..40].to_string() } else { f.etag.clone() },
                    "size": if f.is_lfs() { 134 } else { f.data.len() },
                    "path": f.path,
                });
                if f.is_lfs() {
                    item["lfs"] = serde_json::json!({ "oid": f.etag, "size": f.data.len(), "pointerSize": 134 });
                }
                items.push(item);
            }
            let page = state.lock().unwrap().page_size.max(1);
            let cursor: usize = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("cursor="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let end = (cursor + page).min(items.len());
            let body = serde_json::Value::Array(items[cursor.min(end)..end].to_vec()).to_string();
            let mut h = vec![("Content-Type", "application/json".to_string())];
            if end < items.len() {
                h.push(("Link", format!("<{base}{path}?recursive=true&expand=false&cursor={end}>; rel=\"next\"")));
            }
            return respond(&mut conn, 200, &h, body.as_bytes(), head);
        }
        return error(&mut conn, 404, "NotFound", "no such api", None, head);
    }
    // /{org}/{name}/resolve/{rev}/{path}
    let Some((repo_id, tail)) = split_repo(path.trim_start_matches('/')) else {
        return error(&mut conn, 404, "NotFound", "not found", None, head);
    };
    let Some(t) = tail.strip_prefix("resolve/") else {
        return error(&mut conn, 404, "NotFound", "not found", None, head);
    };
    let (rev, file) = t.split_once('/').unwrap_or((t, ""));
    let (rev, file) = (decode(rev), decode(file));
    let renamed = state.lock().unwrap().renamed.get(&repo_id).cloned();
    if let Some(new) = renamed {
        let loc = format!(
            "/{new}/resolve/{}/{}",
            t.split_once('/').map_or(t, |x| x.0),
            t.split_once('/').map_or("", |x| x.1)
        );
        return respond(&mut conn, 307, &[("Location", loc)], b"", head);
    }
    let repo = state.lock().unwrap().repos.get(&repo_id).cloned();
    let Some(repo) = repo else { return error(&mut conn, 401, "RepoNotFound", "Repository not found", None, head) };
    if let Some(tok) = &repo.token {
        if auth.as_deref() != Some(&format!("Bearer {tok}")) {
            return error(&mut conn, 401, "GatedRepo", "Access to this repo is restricted", None, head);
        }
    }
    if rev != "main" && rev != repo.commit {
        return error(&mut conn, 404, "RevisionNotFound", "Invalid rev id", None, head);
    }
    let Some(f) = repo.files.iter().find(|f| f.path == file) else {
        return error(&mut conn, 404, "EntryNotFound", "Entry not found", Some(&repo.commit), head);
    };
    let common = vec![("X-Repo-Commit", repo.commit.clone())];
    if f.is_lfs() {
        let mut h = common;
        h.push(("X-Linked-Etag", format!("\"{}\"", f.etag)));
        h.push(("X-Linked-Size", f.data.len().to_string()));
        h.push(("ETag", "\"pointer-etag-not-used\"".into()));
        let cdn = state.lock().unwrap().cdn_url.clone();
        h.push(("Location", format!("{cdn}/cdn/{}", f.etag)));
        return respond(&mut conn, 302, &h, b"", head);
    }
    let mut h = common;
    h.push(("ETag", format!("\"{}\"", f.etag)));
    h.push(("Content-Length", f.data.len().to_string()));
    respond(&mut conn, 200, &h, &f.data, head)
}

fn serve_cdn(mut conn: TcpStream, state: &Arc<Mutex<State>>, sha: &str, req: &Req) -> std::io::Result<()> {
    let head = req.method == "HEAD";
    let (data, faults) = {
        let s = state.lock().unwrap();
        let f = s.repos.values().flat_map(|r| r.files.iter()).find(|f| f.etag == sha).cloned();
        (f.map(|f| f.data), s.faults.clone())
    };
    let Some(data) = data else { return error(&mut conn, 404, "NotFound", "no such blob", None, head) };
    let mut body: Vec<u8> = (*data).clone();
    if faults.corrupt.as_deref() == Some(sha) {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let len = body.len() as u64;
    let start = req
        .headers
        .get("range")
        .filter(|_| !faults.ignore_range)
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<u64>().ok());
    let (status, from, mut headers) = match start {
        Some(s) if s < len => (206, s, vec![("Content-Range", format!("bytes {s}-{}/{len}", len - 1))]),
        _ => (200, 0, Vec::new()),
    };
    headers.push(("Content-Length", (len - from).to_string()));
    let slice = &body[from as usize..];
    let cut = faults.cut.as_ref().filter(|(e, _)| e == sha).map(|(_, n)| *n);
    let stall = faults.stall.as_ref().filter(|(e, _)| e == sha).map(|(_, n)| *n);
    if let Some(n) = cut.or(stall) {
        // One-shot: later requests are served normally.
        let mut s = state.lock().unwrap();
        if cut.is_some() {
            s.faults.cut = None;
        } else {
            s.faults.stall = None;
        }
        drop(s);
        let n = (n as usize).min(slice.len());
        let mut h = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        for (k, v) in &headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        conn.write_all(h.as_bytes())?;
        conn.write_all(&slice[..n])?;
        conn.flush()?;
        if stall.is_some() {
            // Trickle a byte now and then until the client goes away (or a minute passes).
            for i in 0..600 {
                std::thread::sleep(Duration::from_millis(100));
                conn.write_all(&slice[n + i..n + i + 1])?;
            }
        }
        return Ok(());
    }
    respond(&mut conn, status, &headers, slice, head)
}
