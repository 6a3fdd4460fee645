//! Tiny random Qwen3 embedder / rerankers and a BERT cross-encoder against transformers and
//! sentence-transformers (tests/fixtures/tiny_golden.json from scripts/reference/tiny_golden.py).
//! The models are regenerated here from their committed recipes (embedrank::synth::tiny, seed 42).

mod common;

use common::*;
use embedrank::engine::{EmbedOptions, Engine, EngineOptions, RerankOptions};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::{Head, ModelSpec, SpecOverrides, Task};
use embedrank::synth::tiny;

fn load(name: &str) -> Engine {
    let dir = tiny_dir().join(name);
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    Engine::load(ModelSpec::load(&r, &SpecOverrides::default()).unwrap(), &EngineOptions::default()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
        .collect()
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn check_embedder(key: &str, name: &str) {
    let fx = fixture("tiny_golden.json");
    let case = &fx[key];
    let e = load(name);
    assert_eq!(e.spec.task, Task::Embed);
    let texts = strings(&case["texts"]);
    let nq = case["n_queries"].as_u64().unwrap() as usize;
    let query_prompt = e.spec.prompt_for(Some("query"), None, None).unwrap();
    let doc_prompt = e.spec.prompt_for(Some("document"), None, None).unwrap();
    assert_eq!(doc_prompt, "");
    // Same task via --instruction gives the same prompt.
    assert_eq!(
        e.spec
            .prompt_for(None, None, Some("Given a web search query, retrieve relevant passages that answer the query"))
            .unwrap(),
        query_prompt
    );
    let q = EmbedOptions { prompt: query_prompt, batch_size: Some(64), ..Default::default() };
    let d = EmbedOptions { prompt: doc_prompt, batch_size: Some(64), ..Default::default() };

    // Token ids (incl. the appended <|endoftext|>, never doubled) equal the reference's.
    let want_ids = ids(&case["token_ids"]);
    let mut got_ids = e.tokenize_texts(&texts[..nq], &q).unwrap();
    got_ids.extend(e.tokenize_texts(&texts[nq..], &d).unwrap());
    for (i, (g, w)) in got_ids.iter().zip(&want_ids).enumerate() {
        assert_eq!(&g.ids, w, "token ids of text {i}");
    }

    let want = f32_rows(&case["embeddings"]);
    let want32 = f32_rows(&case["embeddings_dim32"]);
    let mut got = e.embed(&texts[..nq], &q).unwrap().vectors;
    got.extend(e.embed(&texts[nq..], &d).unwrap().vectors);
    let mut got32 = e.embed(&texts[..nq], &EmbedOptions { dimensions: Some(32), ..q.clone() }).unwrap().vectors;
    got32.extend(e.embed(&texts[nq..], &EmbedOptions { dimensions: Some(32), ..d.clone() }).unwrap().vectors);
    let mut min = f64::MAX;
    let mut min32 = f64::MAX;
    for i in 0..texts.len() {
        min = min.min(cosine(&got[i], &want[i]));
        min32 = min32.min(cosine(&got32[i], &want32[i]));
        assert_eq!(got32[i].len(), 32);
    }
    eprintln!("{name}: {} texts, min cosine {min:.7}, dim-32 min cosine {min32:.7}", texts.len());
    assert!(min >= 0.9999, "min cosine {min}");
    assert!(min32 >= 0.9999, "dim-32 min cosine {min32}");
    // Out-of-range Matryoshka dimensions are a clear error.
    assert!(e.embed(&texts[..1], &EmbedOptions { dimensions: Some(16), ..d.clone() }).is_err());
    assert!(e.embed(&texts[..1], &EmbedOptions { dimensions: Some(65), ..d }).is_err());
}

#[test]
fn qwen3_embedder_appends_eos_itself() {
    check_embedder("embed", tiny::QWEN3_EMBED);
}

#[test]
fn qwen3_embedder_with_eos_template_never_double_appends() {
    check_embedder("embed_eos_template", tiny::QWEN3_EMBED_EOS);
}

fn check_scores(got: &[embedrank::engine::RerankResult], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    let mut max_err = 0f32;
    for r in got {
        max_err = max_err.max((r.relevance_score - want[r.index]).abs());
    }
    // Same order as the reference (ties aside).
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
    let got_order: Vec<usize> = got.iter().map(|r| r.index).collect();
    eprintln!("{what}: max abs error {max_err:.2e}");
    assert!(max_err <= tol, "{what}: max error {max_err}");
    assert_eq!(got_order, order, "{what}: order");
}

#[test]
fn qwen3_reranker_matches_transformers() {
    let fx = fixture("tiny_golden.json");
    let query = fx["rerank_query"].as_str().unwrap();
    let docs = strings(&fx["rerank_docs"]);
    let max = fx["rerank_max_length"].as_u64().unwrap() as usize;
    let dir = tiny_dir().join(tiny::QWEN3_RERANKER);
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    let spec = ModelSpec::load(&r, &SpecOverrides { max_length: Some(max), ..Default::default() }).unwrap();
    assert_eq!(spec.task, Task::Rerank, "a Qwen3 CausalLM named *reranker* is a reranker");
    assert!(matches!(spec.head, Head::Qwen3YesNo { yes_id: 9693, no_id: 2152 }));
    let e = Engine::load(spec, &EngineOptions::default()).unwrap();
    for key in ["default", "custom"] {
        let case = &fx["reranker"][key];
        let instr = case["instruction"].as_str().unwrap().to_string();
        let opts = RerankOptions { instruction: (key == "custom").then_some(instr), ..Default::default() };
        // Prompt token ids equal the official recipe's (template kept, document truncated).
        let toks = embedrank::engine::rerank::tokenize_pairs(&e, query, &docs, &opts).unwrap();
        for (i, (t, w)) in toks.iter().zip(ids(&case["token_ids"])).enumerate() {
            assert_eq!(t.ids, w, "{key}: token ids of pair {i}");
            assert!(t.ids.len() <= max);
        }
        let got = e.rerank(query, &docs, &opts).unwrap();
        check_scores(&got, &f32s(&case["scores"]), 1e-4, &format!("qwen3 reranker ({key})"));
        let raw = e.rerank(query, &docs, &RerankOptions { raw_scores: true, ..opts }).unwrap();
        check_scores(&raw, &f32s(&case["raw"]), 1e-3, &format!("qwen3 reranker raw ({key})"));
    }
    // Top-n and returned documents.
    let top = e
        .rerank(query, &docs, &RerankOptions { top_n: Some(2), return_documents: true, ..Default::default() })
        .unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(top[0].document.as_deref(), Some(docs[top[0].index].as_str()));
    // An embedder used as a reranker and vice versa is a clear error.
    assert!(e.embed(&docs, &EmbedOptions::default()).err().expect("error").to_string().contains("is a reranker"));
}

#[test]
fn qwen3_seq_cls_matches_transformers() {
    let fx = fixture("tiny_golden.json");
    let query = fx["rerank_query"].as_str().unwrap();
    let docs = strings(&fx["rerank_docs"]);
    let max = fx["rerank_max_length"].as_u64().unwrap() as usize;
    let dir = tiny_dir().join(tiny::QWEN3_SEQ_CLS);
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    let spec = ModelSpec::load(&r, &SpecOverrides { max_length: Some(max), ..Default::default() }).unwrap();
    assert_eq!(spec.head, Head::Qwen3SeqCls);
    let e = Engine::load(spec, &EngineOptions::default()).unwrap();
    let got = e.rerank(query, &docs, &RerankOptions::default()).unwrap();
    check_scores(&got, &f32s(&fx["seq_cls"]["scores"]), 1e-4, "qwen3 seq-cls");
}

#[test]
fn bert_cross_encoder_matches_sentence_transformers() {
    let fx = fixture("tiny_golden.json");
    let query = fx["rerank_query"].as_str().unwrap();
    let docs = strings(&fx["rerank_docs"]);
    let case = &fx["cross_encoder"];
    let dir = tiny_dir().join(tiny::BERT_CROSS_ENCODER);
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    let max = case["max_length"].as_u64().unwrap() as usize;
    let spec = ModelSpec::load(&r, &SpecOverrides { max_length: Some(max), ..Default::default() }).unwrap();
    assert_eq!(spec.task, Task::Rerank);
    let e = Engine::load(spec, &EngineOptions::default()).unwrap();
    let got = e.rerank(query, &docs, &RerankOptions::default()).unwrap();
    check_scores(&got, &f32s(&case["scores"]), 1e-4, "bert cross-encoder (sigmoid)");
    let raw = e.rerank(query, &docs, &RerankOptions { raw_scores: true, ..Default::default() }).unwrap();
    check_scores(&raw, &f32s(&case["raw"]), 1e-4, "bert cross-encoder (raw)");
    // An instruction has no place in a cross-encoder's input: an error, never silently ignored.
    let err = e
        .rerank(query, &docs, &RerankOptions { instruction: Some("Judge relevance".into()), ..Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains("takes no instruction"), "{err}");
}

#[test]
fn task_override_and_wrong_task_errors() {
    let e = engine(MINILM);
    let err = e.rerank("q", &["d".to_string()], &RerankOptions::default()).unwrap_err();
    assert!(err.to_string().contains("is an embedding model, not a reranker"), "{err}");
    let dir = tiny_dir().join(tiny::QWEN3_RERANKER);
    let r = source::resolve(dir.to_str().unwrap(), &ResolveOptions::default()).unwrap();
    let spec = ModelSpec::load(&r, &SpecOverrides { task: Some(Task::Embed), ..Default::default() }).unwrap();
    assert_eq!(spec.task, Task::Embed);
}

/// Every test above again on the generic tensor path (the one CUDA and Metal take), which the CPU
/// never takes by itself on x86.
#[test]
fn generic_tensor_path_passes_the_same_tests() {
    rerun_on_generic_tensor_path("generic_tensor_path_passes_the_same_tests");
}
