//! Cache inventory and `embedrank status` on caches built here in temp dirs (complete, MLX-quantized,
//! rerankers, and broken: missing shard, `.incomplete` blob, dangling symlink, missing tokenizer,
//! truncated weights) and on the real test model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use embedrank::source::inventory::{self, ModelTask, WeightFormat};
use embedrank::source::wanted::{self, State};
use embedrank::source::CacheRoots;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A safetensors file of zeros with these tensors (name, dtype, shape).
fn safetensors(tensors: &[(&str, &str, &[usize])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dtype, shape) in tensors {
        let size = match *dtype {
            "F32" | "U32" => 4,
            "BF16" | "F16" => 2,
            _ => 1,
        };
        let n = shape.iter().product::<usize>() * size;
        header.insert(name.to_string(), json!({ "dtype": dtype, "shape": shape, "data_offsets": [off, off + n] }));
        off += n;
    }
    let h = Value::Object(header).to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(vec![0u8; off]);
    out
}

/// Write a repo snapshot in the hub layout (blobs named by sha256, relative links, refs/<rev>).
fn write_repo(root: &Path, repo: &str, commit: &str, refs: &[&str], files: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = root.join(format!("models--{}", repo.replace('/', "--")));
    let snap = dir.join("snapshots").join(commit);
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    for (path, data) in files {
        let etag = sha256(data);
        std::fs::write(dir.join("blobs").join(&etag), data).unwrap();
        let link = snap.join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let target = format!("{}blobs/{etag}", "../".repeat(2 + path.matches('/').count()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    for r in refs {
        let p = dir.join("refs").join(r);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, commit).unwrap();
    }
    snap
}

fn j(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn bert_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("config.json", j(json!({"architectures": ["BertModel"], "model_type": "bert", "torch_dtype": "float32"}))),
        (
            "modules.json",
            j(json!([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                                  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])),
        ),
        ("1_Pooling/config.json", j(json!({"pooling_mode_mean_tokens": true}))),
        ("tokenizer.json", j(json!({"version": "1.0"}))),
        (
            "model.safetensors",
            safetensors(&[
                ("emb.weight", "F32", &[100, 8]),
                ("dense.weight", "F32", &[8, 8]),
                ("dense.bias", "F32", &[8]),
            ]),
        ),
    ]
}

fn scan(root: &Path) -> inventory::Inventory {
    inventory::scan(&CacheRoots::new(vec![root.to_path_buf()]))
}

#[test]
fn describes_a_complete_embedder() {
    let tmp = tempfile::tempdir().unwrap();
    write_repo(tmp.path(), "acme/tiny-embed", C1, &["main"], &bert_files());
    let inv = scan(tmp.path());
    assert_eq!(inv.repos.len(), 1);
    let r = &inv.repos[0];
    assert_eq!(r.repo_id, "acme/tiny-embed");
    assert!(r.complete, "{:?} {:?}", r.problems, r.revisions[0].problems);
    let v = &r.revisions[0];
    assert_eq!(v.refs, ["main"]);
    assert_eq!(v.task, ModelTask::Embedding);
    assert_eq!(v.architecture.as_deref(), Some("BertModel"));
    assert_eq!(v.parameters, Some(100 * 8 + 64 + 8));
    assert_eq!(v.format, WeightFormat::Safetensors);
    assert_eq!(v.dtype.as_deref(), Some("f32"));
    let blob_total: u64 = bert_files().iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(r.size_bytes, blob_total);
    assert!(r.last_modified.is_some());
}

#[test]
fn recognizes_mlx_quantized_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let files = vec![
        (
            "config.json",
            j(json!({"architectures": ["Qwen3Model"], "model_type": "qwen3",
            "quantization": {"group_size": 64, "bits": 4}, "quantization_config": {"group_size": 64, "bits": 4}})),
        ),
        ("tokenizer.json", j(json!({}))),
        // A 16×128 linear in 4 bits: packed 16×16 u32, scales/biases 16×2; plus a 128 norm.
        (
            "model.safetensors",
            safetensors(&[
                ("layers.0.mlp.down_proj.weight", "U32", &[16, 16]),
                ("layers.0.mlp.down_proj.scales", "BF16", &[16, 2]),
                ("layers.0.mlp.down_proj.biases", "BF16", &[16, 2]),
                ("norm.weight", "BF16", &[128]),
            ]),
        ),
    ];
    write_repo(tmp.path(), "mlx-community/Qwen3-Embedding-0.6B-4bit-DWQ", C1, &["main"], &files);
    let inv = scan(tmp.path());
    let v = &inv.repos[0].revisions[0];
    assert!(v.complete, "{:?}", v.problems);
    assert_eq!(v.format, WeightFormat::MlxAffine);
    let q = v.quantization.as_ref().expect("quantization");
    assert_eq!((q.bits, q.group_size, q.mode.as_str()), (Some(4), Some(64), "affine"));
    assert_eq!(v.parameters, Some(16 * 128 + 128));
    assert_eq!(v.dtype.as_deref(), Some("bf16"));
    assert_eq!(v.task, ModelTask::Embedding);
    assert_eq!(v.variant(), "mlx-affine 4-bit g64 bf16");
}

