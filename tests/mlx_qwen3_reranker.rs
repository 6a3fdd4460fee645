//! A tiny Qwen3 reranker quantized by `mlx_lm.convert -q` (4-bit, group 64) against mlx-lm's own
//! logits-based score (fixture from scripts/reference/mlx_qwen3_reranker.py). `embedrank convert`
//! rebuilds the very same checkpoint (checked tensor by tensor), then embedrank scores it.

mod common;

use std::path::Path;

use common::{fixture, offline_opts, strings, tiny_dir};
use embedrank::convert::{convert, ConvertOptions, Destination};
use embedrank::engine::{Engine, EngineOptions, RerankOptions};
use embedrank::source;
use embedrank::spec::{ModelSpec, SpecOverrides};
use embedrank::weights::qkernel::{force_int_activations, int_kernel_available};
use sha2::{Digest, Sha256};

fn load_spec(dir: &Path) -> ModelSpec {
    let r = source::resolve(dir.to_str().unwrap(), &offline_opts()).unwrap();
    ModelSpec::load(&r, &SpecOverrides::default()).unwrap()
}

#[test]
fn quantized_tiny_reranker_scores_match_mlx_lm() {
    let fx = fixture("mlx/qwen3_reranker_mlx.json");
    let src = load_spec(&tiny_dir().join("tiny-Qwen3-Reranker"));
    let tmp = tempfile::tempdir().unwrap();
    // Named like the source so the name-based reranker detection applies to the copy too.
    let out = tmp.path().join("tiny-Qwen3-Reranker-4bit");
    let opts = ConvertOptions {
        bits: 4,
        group_size: 64,
        embedding_bits: None,
        dtype: None,
        force: false,
        ..Default::default()
    };
    convert(&src, &opts, &Destination::Folder(out.clone()), &|_, _| {}).unwrap();

    // The checkpoint is the one mlx_lm.convert wrote: every tensor byte-identical.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let theirs = fx["digests"].as_object().unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names.len(), theirs.len(), "tensor count differs from mlx_lm.convert");
    for n in names {
        let hex: String = Sha256::digest(st.tensor(n).unwrap().data()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Some(hex.as_str()), theirs.get(n).and_then(|v| v.as_str()), "tensor `{n}` differs from mlx_lm");
    }

    let engine = Engine::load(load_spec(&out), &EngineOptions::default()).unwrap();
    let docs = strings(&fx["documents"]);
    // f32 activations (every CPU) agree with mlx-lm to rounding; integer activations (AVX-512 VNNI,
    // the default there) round the activations to 8 bits per group of 32, hence a wider bound.
    let variants: &[(bool, f64)] =
        if int_kernel_available() { &[(false, 1e-3), (true, 1e-2)] } else { &[(false, 1e-3)] };
    for &(int, tol) in variants {
        force_int_activations(Some(int));
        let mut worst = 0f64;
        for (qi, q) in strings(&fx["queries"]).iter().enumerate() {
            let want: Vec<f64> =
                fx["scores"][qi].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()).collect();
            let got = engine.rerank(q, &docs, &RerankOptions::default()).unwrap();
            let mut by_index = vec![0f64; docs.len()];
            for r in &got {
                by_index[r.index] = r.relevance_score as f64;
            }
            for (i, (g, w)) in by_index.iter().zip(&want).enumerate() {
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() <= tol, "int {int} query {qi} doc {i}: embedrank {g}, mlx-lm {w}");
            }
            // Same order (results come best first).
            let mut order: Vec<usize> = (0..want.len()).collect();
            order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
            let ours: Vec<usize> = got.iter().map(|r| r.index).collect();
            assert_eq!(ours, order, "int {int} query {qi}: ranking differs from mlx-lm");
        }
        eprintln!("tiny 4-bit Qwen3 reranker, integer activations {int}: max |score diff| vs mlx-lm {worst:.2e}");
    }
    force_int_activations(None);
}
