//! Cache inventory: scan hub cache roots (the standard layout, see reference/model-formats.md §6.2)
//! and describe every model repo: revisions, task, architecture, parameter count, format, dtype,
//! size on disk, completeness and last change.
//!
//! Built for caches of hundreds of GB on slow external disks: only small JSON files and the headers
//! of safetensors files are read, never weights.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::cache::CacheRoots;
use super::reference::is_commit_hash;

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelTask {
    Embedding,
    Reranker,
    Other,
}

impl ModelTask {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelTask::Embedding => "embedding",
            ModelTask::Reranker => "reranker",
            ModelTask::Other => "other",
        }
    }
}

/// How the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightFormat {
    Safetensors,
    /// MLX affine-quantized safetensors (packed u32 + scales + biases).
    MlxAffine,
    /// Only PyTorch `.bin` weights.
    PytorchBin,
    Gguf,
    Onnx,
    None,
}

impl WeightFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::MlxAffine => "mlx-affine",
            WeightFormat::PytorchBin => "pytorch-bin",
            WeightFormat::Gguf => "gguf",
            WeightFormat::Onnx => "onnx",
            WeightFormat::None => "none",
        }
    }
}

/// A quantization entry of config.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantization {
    pub bits: Option<u32>,
    pub group_size: Option<u32>,
    /// `affine` (MLX; the default when absent) or a foreign `quant_method` (awq, gptq, …).
    pub mode: String,
}

/// One file of a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFile {
    pub path: String,
    pub size: u64,
    /// Blob name the snapshot entry links to (empty for a plain copied file).
    pub etag: String,
}

/// Files and problems of one snapshot folder.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCheck {
    pub files: Vec<SnapshotFile>,
    pub problems: Vec<String>,
    /// Snapshot paths whose symlink points at a missing blob.
    pub dangling: Vec<String>,
    blobs: Vec<PathBuf>,
    last_modified: Option<SystemTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevisionEntry {
    pub commit: String,
    /// Refs (branches/tags) pointing at this commit.
    pub refs: Vec<String>,
    pub path: PathBuf,
    pub task: ModelTask,
    pub architecture: Option<String>,
    pub model_type: Option<String>,
    pub parameters: Option<u64>,
    pub format: WeightFormat,
    /// Every weight format present (e.g. safetensors and onnx).
    pub formats: Vec<WeightFormat>,
    pub quantization: Option<Quantization>,
    pub dtype: Option<String>,
    pub files: usize,
    pub size_bytes: u64,
    pub complete: bool,
    pub problems: Vec<String>,
    pub last_modified: Option<u64>,
}

