//! all-MiniLM-L6-v2 against sentence-transformers (tests/fixtures/minilm_golden.json, made by
//! scripts/reference/minilm_golden.py): cosine ≥ 0.9999 for every text, in one padded batch and
//! one at a time.

mod common;

use common::*;
use embedrank::engine::{EmbedOptions, Truncation};

const MIN_COSINE: f64 = 0.9999;

#[test]
fn minilm_matches_sentence_transformers() {
    let fx = fixture("minilm_golden.json");
    let texts = strings(&fx["texts"]);
    let want = f32_rows(&fx["embeddings"]);
    let counts: Vec<usize> =
        fx["token_counts"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    assert!(texts.len() >= 64);
    let e = engine(MINILM);
    assert_eq!(e.spec.max_length, 256);

    // Token counts after truncation agree with the reference tokenizer.
    let toks = e.tokenize_texts(&texts, &EmbedOptions::default()).unwrap();
    for (i, t) in toks.iter().enumerate() {
        assert_eq!(
            t.len(),
            counts[i],
            "token count of text {i} ({:?})",
            &texts[i].chars().take(40).collect::<String>()
        );
    }
    assert!(counts.contains(&256), "a golden text must be truncated");

    let batched = e.embed(&texts, &EmbedOptions { batch_size: Some(texts.len()), ..Default::default() }).unwrap();
    let mut min_b = f64::MAX;
    let mut min_s = f64::MAX;
    for (i, text) in texts.iter().enumerate() {
        let c = cosine(&batched.vectors[i], &want[i]);
        min_b = min_b.min(c);
        assert!(c >= MIN_COSINE, "batched text {i} cosine {c}");
        let single = e.embed(std::slice::from_ref(text), &EmbedOptions::default()).unwrap();
        let c = cosine(&single.vectors[0], &want[i]);
        min_s = min_s.min(c);
        assert!(c >= MIN_COSINE, "single text {i} cosine {c}");
        let norm: f32 = batched.vectors[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    eprintln!("minilm golden: {} texts, min cosine batched {min_b:.7}, single {min_s:.7}", texts.len());
}

#[test]
fn minilm_matryoshka_and_unnormalized() {
    let e = engine(MINILM);
    let texts = vec!["hello world".to_string()];
    let full = e.embed(&texts, &EmbedOptions { normalize: Some(false), ..Default::default() }).unwrap();
    let norm: f32 = full.vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "raw mean pooling is not unit norm");
    let cut = e.embed(&texts, &EmbedOptions { dimensions: Some(64), ..Default::default() }).unwrap();
    assert_eq!(cut.vectors[0].len(), 64);
    let n: f32 = cut.vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-5);
    let mut expect = full.vectors[0][..64].to_vec();
    embedrank::engine::pool::l2_normalize(&mut expect);
    assert!(cosine(&expect, &cut.vectors[0]) > 0.999999);
    assert!(e.embed(&texts, &EmbedOptions { dimensions: Some(16), ..Default::default() }).is_err());
    assert!(e.embed(&texts, &EmbedOptions { dimensions: Some(385), ..Default::default() }).is_err());
}

#[test]
fn no_truncate_rejects_long_input() {
    let e = engine(MINILM);
    let long = vec!["word ".repeat(400)];
    let err =
        e.embed(&long, &EmbedOptions { truncation: Truncation::Refuse, ..Default::default() }).err().expect("error");
    assert!(err.to_string().contains("more than the model's maximum of 256"), "{err}");
}

/// `--dtype int8`: linear layers quantized at load to 8 bits (group 32); on AVX-512 VNNI CPUs the
/// activations too (per group of 32, attention q/k/v excepted) with integer dot products. The bar is
/// the one the speed issue sets for a lower-precision CPU path: cosine ≥ 0.999 to the float model
/// (here: to sentence-transformers), batched and single.
#[test]
fn minilm_int8_stays_within_0_999_of_sentence_transformers() {
    use embedrank::engine::{DtypeChoice, Engine, EngineOptions};
    let fx = fixture("minilm_golden.json");
    let texts = strings(&fx["texts"]);
    let want = f32_rows(&fx["embeddings"]);
    let mut opts = EngineOptions::default();
    DtypeChoice::parse("int8").unwrap().apply(&mut opts);
    let e = Engine::load(common::spec(MINILM), &opts).unwrap();
    let batched = e.embed(&texts, &EmbedOptions { batch_size: Some(texts.len()), ..Default::default() }).unwrap();
    let (mut min, mut sum) = (f64::MAX, 0.0);
    for (i, text) in texts.iter().enumerate() {
        let c = cosine(&batched.vectors[i], &want[i]);
        assert!(c >= 0.999, "int8 batched text {i} cosine {c}");
        let single = e.embed(std::slice::from_ref(text), &EmbedOptions::default()).unwrap();
        let s = cosine(&single.vectors[0], &want[i]);
        assert!(s >= 0.999, "int8 single text {i} cosine {s}");
        min = min.min(c).min(s);
        sum += c;
    }
    eprintln!(
        "minilm int8: {} texts, min cosine {min:.6}, mean (batched) {:.6}",
        texts.len(),
        sum / texts.len() as f64
    );
    assert!(DtypeChoice::parse("int4").is_err());
}

/// Every test above again on the generic tensor path (the one CUDA and Metal take), which the CPU
/// never takes by itself on x86.
#[test]
fn generic_tensor_path_passes_the_same_tests() {
    rerun_on_generic_tensor_path("generic_tensor_path_passes_the_same_tests");
}
