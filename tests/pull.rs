//! `pull` against a fake hub on loopback serving the real test model: full download in the
//! huggingface_hub layout, interrupted (cut and killed) then resumed with Range, corrupted content
//! rejected, a server that ignores Range, offline mode, gated/missing repos, a renamed repo's
//! relative redirect, and huggingface_hub's own cache scan on the result.

mod common;
mod fake_hub;

use std::path::{Path, PathBuf};
use std::process::Command;

use embedrank::source::download::{sha256_file, HubClient};
use embedrank::source::inventory;
use embedrank::source::pull::{pull, Outcome, PullOptions};
use embedrank::source::{self, CacheRoots, ModelRef, ResolveOptions};
use embedrank::Error;
use fake_hub::{FakeHub, Faults, HubRepo, REPO};

fn hub_with_minilm() -> (FakeHub, HubRepo) {
    let repo = fake_hub::load_snapshot(&common::test_hub(), REPO);
    (FakeHub::start(vec![(REPO.to_string(), repo.clone())]), repo)
}

fn opts(hub: &FakeHub, root: &Path) -> PullOptions {
    PullOptions {
        root: root.to_path_buf(),
        include: Vec::new(),
        jobs: 4,
        // Tests of interruption see the failure; the retry path has its own test.
        retries: 0,
        progress: false,
        offline: false,
        endpoint: hub.url.clone(),
        token: None,
        verify: false,
    }
}

fn repo_dir(root: &Path) -> PathBuf {
    root.join("models--sentence-transformers--all-MiniLM-L6-v2")
}

fn weights_etag(repo: &HubRepo) -> String {
    repo.files.iter().find(|f| f.path == "model.safetensors").expect("weights").etag.clone()
}

/// Every file of the source snapshot is linked, relative, to a blob with identical bytes.
fn assert_layout(root: &Path, repo: &HubRepo) {
    let dir = repo_dir(root);
    assert_eq!(std::fs::read_to_string(dir.join("refs/main")).unwrap(), repo.commit, "refs/main without newline");
    let snap = dir.join("snapshots").join(&repo.commit);
    for f in &repo.files {
        if f.path == "README.md" {
            assert!(!snap.join(&f.path).exists(), "README.md is not needed for inference");
            continue;
        }
        let link = snap.join(&f.path);
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        let ups = "../".repeat(2 + f.path.matches('/').count());
        assert_eq!(target, PathBuf::from(format!("{ups}blobs/{}", f.etag)), "{}", f.path);
        assert_eq!(std::fs::read(&link).unwrap(), *f.data, "{} content", f.path);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "no .incomplete blobs after success");
}

#[test]
fn full_download_then_cached_and_loadable() {
    let (hub, repo) = hub_with_minilm();
    hub.set_page_size(3);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, tmp.path());
    o.token = Some("hf_test_token".into());
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("pull");
    assert_eq!(r.commit, repo.commit);
    assert_eq!(r.files.len(), repo.files.len() - 1, "everything but README.md");
    assert!(r.files.iter().all(|f| f.outcome == Outcome::Downloaded));
    let total: u64 = repo.files.iter().filter(|f| f.path != "README.md").map(|f| f.data.len() as u64).sum();
    assert_eq!(r.downloaded_bytes, total);
    assert_layout(tmp.path(), &repo);

    let log = hub.log();
    assert!(log.iter().filter(|l| l.path.contains("/tree/")).count() >= 2, "tree listing was paginated");
    assert!(log
        .iter()
        .any(|l| l.method == "HEAD" && l.path.ends_with(&format!("/resolve/{}/config.json", repo.commit))));
    for l in &log {
        if l.path.starts_with("/cdn/") {
            assert_eq!(l.authorization, None, "token must not travel to the CDN");
        } else {
            assert_eq!(l.authorization.as_deref(), Some("Bearer hf_test_token"), "{}", l.path);
        }
    }

    // Second pull: HEADs only, nothing transferred.
    hub.clear_log();
    let r2 = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("second pull");
    assert!(r2.files.iter().all(|f| f.outcome == Outcome::Cached));
    assert_eq!(r2.downloaded_bytes, 0);
    assert!(hub.log().iter().all(|l| l.method != "GET" || l.path.starts_with("/api/")));

    // The result resolves and loads like any cache entry, and inventory calls it complete.
    let ro = ResolveOptions { roots: CacheRoots::new(vec![tmp.path().to_path_buf()]), offline: true };
    let resolved = source::resolve(REPO, &ro).expect("resolve");
    let spec = embedrank::spec::ModelSpec::load(&resolved, &Default::default()).expect("spec");
    assert_eq!(spec.embedding_dim(), 384);
    let inv = inventory::scan(&CacheRoots::new(vec![tmp.path().to_path_buf()]));
    assert!(inv.repos[0].complete, "{:?}", inv.repos[0].problems);
}