#[test]
fn tells_rerankers_and_formats_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = ("tokenizer.json", j(json!({})));
    write_repo(
        tmp.path(),
        "Qwen/Qwen3-Reranker-0.6B",
        C1,
        &["main"],
        &[
            ("config.json", j(json!({"architectures": ["Qwen3ForCausalLM"], "torch_dtype": "bfloat16"}))),
            tok.clone(),
            ("model.safetensors", safetensors(&[("lm_head.weight", "BF16", &[4, 4])])),
        ],
    );
    write_repo(
        tmp.path(),
        "acme/ce-model",
        C1,
        &["main"],
        &[
            (
                "config.json",
                j(
                    json!({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}, "torch_dtype": "float16"}),
                ),
            ),
            tok.clone(),
            ("pytorch_model.bin", vec![1, 2, 3]),
        ],
    );
    write_repo(tmp.path(), "acme/chat-gguf", C1, &["main"], &[("chat-q4_k_m.gguf", vec![7; 64])]);
    write_repo(
        tmp.path(),
        "acme/sentiment",
        C1,
        &["main"],
        &[
            (
                "config.json",
                j(json!({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "NEG", "1": "POS"}})),
            ),
            tok,
            ("model.safetensors", safetensors(&[("w", "F16", &[2, 2])])),
            ("onnx/model.onnx", vec![0; 10]),
        ],
    );
    let inv = scan(tmp.path());
    let get = |id: &str| inv.repos.iter().find(|r| r.repo_id == id).unwrap().revisions[0].clone();
    assert_eq!(get("Qwen/Qwen3-Reranker-0.6B").task, ModelTask::Reranker);
    let ce = get("acme/ce-model");
    assert_eq!((ce.task, ce.format, ce.dtype.as_deref()), (ModelTask::Reranker, WeightFormat::PytorchBin, Some("f16")));
    assert!(ce.complete, "{:?}", ce.problems);
    let g = get("acme/chat-gguf");
    assert_eq!((g.format, g.complete, g.task), (WeightFormat::Gguf, true, ModelTask::Other));
    let s = get("acme/sentiment");
    assert_eq!(s.task, ModelTask::Other, "a 2-label classifier is not a reranker");
    assert_eq!(s.formats, [WeightFormat::Safetensors, WeightFormat::Onnx]);
}