impl RevisionEntry {
    /// A short description: `mlx-affine 4-bit g64 bf16`, `safetensors f32`, …
    pub fn variant(&self) -> String {
        let mut s = self.format.as_str().to_string();
        if let Some(q) = &self.quantization {
            if let Some(b) = q.bits {
                s.push_str(&format!(" {b}-bit"));
            }
            if let Some(g) = q.group_size {
                s.push_str(&format!(" g{g}"));
            }
            if q.mode != "affine" {
                s.push_str(&format!(" {}", q.mode));
            }
        }
        if let Some(d) = &self.dtype {
            s.push(' ');
            s.push_str(d);
        }
        s
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RepoEntry {
    pub repo_id: String,
    /// The cache root holding it.
    pub root: PathBuf,
    pub path: PathBuf,
    /// ref name → commit.
    pub refs: BTreeMap<String, String>,
    /// Newest first.
    pub revisions: Vec<RevisionEntry>,
    /// Bytes of all blobs, each counted once however many snapshots share it (`.incomplete` included).
    pub size_bytes: u64,
    /// Bytes in `.incomplete` blobs (interrupted downloads).
    pub incomplete_bytes: u64,
    /// Repo-wide problems (`.incomplete` blobs, refs to missing snapshots).
    pub problems: Vec<String>,
    pub complete: bool,
    pub last_modified: Option<u64>,
}

impl RepoEntry {
    /// The revision a ref (or commit, or commit prefix) names.
    pub fn revision(&self, rev: &str) -> Option<&RevisionEntry> {
        if let Some(c) = self.refs.get(rev) {
            return self.revisions.iter().find(|r| &r.commit == c);
        }
        if rev.len() >= 7 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
            return self.revisions.iter().find(|r| r.commit.starts_with(&rev.to_ascii_lowercase()));
        }
        None
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RootEntry {
    pub path: PathBuf,
    pub exists: bool,
    pub repos: usize,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub roots: Vec<RootEntry>,
    pub repos: Vec<RepoEntry>,
}

impl Inventory {
    /// Every cached copy of `repo_id` (one per root holding it).
    pub fn find<'a>(&'a self, repo_id: &'a str) -> impl Iterator<Item = &'a RepoEntry> + 'a {
        self.repos.iter().filter(move |r| r.repo_id.eq_ignore_ascii_case(repo_id))
    }
}

/// Scan every root; a missing or unreadable root is reported, not an error.
pub fn scan(roots: &CacheRoots) -> Inventory {
    let mut out = Inventory { roots: Vec::new(), repos: Vec::new() };
    for root in roots.iter() {
        match scan_root(root) {
            Ok(repos) => {
                out.roots.push(RootEntry { path: root.clone(), exists: true, repos: repos.len(), error: None });
                out.repos.extend(repos);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.roots.push(RootEntry { path: root.clone(), exists: false, repos: 0, error: None });
            }
            Err(e) => {
                out.roots.push(RootEntry { path: root.clone(), exists: true, repos: 0, error: Some(e.to_string()) });
            }
        }
    }
    out
}

/// Every `models--org--name` folder of one root, sorted by repo id.
pub fn scan_root(root: &Path) -> std::io::Result<Vec<RepoEntry>> {
    let mut repos = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("models--") else { continue };
        if !entry.path().is_dir() {
            continue;
        }
        let repo_id = rest.replace("--", "/");
        repos.push(scan_repo(root, &entry.path(), &repo_id));
    }
    repos.sort_by_key(|a| a.repo_id.to_ascii_lowercase());
    Ok(repos)
}

fn scan_repo(root: &Path, path: &Path, repo_id: &str) -> RepoEntry {
    let mut problems = Vec::new();
    let refs = read_refs(&path.join("refs"));
    let mut size_bytes = 0;
    let mut incomplete_bytes = 0;
    let mut last: Option<SystemTime> = None;
    if let Ok(rd) = std::fs::read_dir(path.join("blobs")) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            size_bytes += m.len();
            last = newest(last, m.modified().ok());
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".incomplete") {
                incomplete_bytes += m.len();
                problems.push(format!("interrupted download: blobs/{n} ({})", human_bytes(m.len())));
            }
        }
    }
    let mut revisions = Vec::new();
    let mut seen_blobs: BTreeSet<PathBuf> = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(path.join("snapshots")) {
        for e in rd.flatten() {
            let commit = e.file_name().to_string_lossy().into_owned();
            if !e.path().is_dir() {
                continue;
            }
            let rev = describe_revision(repo_id, &e.path(), &commit, &refs);
            // Files copied into snapshots (no symlinks) are not in blobs/: count them too.
            for f in &rev.1.blobs {
                if !f.starts_with(path.join("blobs")) && seen_blobs.insert(f.clone()) {
                    size_bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                }
            }
            last = newest(last, rev.1.last_modified);
            revisions.push(rev.0);
        }
    }
    for (name, commit) in &refs {
        if !revisions.iter().any(|r| &r.commit == commit) {
            problems.push(format!("ref `{name}` points to {commit}, which has no snapshot"));
        }
    }
    if revisions.is_empty() {
        problems.push("no snapshots".into());
    }
    // Newest first; a ref'd revision before an unreferenced one of the same age.
    revisions.sort_by(|a, b| b.last_modified.cmp(&a.last_modified).then(b.refs.len().cmp(&a.refs.len())));
    let complete = problems.is_empty() && revisions.iter().all(|r| r.complete);
    RepoEntry {
        repo_id: repo_id.to_string(),
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        refs,
        revisions,
        size_bytes,
        incomplete_bytes,
        problems,
        complete,
        last_modified: last.and_then(unix_secs),
    }
}

