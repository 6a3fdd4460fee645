//! The MLX-made quantized all-MiniLM-L6-v2 on every quantized-kernel path and several batch sizes
//! against MLX's own embeddings (fixture from scripts/reference/mlx_minilm.py): cosine ≥ 0.999.
//! Batch 1 runs the fused strategy (few token rows), the whole set as one batch the tiled GEMM one,
//! so both strategies of each path are covered on a real model (the one- and two-row `gemv` kernel
//! is checked against the scalar reference in src/weights/qkernel/tests.rs). On CPUs with AVX-512
//! VNNI the `avx512` path runs twice: with integer activations (the default there) and without.

mod common;

use common::{cosine, f32_rows, fixture, offline_opts, strings, MINILM};
use embedrank::convert::{convert, ConvertOptions, Destination};
use embedrank::engine::{EmbedOptions, Engine, EngineOptions};
use embedrank::source;
use embedrank::spec::{ModelSpec, SpecOverrides};
use embedrank::weights::qkernel::{force_int_activations, force_path, int_kernel_available, KernelPath};

/// `force_path` is process-wide: tests that set it take turns.
static PATH_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every (path, integer activations) pair this CPU runs: the integer kernel only exists on `avx512`.
fn variants() -> Vec<(KernelPath, bool)> {
    let mut v = Vec::new();
    for path in KernelPath::ALL.into_iter().filter(|p| p.is_available()) {
        v.push((path, false));
        if path == KernelPath::Avx512 && int_kernel_available() {
            v.push((path, true));
        }
    }
    v
}

fn quantized_engine(bits: u32, dir: &std::path::Path) -> Engine {
    let opts = ConvertOptions {
        bits,
        group_size: 64,
        embedding_bits: None,
        dtype: Some("F16"),
        force: false,
        ..Default::default()
    };
    convert(&common::spec(MINILM), &opts, &Destination::Folder(dir.to_path_buf()), &|_, _| {}).expect("convert");
    let r = source::resolve(dir.to_str().unwrap(), &offline_opts()).unwrap();
    let spec = ModelSpec::load(&r, &SpecOverrides::default()).unwrap();
    Engine::load(spec, &EngineOptions::default()).unwrap()
}

#[test]
fn every_kernel_path_and_batch_size_matches_mlx() {
    let fx = fixture("mlx/minilm_mlx.json");
    let texts = strings(&fx["texts"]);
    let want = f32_rows(&fx["q4"]["embeddings"]);
    let tmp = tempfile::tempdir().unwrap();
    let engine = quantized_engine(4, &tmp.path().join("q4"));
    let _turn = PATH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (path, int) in variants() {
        force_path(Some(path)).unwrap();
        force_int_activations(Some(int));
        let path = format!("{path}{}", if int { " int8-activations" } else { "" });
        // The scalar reference is slow: fewer texts, still both batch extremes.
        let n = if path == "scalar" { 12 } else { texts.len() };
        for batch in [1, n] {
            let mut min = f64::MAX;
            for (c, chunk) in texts[..n].chunks(batch).enumerate() {
                let got = engine.embed(chunk, &EmbedOptions::default()).unwrap().vectors;
                for (j, g) in got.iter().enumerate() {
                    let i = c * batch + j;
                    let cos = cosine(g, &want[i]);
                    min = min.min(cos);
                    assert!(cos >= 0.999, "4-bit {path} batch {batch} text {i}: cosine {cos} vs MLX");
                }
            }
            eprintln!("4-bit path {path} batch {batch}: {n} texts, min cosine vs MLX {min:.6}");
        }
    }
    force_path(None).unwrap();
    force_int_activations(None);
}

/// The fixture has no MLX embeddings for 8-bit; every SIMD path must agree with the scalar one:
/// cosine ≥ 0.99999 with float activations, ≥ 0.999 with integer ones (their rounding).
#[test]
fn eight_bit_paths_agree_with_scalar() {
    let fx = fixture("mlx/minilm_mlx.json");
    let texts = &strings(&fx["texts"])[..12];
    let tmp = tempfile::tempdir().unwrap();
    let engine = quantized_engine(8, &tmp.path().join("q8"));
    let _turn = PATH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let embed = |path: KernelPath, int: bool, batch: usize| -> Vec<Vec<f32>> {
        force_path(Some(path)).unwrap();
        force_int_activations(Some(int));
        texts.chunks(batch).flat_map(|c| engine.embed(c, &EmbedOptions::default()).unwrap().vectors).collect()
    };
    let reference = embed(KernelPath::Scalar, false, texts.len());
    for (path, int) in variants().into_iter().filter(|(p, _)| *p != KernelPath::Scalar) {
        let bar = if int { 0.999 } else { 0.99999 };
        for batch in [1, texts.len()] {
            let mut min = f64::MAX;
            for (i, (g, w)) in embed(path, int, batch).iter().zip(&reference).enumerate() {
                let cos = cosine(g, w);
                min = min.min(cos);
                assert!(cos >= bar, "8-bit {path} int {int} batch {batch} text {i}: cosine {cos} vs scalar");
            }
            eprintln!("8-bit path {path} int8-activations {int} batch {batch}: min cosine vs scalar {min:.6}");
        }
    }
    force_path(None).unwrap();
    force_int_activations(None);
}