#[test]
fn reports_broken_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // 1. Sharded, one shard missing.
    let index = j(
        json!({"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}),
    );
    let mut files = bert_files();
    files.retain(|(p, _)| *p != "model.safetensors");
    files.push(("model.safetensors.index.json", index));
    files.push(("model-00001-of-00002.safetensors", safetensors(&[("a.weight", "F32", &[2])])));
    write_repo(root, "acme/missing-shard", C1, &["main"], &files);
    // 2. An interrupted download.
    let snap = write_repo(root, "acme/interrupted", C1, &["main"], &bert_files());
    let blobs = snap.parent().unwrap().parent().unwrap().join("blobs");
    std::fs::write(blobs.join(format!("{}.incomplete", "ab".repeat(32))), vec![0u8; 1000]).unwrap();
    // 3. A dangling symlink (its blob deleted).
    let snap = write_repo(root, "acme/dangling", C1, &["main"], &bert_files());
    let target = std::fs::read_link(snap.join("model.safetensors")).unwrap();
    std::fs::remove_file(snap.join(&target)).unwrap();
    // 4. No tokenizer.
    let mut files = bert_files();
    files.retain(|(p, _)| *p != "tokenizer.json");
    files.push(("vocab.txt", b"[PAD]\n".to_vec()));
    write_repo(root, "acme/no-tokenizer", C1, &["main"], &files);
    // 5. Truncated weights (copied as if complete).
    let mut files = bert_files();
    let w = files.iter_mut().find(|(p, _)| *p == "model.safetensors").unwrap();
    let n = w.1.len() - 100;
    w.1.truncate(n);
    write_repo(root, "acme/truncated", C1, &["main"], &files);
    // 6. A ref to a snapshot that is not there.
    write_repo(root, "acme/stale-ref", C1, &["main"], &bert_files());
    std::fs::write(root.join("models--acme--stale-ref/refs/v2"), C2).unwrap();

    let inv = scan(root);
    let problems = |id: &str| {
        let r = inv.repos.iter().find(|r| r.repo_id == id).unwrap();
        assert!(!r.complete, "{id} must not be complete");
        let mut p = r.problems.clone();
        for v in &r.revisions {
            p.extend(v.problems.clone());
        }
        p.join(" | ")
    };
    assert!(problems("acme/missing-shard").contains("missing shard model-00002-of-00002.safetensors"));
    assert!(problems("acme/interrupted").contains("interrupted download"));
    assert!(problems("acme/dangling").contains("dangling symlink model.safetensors"));
    assert!(problems("acme/no-tokenizer").contains("no tokenizer.json (only vocab.txt)"));
    assert!(problems("acme/truncated").contains("truncated"));
    assert!(problems("acme/stale-ref").contains("ref `v2`"));
    assert_eq!(inv.repos.iter().find(|r| r.repo_id == "acme/interrupted").unwrap().incomplete_bytes, 1000);
}

#[test]
fn shared_blobs_are_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    write_repo(tmp.path(), "acme/tiny-embed", C1, &["main"], &bert_files());
    let mut files = bert_files();
    files[0].1 = j(json!({"architectures": ["BertModel"], "model_type": "bert", "note": "v2"}));
    write_repo(tmp.path(), "acme/tiny-embed", C2, &["refs/pr/1"], &files);
    let inv = scan(tmp.path());
    let r = &inv.repos[0];
    assert_eq!(r.revisions.len(), 2);
    assert_eq!(r.refs.get("refs/pr/1").map(String::as_str), Some(C2));
    let unique: u64 = bert_files().iter().map(|(_, d)| d.len() as u64).sum::<u64>() + files[0].1.len() as u64;
    assert_eq!(r.size_bytes, unique, "the weights blob is shared by both snapshots");
    assert!(r.revisions.iter().map(|v| v.size_bytes).sum::<u64>() > r.size_bytes);
    assert_eq!(r.revision("refs/pr/1").unwrap().commit, C2);
    assert_eq!(r.revision("1111111").unwrap().commit, C1);
}