fn read_refs(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(s) = std::fs::read_to_string(&p) {
                let name = p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().replace('\\', "/");
                let commit = s.trim().to_string();
                if is_commit_hash(&commit) && !name.starts_with('.') {
                    out.insert(name, commit);
                }
            }
        }
    }
    out
}

/// Describe one snapshot folder (its commit is the folder name) and list its files.
pub fn describe_snapshot(repo_id: &str, dir: &Path) -> (RevisionEntry, Vec<SnapshotFile>) {
    let commit = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (entry, check) = describe_revision(repo_id, dir, &commit, &BTreeMap::new());
    (entry, check.files)
}

fn describe_revision(
    repo_id: &str,
    dir: &Path,
    commit: &str,
    refs: &BTreeMap<String, String>,
) -> (RevisionEntry, SnapshotCheck) {
    let check = check_snapshot(dir);
    let config = read_json(&dir.join("config.json"));
    // Dangling entries still say what the snapshot is meant to hold (its format).
    let names: BTreeSet<&str> =
        check.files.iter().map(|f| f.path.as_str()).chain(check.dangling.iter().map(String::as_str)).collect();
    let has = |n: &str| names.contains(n);
    let mut formats = Vec::new();
    if names.iter().any(|n| n.ends_with(".safetensors")) {
        formats.push(WeightFormat::Safetensors);
    }
    if names.iter().any(|n| n.ends_with(".bin") && n.contains("pytorch_model")) {
        formats.push(WeightFormat::PytorchBin);
    }
    if names.iter().any(|n| n.ends_with(".gguf")) {
        formats.push(WeightFormat::Gguf);
    }
    if names.iter().any(|n| n.ends_with(".onnx")) {
        formats.push(WeightFormat::Onnx);
    }
    let quantization = config.as_ref().and_then(quantization);
    let mlx = quantization.as_ref().is_some_and(|q| q.mode == "affine");
    let format = match formats.first().copied() {
        Some(WeightFormat::Safetensors) if mlx => WeightFormat::MlxAffine,
        Some(f) => f,
        None => WeightFormat::None,
    };
    if format == WeightFormat::MlxAffine {
        formats[0] = WeightFormat::MlxAffine;
    }
    let mut problems = check.problems.clone();
    // A GGUF file carries its own config and tokenizer.
    let gguf_only = format == WeightFormat::Gguf;
    if !gguf_only && !has("config.json") {
        problems.push("no config.json".into());
    }
    // embedrank (like TEI) loads the fast tokenizer only; vocab.txt / tokenizer.model alone is not enough.
    if !gguf_only && !has("tokenizer.json") {
        let slow = SLOW_TOKENIZER_FILES.iter().filter(|t| has(t)).copied().collect::<Vec<_>>();
        problems.push(if slow.is_empty() {
            "no tokenizer (tokenizer.json)".to_string()
        } else {
            format!("no tokenizer.json (only {})", slow.join(", "))
        });
    }
    if format == WeightFormat::None {
        problems.push("no weights (safetensors, .bin, gguf or onnx)".into());
    }
    let (parameters, dtype) = match format {
        WeightFormat::Safetensors | WeightFormat::MlxAffine => {
            let (p, d, errs) = safetensors_summary(dir, &check.files, quantization.as_ref(), config.as_ref());
            problems.extend(errs);
            (p, d)
        }
        _ => (None, config.as_ref().and_then(config_dtype)),
    };
    let architecture = config.as_ref().and_then(|c| {
        c.get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let model_type = config.as_ref().and_then(|c| c.get("model_type")).and_then(Value::as_str).map(str::to_string);
    let task = detect_task(repo_id, dir, config.as_ref());
    let rev_refs = refs.iter().filter(|(_, c)| c.as_str() == commit).map(|(n, _)| n.clone()).collect();
    let size_bytes = {
        let mut seen = BTreeSet::new();
        check.files.iter().filter(|f| f.etag.is_empty() || seen.insert(f.etag.clone())).map(|f| f.size).sum()
    };
    let entry = RevisionEntry {
        commit: commit.to_string(),
        refs: rev_refs,
        path: dir.to_path_buf(),
        task,
        architecture,
        model_type,
        parameters,
        format,
        formats,
        quantization,
        dtype,
        files: check.files.len(),
        size_bytes,
        complete: problems.is_empty(),
        problems,
        last_modified: check.last_modified.and_then(unix_secs),
    };
    (entry, check)
}

const SLOW_TOKENIZER_FILES: &[&str] =
    &["tokenizer.model", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model"];

/// List a snapshot's files and what is wrong with them: dangling symlinks, shards named by an index
/// but absent. (Semantic checks — config, tokenizer, weights — are in the revision description.)
pub fn check_snapshot(dir: &Path) -> SnapshotCheck {
    let mut out = SnapshotCheck::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                out.problems.push(format!("{}: {e}", d.display()));
                continue;
            }
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(lm) = std::fs::symlink_metadata(&p) else { continue };
            out.last_modified = newest(out.last_modified, lm.modified().ok());
            if lm.is_dir() {
                stack.push(p);
                continue;
            }
            if lm.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap_or_default();
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_file() => {
                        let blob = p.parent().unwrap_or(dir).join(&target);
                        let etag = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        out.blobs.push(normalize(&blob));
                        out.files.push(SnapshotFile { path: rel, size: m.len(), etag });
                    }
                    Ok(_) => out.problems.push(format!("{rel} links to something that is not a file")),
                    Err(_) => {
                        out.problems.push(format!("dangling symlink {rel} -> {}", target.display()));
                        out.dangling.push(rel);
                    }
                }
            } else if lm.is_file() {
                out.blobs.push(p.clone());
                out.files.push(SnapshotFile { path: rel, size: lm.len(), etag: String::new() });
            }
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    for index in ["model.safetensors.index.json", "pytorch_model.bin.index.json"] {
        if !out.files.iter().any(|f| f.path == index) {
            continue;
        }
        match read_json(&dir.join(index)).as_ref().and_then(|v| v.get("weight_map")).and_then(Value::as_object) {
            None => out.problems.push(format!("{index}: unreadable or has no weight_map")),
            Some(map) => {
                let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
                for s in shards {
                    if !out.files.iter().any(|f| f.path == s) {
                        out.problems.push(format!("missing shard {s} (listed in {index})"));
                    }
                }
            }
        }
    }
    out
}