#[test]
fn python_cache_scan_accepts_our_layout() {
    let python = std::env::var_os("EMBEDRANK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join(".venv/bin/python"));
    // scripts/setup.sh makes .venv with huggingface_hub; without it this test fails rather than skips.
    assert!(python.exists(), "no Python at {}: run scripts/setup.sh or set EMBEDRANK_PYTHON", python.display());
    let (hub, _) = hub_with_minilm();
    let tmp = tempfile::tempdir().unwrap();
    pull(&ModelRef::parse(REPO).unwrap(), &opts(&hub, tmp.path())).expect("pull");
    let out = Command::new(&python)
        .arg(common::repo_root().join("scripts/check_hf_cache_scan.py"))
        .arg(tmp.path())
        .arg(REPO)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "huggingface_hub rejected the cache: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cut_transfer_resumes_with_range() {
    let (hub, repo) = hub_with_minilm();
    let etag = weights_etag(&repo);
    let cut_at = 10 << 20;
    hub.set_faults(Faults { cut: Some((etag.clone(), cut_at)), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());
    let err = pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("the cut transfer fails");
    assert!(matches!(err, Error::Download { .. }), "{err}");
    let dir = repo_dir(tmp.path());
    let partial = dir.join("blobs").join(format!("{etag}.incomplete"));
    assert_eq!(std::fs::metadata(&partial).expect(".incomplete kept").len(), cut_at);
    assert!(!dir.join("blobs").join(&etag).exists(), "no blob that looks complete");
    assert!(!dir.join("refs/main").exists(), "no ref before every file is in");
    assert!(std::fs::symlink_metadata(dir.join("snapshots").join(&repo.commit).join("model.safetensors")).is_err());
    // status sees the interrupted download.
    let inv = inventory::scan(&CacheRoots::new(vec![tmp.path().to_path_buf()]));
    assert!(!inv.repos[0].complete);
    assert!(inv.repos[0].problems.iter().any(|p| p.contains("interrupted download")), "{:?}", inv.repos[0].problems);
    // A resolve does not treat it as a model either.
    let ro = ResolveOptions { roots: CacheRoots::new(vec![tmp.path().to_path_buf()]), offline: true };
    assert!(source::resolve(REPO, &ro).is_err());

    hub.clear_log();
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("resume");
    let w = r.files.iter().find(|f| f.path == "model.safetensors").unwrap();
    assert_eq!(w.outcome, Outcome::Resumed);
    let want_range = format!("bytes={cut_at}-");
    assert!(hub.log().iter().any(|l| l.path.starts_with("/cdn/") && l.range.as_deref() == Some(want_range.as_str())));
    assert_eq!(sha256_file(&dir.join("blobs").join(&etag)).unwrap(), etag);
    assert_layout(tmp.path(), &repo);
}

#[test]
fn server_ignoring_range_restarts_cleanly() {
    let (hub, repo) = hub_with_minilm();
    let etag = weights_etag(&repo);
    hub.set_faults(Faults { cut: Some((etag.clone(), 3 << 20)), ignore_range: true, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());
    pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("cut");
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("a 200 answer restarts the file");
    assert_eq!(r.files.iter().find(|f| f.path == "model.safetensors").unwrap().outcome, Outcome::Downloaded);
    assert_layout(tmp.path(), &repo);
}

#[test]
fn corrupted_content_is_rejected_and_deleted() {
    let (hub, repo) = hub_with_minilm();
    let etag = weights_etag(&repo);
    hub.set_faults(Faults { corrupt: Some(etag.clone()), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());
    let err = pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("corrupt content");
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    let blobs = repo_dir(tmp.path()).join("blobs");
    assert!(!blobs.join(&etag).exists());
    assert!(!blobs.join(format!("{etag}.incomplete")).exists(), "bad bytes are not kept for a resume");
    assert!(!repo_dir(tmp.path()).join("refs/main").exists());

    // A corrupted partial file on disk: the resume's hash fails, the file goes, the next pull is clean.
    hub.set_faults(Faults::default());
    std::fs::write(blobs.join(format!("{etag}.incomplete")), vec![0x5a; 1 << 20]).unwrap();
    let err = pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("corrupt partial");
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert!(!blobs.join(format!("{etag}.incomplete")).exists());
    pull(&ModelRef::parse(REPO).unwrap(), &o).expect("clean pull");
    assert_layout(tmp.path(), &repo);
}

#[test]
fn offline_uses_the_cache_only() {
    let (hub, repo) = hub_with_minilm();
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, tmp.path());
    o.offline = true;
    let err = pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("nothing cached");
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    assert!(hub.log().is_empty(), "offline makes no request");

    o.offline = false;
    pull(&ModelRef::parse(REPO).unwrap(), &o).expect("online pull");
    hub.clear_log();
    o.offline = true;
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("offline pull of a complete copy");
    assert!(r.offline && r.files.iter().all(|f| f.outcome == Outcome::Cached));
    assert_eq!(r.commit, repo.commit);
    assert!(hub.log().is_empty());

    // A broken copy is not good enough offline.
    std::fs::remove_file(repo_dir(tmp.path()).join("snapshots").join(&repo.commit).join("tokenizer.json")).unwrap();
    let err = pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("incomplete copy");
    assert!(err.to_string().contains("tokenizer"), "{err}");
}

#[test]
fn gated_missing_and_renamed_repos() {
    let mut gated = fake_hub::load_snapshot(&common::test_hub(), REPO);
    gated.token = Some("hf_secret".into());
    gated.files.retain(|f| f.path != "model.safetensors");
    let hub = FakeHub::start(vec![
        (REPO.to_string(), fake_hub::load_snapshot(&common::test_hub(), REPO)),
        ("gated-org/minilm".to_string(), gated),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, tmp.path());

    match pull(&ModelRef::parse("gated-org/minilm").unwrap(), &o) {
        Err(Error::Hub { status: 401, code, message, .. }) => {
            assert_eq!(code, "GatedRepo");
            assert!(message.contains("HF_TOKEN"), "{message}");
        }
        other => panic!("expected a gated error, got {other:?}"),
    }
    o.token = Some("hf_secret".into());
    let r = pull(&ModelRef::parse("gated-org/minilm").unwrap(), &o).expect("with the token");
    assert!(r.files.iter().any(|f| f.path == "config.json"));

    match pull(&ModelRef::parse("nobody/nothing").unwrap(), &o) {
        Err(Error::Hub { status: 401, code, .. }) => assert_eq!(code, "RepoNotFound"),
        other => panic!("expected RepoNotFound, got {other:?}"),
    }
    match pull(&ModelRef::parse(&format!("{REPO}@no-such-branch")).unwrap(), &o) {
        Err(Error::Hub { status: 404, code, .. }) => assert_eq!(code, "RevisionNotFound"),
        other => panic!("expected RevisionNotFound, got {other:?}"),
    }
    let client = HubClient::new(&hub.url, None);
    match client.file_meta(REPO, "main", "no-such-file.json") {
        Err(Error::Hub { status: 404, code, .. }) => assert_eq!(code, "EntryNotFound"),
        other => panic!("expected EntryNotFound, got {other:?}"),
    }
    // A renamed repo: HEAD follows the relative redirect to the new name.
    hub.rename("old-org/old-name", REPO);
    let meta = client.file_meta("old-org/old-name", "main", "config.json").expect("relative redirect followed");
    assert_eq!(meta.commit, hub.repo(REPO).commit);
    assert!(meta.url.contains(&format!("/{REPO}/resolve/")), "{}", meta.url);
    // An LFS file's metadata comes from the redirect itself, not the CDN.
    let meta = client.file_meta(REPO, "main", "model.safetensors").expect("lfs meta");
    assert_eq!(meta.etag.len(), 64);
    assert!(meta.url.contains("/cdn/"));
    assert!(
        hub.log().iter().all(|l| !(l.method == "HEAD" && l.path.starts_with("/cdn/"))),
        "HEAD does not follow the CDN redirect"
    );
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    for k in ["HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "EMBEDRANK_CACHE_DIRS", "HF_HOME"] {
        c.env_remove(k);
    }
    c
}

#[test]
fn cli_killed_mid_download_then_resumed() {
    let (hub, repo) = hub_with_minilm();
    let etag = weights_etag(&repo);
    hub.set_faults(Faults { stall: Some((etag.clone(), 5 << 20)), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["pull", REPO, "--cache-dir"])
        .arg(tmp.path())
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", tmp.path().join("unused"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let partial = repo_dir(tmp.path()).join("blobs").join(format!("{etag}.incomplete"));
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 5 << 20 {
        assert!(t0.elapsed().as_secs() < 60, "download did not start");
        assert!(child.try_wait().unwrap().is_none(), "pull ended before the kill");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = repo_dir(tmp.path());
    assert!(!dir.join("blobs").join(&etag).exists());
    assert!(!dir.join("refs/main").exists());

    // The status command reports it broken (exit 1) with the fix.
    let wanted = tmp.path().join("wanted.toml");
    std::fs::write(&wanted, format!("[[model]]\nrepo = \"{REPO}\"\n")).unwrap();
    let st = bin()
        .args(["status", "--json", "--wanted"])
        .arg(&wanted)
        .arg("--cache-dir")
        .arg(tmp.path())
        .env("HF_HUB_CACHE", tmp.path().join("unused"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["wanted"]["entries"][0]["state"], "broken");

    hub.clear_log();
    let out = bin()
        .args(["pull", REPO, "--json", "--cache-dir"])
        .arg(tmp.path())
        .env("HF_ENDPOINT", &hub.url)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let w = v["files"].as_array().unwrap().iter().find(|f| f["path"] == "model.safetensors").unwrap().clone();
    assert_eq!(w["outcome"], "resumed");
    assert!(hub.log().iter().any(|l| l.range.as_deref().is_some_and(|r| r.starts_with("bytes="))));
    assert_layout(tmp.path(), &repo);
}

#[test]
fn cli_offline_env_and_resolve_download() {
    let (hub, _) = hub_with_minilm();
    let tmp = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["pull", REPO, "--cache-dir"])
        .arg(tmp.path())
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("offline") && err.lines().count() == 1, "{err}");
    assert!(hub.log().is_empty());

    // `embed` on a model not in the cache downloads it through the same code (into the first root).
    let out = bin()
        .args(["embed", "--model", REPO, "--cache-dir"])
        .arg(tmp.path())
        .arg("hello world")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", tmp.path().join("unused"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("jsonl");
    assert_eq!(line["embedding"].as_array().unwrap().len(), 384);
    assert!(repo_dir(tmp.path()).join("refs/main").exists());
}

#[test]
fn pull_repairs_a_broken_copy() {
    let (hub, repo) = hub_with_minilm();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(&hub, tmp.path());
    pull(&ModelRef::parse(REPO).unwrap(), &o).expect("pull");
    let dir = repo_dir(tmp.path());
    let snap = dir.join("snapshots").join(&repo.commit);
    // Dangling weights link (blob deleted) and a missing tokenizer link.
    std::fs::remove_file(dir.join("blobs").join(weights_etag(&repo))).unwrap();
    std::fs::remove_file(snap.join("tokenizer.json")).unwrap();
    let inv = inventory::scan(&CacheRoots::new(vec![tmp.path().to_path_buf()]));
    let problems = inv.repos[0].revisions[0].problems.join(" | ");
    assert!(problems.contains("dangling symlink model.safetensors") && problems.contains("tokenizer"), "{problems}");

    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("repair");
    let fetched: Vec<&str> = r.files.iter().filter(|f| f.outcome != Outcome::Cached).map(|f| f.path.as_str()).collect();
    // tokenizer.json's blob is still there: only its link is remade.
    assert_eq!(fetched, ["model.safetensors"]);
    assert_layout(tmp.path(), &repo);
    let inv = inventory::scan(&CacheRoots::new(vec![tmp.path().to_path_buf()]));
    assert!(inv.repos[0].complete, "{:?}", inv.repos[0].revisions[0].problems);
}

#[test]
fn transfer_errors_are_retried_with_resume() {
    let (hub, repo) = hub_with_minilm();
    let etag = weights_etag(&repo);
    hub.set_faults(Faults { cut: Some((etag.clone(), 7 << 20)), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, tmp.path());
    o.retries = 1;
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("the retry resumes");
    assert_eq!(r.files.iter().find(|f| f.path == "model.safetensors").unwrap().outcome, Outcome::Resumed);
    let want = format!("bytes={}-", 7 << 20);
    assert!(hub.log().iter().any(|l| l.range.as_deref() == Some(want.as_str())));
    assert_layout(tmp.path(), &repo);
}

/// Flip one byte in the middle of a file, keeping its size (what a size check cannot see).
fn flip_byte(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(path, data).unwrap();
}

fn status_verify(root: &Path, wanted: &Path) -> (Option<i32>, serde_json::Value) {
    let out = bin()
        .args(["status", "--verify", "--json", "--wanted"])
        .arg(wanted)
        .arg("--cache-dir")
        .arg(root)
        .env("HF_HUB_CACHE", root.join("unused"))
        .output()
        .unwrap();
    (out.status.code(), serde_json::from_slice(&out.stdout).expect("status json"))
}

#[test]
fn verify_finds_and_pull_verify_repairs_same_size_corruption() {
    let (hub, repo) = hub_with_minilm();
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&hub, tmp.path());
    pull(&ModelRef::parse(REPO).unwrap(), &o).expect("pull");
    let blobs = repo_dir(tmp.path()).join("blobs");
    let weights = weights_etag(&repo);
    // config.json is a small git file: its blob is named by its git blob sha1.
    let config = repo.files.iter().find(|f| f.path == "config.json").unwrap().etag.clone();
    assert_eq!(config.len(), 40);
    flip_byte(&blobs.join(&weights));
    flip_byte(&blobs.join(&config));
    let wanted = tmp.path().join("wanted.toml");
    std::fs::write(&wanted, format!("[[model]]\nrepo = \"{REPO}\"\n")).unwrap();

    // Without --verify nothing notices: sizes and headers still check out.
    let inv = inventory::scan(&CacheRoots::new(vec![tmp.path().to_path_buf()]));
    assert!(inv.repos[0].complete);
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("plain pull");
    assert!(r.files.iter().all(|f| f.outcome == Outcome::Cached));

    // status --verify names both blobs, calls the wanted entry broken, exits 1.
    let (code, v) = status_verify(tmp.path(), &wanted);
    assert_eq!(code, Some(1), "{v}");
    let bad: Vec<&str> =
        v["verify"]["mismatches"].as_array().unwrap().iter().map(|m| m["expected"].as_str().unwrap()).collect();
    assert_eq!(bad.len(), 2, "{v}");
    assert!(bad.contains(&weights.as_str()) && bad.contains(&config.as_str()), "{bad:?}");
    let algos: Vec<&str> =
        v["verify"]["mismatches"].as_array().unwrap().iter().map(|m| m["algorithm"].as_str().unwrap()).collect();
    assert!(algos.contains(&"sha256") && algos.contains(&"git-sha1"), "{algos:?}");
    assert_eq!(v["wanted"]["entries"][0]["state"], "broken", "{v}");
    assert!(v["wanted"]["entries"][0]["fix"].as_str().unwrap().starts_with("embedrank pull --verify "), "{v}");
    assert!(v["verify"]["checked"].as_u64().unwrap() >= 10, "{v}");

    // check --verify fails the model without loading it.
    let out = bin().args(["check", "--verify", REPO, "--cache-dir"]).arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("corrupt") && text.contains("FAIL"), "{text}");

    // Offline, pull --verify can only report.
    o.offline = true;
    o.verify = true;
    let err = pull(&ModelRef::parse(REPO).unwrap(), &o).expect_err("corrupt copy offline");
    assert!(matches!(err, Error::Offline { .. }) && err.to_string().contains("corrupt"), "{err}");

    // Online, pull --verify fetches exactly the two corrupt blobs again.
    o.offline = false;
    hub.clear_log();
    let r = pull(&ModelRef::parse(REPO).unwrap(), &o).expect("repairing pull");
    let mut repaired: Vec<&str> =
        r.files.iter().filter(|f| f.outcome == Outcome::Repaired).map(|f| f.path.as_str()).collect();
    repaired.sort();
    assert_eq!(repaired, ["config.json", "model.safetensors"]);
    assert!(r.files.iter().all(|f| matches!(f.outcome, Outcome::Repaired | Outcome::Cached)));
    assert_eq!(sha256_file(&blobs.join(&weights)).unwrap(), weights);
    assert_layout(tmp.path(), &repo);
    let (code, v) = status_verify(tmp.path(), &wanted);
    assert_eq!(code, Some(0), "{v}");
    assert!(v["verify"]["mismatches"].as_array().unwrap().is_empty());

    // The CLI flag says so too.
    flip_byte(&blobs.join(&config));
    let out = bin()
        .args(["pull", REPO, "--verify", "--json", "--cache-dir"])
        .arg(tmp.path())
        .env("HF_ENDPOINT", &hub.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = v["files"].as_array().unwrap().iter().find(|f| f["path"] == "config.json").unwrap().clone();
    assert_eq!(c["outcome"], "repaired");
}

#[test]
fn revisions_that_leave_the_cache_are_refused() {
    let (hub, _) = hub_with_minilm();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    for rev in [outside.display().to_string(), "../../../outside".into(), "a\\b".into(), "main/./x".into()] {
        let out = bin()
            .args(["pull", &format!("{REPO}@{rev}"), "--cache-dir"])
            .arg(tmp.path().join("cache"))
            .env("HF_ENDPOINT", &hub.url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{rev}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad revision") && err.lines().count() == 1, "{rev}: {err}");
        assert!(!outside.exists(), "{rev}: wrote outside the cache");
    }
    assert!(hub.log().is_empty(), "refused before any request");
    match ModelRef::parse(&format!("{REPO}@/etc/passwd")) {
        Err(Error::InvalidRevision { revision, .. }) => assert_eq!(revision, "/etc/passwd"),
        other => panic!("{other:?}"),
    }
}