#[test]
fn wanted_entries_available_missing_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let ext = tempfile::tempdir().unwrap();
    write_repo(tmp.path(), "acme/tiny-embed", C1, &["main"], &bert_files());
    let mut files = bert_files();
    files.retain(|(p, _)| *p != "tokenizer.json");
    write_repo(ext.path(), "acme/broken", C1, &["main"], &files);
    let list = wanted::parse(
        "[[model]]\nrepo = \"acme/tiny-embed\"\npriority = \"high\"\nrole = \"embedding\"\n\
         [[model]]\nrepo = \"acme/broken\"\n[[model]]\nrepo = \"acme/absent\"\npriority = \"low\"\n\
         [[model]]\nrepo = \"acme/tiny-embed@v9\"\n",
        Path::new("w.toml"),
    )
    .unwrap();
    let inv = inventory::scan(&CacheRoots::new(vec![tmp.path().to_path_buf(), ext.path().to_path_buf()]));
    let st = wanted::evaluate(&list, &inv, Some(tmp.path()));
    assert_eq!(st[0].state, State::Available);
    assert_eq!(st[0].commit.as_deref(), Some(C1));
    assert_eq!(st[0].variant.as_deref(), Some("safetensors f32"));
    assert_eq!(st[0].fix, None);
    assert_eq!(st[1].state, State::Broken);
    assert_eq!(
        st[1].fix.as_deref(),
        Some(format!("embedrank pull acme/broken --cache-dir {}", ext.path().display()).as_str())
    );
    assert!(st[1].problems.iter().any(|p| p.contains("tokenizer")));
    assert_eq!(st[2].state, State::Missing);
    assert_eq!(st[2].fix.as_deref(), Some("embedrank pull acme/absent"));
    assert_eq!(st[3].state, State::Broken, "the revision asked for is not cached");
}

fn bin(hub: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.env("HF_HUB_CACHE", hub).env_remove("EMBEDRANK_CACHE_DIRS").env_remove("HF_HOME").env("NO_COLOR", "1");
    c
}

#[test]
fn cli_status_on_the_test_model() {
    let hub = common::test_hub();
    let tmp = tempfile::tempdir().unwrap();
    let ok = tmp.path().join("ok.toml");
    std::fs::write(
        &ok,
        format!("[[model]]\nrepo = \"{}\"\npriority = \"high\"\nnote = \"test model\"\n", common::MINILM),
    )
    .unwrap();
    let out = bin(&hub).args(["status", "--wanted"]).arg(&ok).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(common::MINILM) && text.contains("BertModel") && text.contains("22.7M"), "{text}");
    assert!(!text.contains("\x1b["), "no colour off a terminal");

    let out = bin(&hub).args(["status", "--json", "--wanted"]).arg(&ok).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["schema_version"], 1);
    let repo = v["repos"].as_array().unwrap().iter().find(|r| r["repo_id"] == common::MINILM).unwrap();
    let rev = &repo["revisions"][0];
    assert_eq!(rev["parameters"], 22_713_728, "the safetensors header's count (same as numpy's sum)");
    assert_eq!(rev["task"], "embedding");
    assert_eq!(rev["format"], "safetensors");
    assert_eq!(rev["dtype"], "f32");
    assert_eq!(rev["complete"], true);
    assert_eq!(v["wanted"]["entries"][0]["state"], "available");
    assert_eq!(v["summary"]["wanted_available"], 1);

    // Missing entry → exit 1, with the fix; an extra root from EMBEDRANK_CACHE_DIRS is scanned.
    let ext = tempfile::tempdir().unwrap();
    write_repo(ext.path(), "acme/tiny-embed", C1, &["main"], &bert_files());
    let missing = tmp.path().join("missing.toml");
    std::fs::write(
        &missing,
        format!(
            "[[model]]\nrepo = \"{}\"\n[[model]]\nrepo = \"acme/tiny-embed\"\n[[model]]\nrepo = \"acme/absent\"\n",
            common::MINILM
        ),
    )
    .unwrap();
    let out = bin(&hub)
        .args(["status", "--markdown", "--wanted"])
        .arg(&missing)
        .env("EMBEDRANK_CACHE_DIRS", format!("{}:/nonexistent/hub", ext.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("| ✅ | `acme/tiny-embed`"), "{md}");
    assert!(md.contains("| ❌ | `acme/absent`") && md.contains("`embedrank pull acme/absent`"), "{md}");
    assert!(md.contains("/nonexistent/hub` | not present"), "{md}");

    // Usage errors → exit 2.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[[model]]\npriority = \"high\"\n").unwrap();
    let out = bin(&hub).args(["status", "--wanted"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("repo"), "names the missing key");
    let out = bin(&hub).args(["status", "--wanted"]).arg(tmp.path().join("nope.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin(&hub).args(["status", "--json", "--markdown"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
