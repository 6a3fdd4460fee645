//! Checkpoints saved by today's libraries — transformers 5.25 `save_pretrained`, sentence-transformers
//! 6.3 `save()`, the way a user's fine-tune is saved — against those libraries' own outputs
//! (tests/fixtures/saved, written by scripts/reference/saved_golden.py; its README says how each case
//! was made). Each case folder holds the files the libraries wrote; the weights are the tiny synth
//! recipe's or the hub MiniLM's, which the saved copies equal tensor for tensor (tensors.json).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use embedrank::engine::{EmbedOptions, Engine, EngineOptions, RerankOptions};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::rope::RopeScaling;
use embedrank::spec::{Arch, ModelSpec, SpecOverrides, Task};
use serde_json::Value;

fn saved(case: &str) -> PathBuf {
    repo_root().join("tests/fixtures/saved").join(case)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if skip.iter().any(|s| name.to_str() == Some(s)) {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(&name), &[]);
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// Safetensors header: name → shape.
fn header_shapes(p: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    let bytes = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()))
        .collect()
}

/// The case's saved files plus its weights (and, for Qwen3, the source tokenizer patched as the
/// saved one was; the 11 MB file is not committed).
fn assemble(case: &str) -> tempfile::TempDir {
    let src = saved(case);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_tree(&src, dir, &["manifest.json", "tensors.json", "reference.json", "sliding_check.json"]);
    let weights = if case.starts_with("qwen3") {
        let tiny = tiny_dir().join("tiny-qwen3-embedding");
        let mut tok: Value = read_json(&tiny.join("tokenizer.json"));
        let manifest = read_json(&src.join("manifest.json"));
        if let Some(patch) = manifest["tokenizer"]["tokenizer.json"]["patch_from_source"].as_object() {
            for (k, v) in patch {
                tok[k] = v.clone();
            }
        }
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tok).unwrap()).unwrap();
        tiny.join("model.safetensors")
    } else if case == "bert-minilm-st6" {
        source::resolve(MINILM, &offline_opts()).unwrap().dir.join("model.safetensors")
    } else {
        tiny_dir().join("tiny-bert-cross-encoder/model.safetensors")
    };
    std::fs::copy(&weights, dir.join("model.safetensors")).unwrap();
    // Every tensor the library saved is here under the same name and shape.
    let have = header_shapes(&dir.join("model.safetensors"));
    let want = read_json(&src.join("tensors.json"));
    for (name, t) in want["tensors"].as_object().unwrap() {
        let shape: Vec<u64> = t["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(have.get(name), Some(&shape), "{case}: tensor {name}");
        assert_eq!(t["identical"], true, "{case}: {name} differs from its source");
    }
    tmp
}

fn load(dir: &Path) -> embedrank::Result<Engine> {
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default())?;
    Engine::load(ModelSpec::load(&r, &SpecOverrides::default())?, &EngineOptions::default())
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

/// Embed the case's texts (queries with the query prompt) and compare ids and vectors; `max_tokens`
/// limits the comparison to texts the reference ran at no more than that many tokens.
fn check_embedder(case: &str, max_tokens: Option<usize>) -> Engine {
    let tmp = assemble(case);
    let fx = read_json(&saved(case).join("reference.json"));
    let e = load(tmp.path()).unwrap_or_else(|err| panic!("{case}: {err}"));
    assert_eq!(e.spec.task, Task::Embed, "{case}");
    let texts = strings(&fx["texts"]);
    let nq = fx["n_queries"].as_u64().unwrap() as usize;
    let want_ids = ids(&fx["token_ids"]);
    let want = f32_rows(&fx["embeddings"]);
    let prompt = |key: &str| fx["prompt"][key].as_str().unwrap_or("").to_string();
    assert_eq!(e.spec.prompt_for(Some("query"), None, None).unwrap(), prompt("query"), "{case}: query prompt");
    let q = EmbedOptions { prompt: prompt("query"), ..Default::default() };
    let d = EmbedOptions { prompt: prompt("document"), ..Default::default() };
    // A query prompt longer than a short max length is refused (422), never cut into: then only
    // the documents compare.
    let first = match e.tokenize_texts(&texts[..nq], &q) {
        Err(embedrank::Error::PromptTooLong { .. }) if max_tokens.is_some() => nq,
        r => {
            r.unwrap();
            0
        }
    };
    let ids_of = |t: Vec<embedrank::engine::Tokens>| t.into_iter().map(|t| t.ids).collect::<Vec<_>>();
    let (mut got_ids, mut got) = if first == 0 {
        (ids_of(e.tokenize_texts(&texts[..nq], &q).unwrap()), e.embed(&texts[..nq], &q).unwrap().vectors)
    } else {
        (vec![Vec::new(); nq], vec![Vec::new(); nq])
    };
    got_ids.extend(ids_of(e.tokenize_texts(&texts[nq..], &d).unwrap()));
    got.extend(e.embed(&texts[nq..], &d).unwrap().vectors);
    let (mut min, mut n) = (f64::MAX, 0);
    for i in first..texts.len() {
        if max_tokens.is_some_and(|m| want_ids[i].len() > m) {
            continue;
        }
        assert_eq!(got_ids[i], want_ids[i], "{case}: token ids of text {i}");
        min = min.min(cosine(&got[i], &want[i]));
        n += 1;
    }
    eprintln!("{case}: {n} texts, min cosine {min:.7} to transformers 5.25 / sentence-transformers 6.3");
    assert!(n >= 3, "{case}: only {n} texts compared");
    assert!(min >= 0.9999, "{case}: min cosine {min}");
    e
}