/// `a/b/../c` → `a/c` without touching the disk (blob paths behind relative symlinks).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn read_json(path: &Path) -> Option<Value> {
    let m = std::fs::metadata(path).ok()?;
    // Configs are small; a huge "config" is not one.
    if m.len() > 16 << 20 {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The `quantization` (MLX) or `quantization_config` entry of config.json.
pub fn quantization(config: &Value) -> Option<Quantization> {
    let q = config.get("quantization").or_else(|| config.get("quantization_config"))?.as_object()?;
    let num = |k: &str| q.get(k).and_then(Value::as_u64).map(|v| v as u32);
    let method = q.get("quant_method").and_then(Value::as_str);
    let mode = match method {
        Some(m) => m.to_string(),
        None => q.get("mode").and_then(Value::as_str).unwrap_or("affine").to_string(),
    };
    let bits = num("bits").or_else(|| num("w_bit"));
    if bits.is_none() && method.is_none() {
        return None;
    }
    Some(Quantization { bits, group_size: num("group_size").or_else(|| num("q_group_size")), mode })
}

fn config_dtype(config: &Value) -> Option<String> {
    config.get("torch_dtype").or_else(|| config.get("dtype")).and_then(Value::as_str).map(|s| match s {
        "float32" => "f32".to_string(),
        "float16" => "f16".to_string(),
        "bfloat16" => "bf16".to_string(),
        other => other.to_string(),
    })
}

/// One tensor of a safetensors header.
pub struct TensorInfo {
    pub dtype: String,
    pub numel: u64,
}

/// Read a safetensors header (8-byte length + JSON) and check the file is as long as it says.
fn read_safetensors_header(path: &Path) -> Result<Vec<(String, TensorInfo)>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut n8 = [0u8; 8];
    f.read_exact(&mut n8).map_err(|_| "shorter than a safetensors header".to_string())?;
    let n = u64::from_le_bytes(n8);
    if n > 100 << 20 || 8 + n > len {
        return Err(format!("header length {n} does not fit a {len}-byte file (truncated or not safetensors)"));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    summarize_safetensors_header(&buf, len)
}

/// Each tensor's dtype and element count from a header's JSON (`header`) of a `file_len`-byte
/// file; the file must hold every tensor's data. Untrusted input: sums and products saturate.
pub fn summarize_safetensors_header(header: &[u8], file_len: u64) -> Result<Vec<(String, TensorInfo)>, String> {
    let v: Value = serde_json::from_slice(header).map_err(|e| format!("header is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("header is not a JSON object")?;
    let mut out = Vec::new();
    let mut end_max = 0u64;
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("?").to_ascii_lowercase();
        let numel = t
            .get("shape")
            .and_then(Value::as_array)
            .map_or(1, |a| a.iter().filter_map(Value::as_u64).fold(1u64, u64::saturating_mul));
        if let Some(end) =
            t.get("data_offsets").and_then(Value::as_array).and_then(|a| a.get(1)).and_then(Value::as_u64)
        {
            end_max = end_max.max(end);
        }
        out.push((name.clone(), TensorInfo { dtype, numel }));
    }
    let needs = (8 + header.len() as u64).saturating_add(end_max);
    if needs > file_len {
        return Err(format!("truncated: the header needs {needs} bytes, the file has {file_len}"));
    }
    Ok(out)
}

/// Parameter count and dominant dtype over every safetensors file of a snapshot (the index's shards
/// when there is an index). MLX-quantized layers count `scales × group_size` parameters (their
/// packed weights, scales and biases are storage, not parameters).
fn safetensors_summary(
    dir: &Path,
    files: &[SnapshotFile],
    quant: Option<&Quantization>,
    config: Option<&Value>,
) -> (Option<u64>, Option<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut tensors: HashMap<String, TensorInfo> = HashMap::new();
    for f in files.iter().filter(|f| f.path.ends_with(".safetensors")) {
        match read_safetensors_header(&dir.join(&f.path)) {
            Ok(ts) => tensors.extend(ts),
            Err(e) => problems.push(format!("{}: {e}", f.path)),
        }
    }
    if tensors.is_empty() {
        return (None, None, problems);
    }
    let qobj = config.and_then(|c| c.get("quantization").or_else(|| c.get("quantization_config")));
    let group_for = |module: &str| -> Option<u64> {
        let per = qobj.and_then(|q| q.get(module)).and_then(|m| m.get("group_size")).and_then(Value::as_u64);
        per.or(quant.and_then(|q| q.group_size).map(u64::from))
    };
    let mut params = 0u64;
    let mut known = true;
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for (name, t) in &tensors {
        let module = name.rsplit_once('.').map_or(name.as_str(), |(m, _)| m);
        let quantized = tensors.contains_key(&format!("{module}.scales"))
            && tensors.get(&format!("{module}.weight")).is_some_and(|w| w.dtype == "u32");
        if quantized {
            if name.ends_with(".scales") {
                match group_for(module) {
                    Some(g) => params = params.saturating_add(t.numel.saturating_mul(g)),
                    None => known = false,
                }
            }
            continue;
        }
        params = params.saturating_add(t.numel);
        let n = by_dtype.entry(t.dtype.clone()).or_default();
        *n = n.saturating_add(t.numel);
    }
    let dtype = by_dtype.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d);
    (known.then_some(params), dtype, problems)
}

/// Embedding / reranker / other, from (in order) the architecture, sentence-transformers files,
/// the model card's pipeline tag, then the name.
fn detect_task(repo_id: &str, dir: &Path, config: Option<&Value>) -> ModelTask {
    let name = repo_id.to_ascii_lowercase();
    let arch = config
        .and_then(|c| c.get("architectures"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or("");
    let st_type = read_json(&dir.join("config_sentence_transformers.json"))
        .and_then(|v| v.get("model_type")?.as_str().map(str::to_string));
    if st_type.as_deref() == Some("CrossEncoder") || name.contains("rerank") || name.contains("cross-encoder") {
        return ModelTask::Reranker;
    }
    if arch.ends_with("ForSequenceClassification") {
        let labels = config.and_then(|c| c.get("id2label")).and_then(Value::as_object).map_or(1, |m| m.len());
        return if labels <= 1 || name.contains("ms-marco") { ModelTask::Reranker } else { ModelTask::Other };
    }
    let modules = std::fs::read_to_string(dir.join("modules.json")).unwrap_or_default();
    if modules.contains("Pooling") || st_type.as_deref() == Some("SentenceTransformer") {
        return ModelTask::Embedding;
    }
    match pipeline_tag(dir).as_deref() {
        Some("sentence-similarity") | Some("feature-extraction") => return ModelTask::Embedding,
        Some("text-ranking") => return ModelTask::Reranker,
        _ => {}
    }
    let embed_hints = ["embed", "bge-", "e5-", "gte-", "minilm", "mpnet", "nomic", "sentence-transformers/"];
    if embed_hints.iter().any(|h| name.contains(h)) {
        return ModelTask::Embedding;
    }
    ModelTask::Other
}

/// `pipeline_tag:` of the README's front matter (only its first 8 KiB are read).
fn pipeline_tag(dir: &Path) -> Option<String> {
    let mut f = std::fs::File::open(dir.join("README.md")).ok()?;
    let mut buf = vec![0u8; 8192];
    let n = f.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let front = text.strip_prefix("---")?;
    let front = &front[..front.find("\n---").unwrap_or(front.len())];
    front.lines().find_map(|l| l.strip_prefix("pipeline_tag:").map(|v| v.trim().trim_matches('"').to_string()))
}

fn newest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// `2026-11-26 01:25` (UTC) from unix seconds. Hand-written (Howard Hinnant's days-to-civil) to
/// avoid a date crate for one line of output.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rem / 3600, (rem % 3600) / 60)
}

/// `1.2 GB`-style sizes (decimal units, like the hub).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `22.7M`, `4.0B` parameter counts.
pub fn human_count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(format_utc(0), "1970-01-01 00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(90_868_376), "90.9 MB");
        assert_eq!(human_count(22_713_216), "22.7M");
        assert_eq!(human_count(4_021_774_336), "4.02B");
    }

    #[test]
    fn reads_quantization_entries() {
        let c: Value = serde_json::json!({"quantization": {"group_size": 64, "bits": 4}});
        assert_eq!(quantization(&c), Some(Quantization { bits: Some(4), group_size: Some(64), mode: "affine".into() }));
        let c: Value = serde_json::json!({"quantization_config": {"quant_method": "awq", "bits": 4}});
        assert_eq!(quantization(&c).map(|q| q.mode), Some("awq".into()));
        assert_eq!(quantization(&serde_json::json!({"hidden_size": 8})), None);
    }
}