fn rope(e: &Engine) -> embedrank::spec::rope::RopeSpec {
    match &e.spec.arch {
        Arch::Qwen3(c) => c.rope.clone(),
        _ => panic!("not qwen3"),
    }
}

#[test]
fn qwen3_default_rope_parameters_theta_is_read() {
    let e = check_embedder("qwen3-embed-default", None);
    // transformers 5 writes no top-level rope_theta; 10,000 here would be the silent bug.
    assert_eq!(rope(&e).theta, 1e6);
    assert_eq!(rope(&e).scaling, RopeScaling::Default);
    // The max length moved to tokenizer_config.json's model_max_length in sentence-transformers 6.
    assert_eq!(e.spec.max_length, 48);
}

#[test]
fn qwen3_linear_rope() {
    let e = check_embedder("qwen3-embed-linear", None);
    assert_eq!(rope(&e).scaling, RopeScaling::Linear { factor: 2.0 });
}

#[test]
fn qwen3_dynamic_rope() {
    let e = check_embedder("qwen3-embed-dynamic", None);
    assert_eq!(rope(&e).scaling, RopeScaling::Dynamic { factor: 2.0 });
    // Past max_position_embeddings transformers would rescale; embedrank stops there (so does
    // sentence-transformers' default max length), so only texts within 16 tokens compare.
    let e = check_embedder("qwen3-embed-dynamic-long", Some(16));
    assert_eq!(e.spec.max_length, 16);
}

#[test]
fn qwen3_yarn_rope() {
    let e = check_embedder("qwen3-embed-yarn", None);
    assert!(matches!(rope(&e).scaling, RopeScaling::Yarn { factor, .. } if factor == 4.0));
    assert!((rope(&e).attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
}

#[test]
fn qwen3_llama3_rope() {
    check_embedder("qwen3-embed-llama3", None);
    // original_max 64: all three frequency bands occur.
    check_embedder("qwen3-embed-llama3-wide", None);
}

#[test]
fn unimplemented_attention_is_refused_by_name() {
    for (case, want) in [("qwen3-embed-longrope", "long_factor"), ("qwen3-embed-sliding", "sliding_window")] {
        let tmp = assemble(case);
        let err = load(tmp.path()).err().unwrap_or_else(|| panic!("{case} loaded")).to_string();
        assert!(err.contains(want), "{case}: {err}");
        eprintln!("{case}: {err}");
    }
}

#[test]
fn minilm_saved_by_sentence_transformers_6() {
    let e = check_embedder("bert-minilm-st6", None);
    assert!(e.spec.normalize);
    assert_eq!(e.spec.max_length, 256);
}

#[test]
fn bert_cross_encoder_saved_by_sentence_transformers_6() {
    let case = "bert-cross-encoder";
    let tmp = assemble(case);
    let fx = read_json(&saved(case).join("reference.json"));
    let e = load(tmp.path()).unwrap();
    assert_eq!(e.spec.task, Task::Rerank);
    let query = fx["query"].as_str().unwrap();
    let docs = strings(&fx["documents"]);
    let want_logits: Vec<f64> = fx["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let want_scores: Vec<f64> = fx["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    for (raw, want) in [(true, &want_logits), (false, &want_scores)] {
        let got = e.rerank(query, &docs, &RerankOptions { raw_scores: raw, ..Default::default() }).unwrap();
        let err = got.iter().map(|r| (r.relevance_score as f64 - want[r.index]).abs()).fold(0.0, f64::max);
        eprintln!("{case}: raw={raw}: max abs error {err:.2e}");
        assert!(err <= 1e-4, "{case} raw={raw}: {err}");
    }
}

#[test]
fn generic_tensor_path_passes_the_same_tests() {
    rerun_on_generic_tensor_path("generic_tensor_path_passes_the_same_tests");
}
