//! Quality of `embedrank convert` recipes on all-MiniLM-L6-v2: cosine (mean / min) of each
//! quantized model's embeddings against the float model's, on the golden texts, next to what MLX
//! itself gets for its own 4-bit and 8-bit conversions (tests/fixtures/mlx/minilm_mlx.json, made by
//! scripts/reference/mlx_minilm.py). Needs the test hub (scripts/fetch-test-models.sh).
//!
//! `cargo run --release --example quant_quality`

use std::path::PathBuf;

use anyhow::{Context, Result};
use embedrank::convert::{convert, ConvertOptions, Destination};
use embedrank::engine::{EmbedOptions, Engine, EngineOptions};
use embedrank::source::{self, CacheRoots, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/mlx/minilm_mlx.json"))?)?;
    let texts: Vec<String> = serde_json::from_value(fx["texts"].clone())?;
    let opts = ResolveOptions { roots: CacheRoots::new(vec![root.join(".cache/hub")]), offline: true };
    let resolved = source::resolve("sentence-transformers/all-MiniLM-L6-v2", &opts).context("test hub")?;
    let spec = ModelSpec::load(&resolved, &SpecOverrides::default())?;
    let embed = |spec: ModelSpec| -> Result<Vec<Vec<f32>>> {
        Ok(Engine::load(spec, &EngineOptions::default())?.embed(&texts, &EmbedOptions::default())?.vectors)
    };
    let float = embed(spec.clone())?;
    let recipes: [(&str, u32, usize, Option<u32>); 5] = [
        ("8-bit g64", 8, 64, None),
        ("4-bit g64", 4, 64, None),
        ("4-bit g64, embeddings 8-bit", 4, 64, Some(8)),
        ("4-bit g32", 4, 32, None),
        ("4-bit g32, embeddings 8-bit", 4, 32, Some(8)),
    ];
    let tmp = tempfile::tempdir()?;
    println!("all-MiniLM-L6-v2, {} golden texts, cosine vs the float model", texts.len());
    println!("{:<30} {:>9} {:>9} {:>9}   MLX's own (mean / min)", "recipe", "mean", "min", "MB");
    for (name, bits, gs, emb) in recipes {
        let out = tmp.path().join(name.replace([' ', ',', '-'], "_"));
        let o = ConvertOptions {
            bits,
            group_size: gs,
            embedding_bits: emb,
            dtype: Some("F16"),
            force: false,
            ..Default::default()
        };
        let summary = convert(&spec, &o, &Destination::Folder(out.clone()), &|_, _| {})?;
        let r = source::resolve(out.to_str().context("path")?, &opts)?;
        let q = embed(ModelSpec::load(&r, &SpecOverrides::default())?)?;
        let cs: Vec<f64> = q.iter().zip(&float).map(|(a, b)| cosine(a, b)).collect();
        let mean = cs.iter().sum::<f64>() / cs.len() as f64;
        let min = cs.iter().cloned().fold(f64::MAX, f64::min);
        let mlx = match (bits, gs, emb) {
            (b, 64, None) => fx[format!("q{b}")]["cosine_vs_mlx_float"]
                .as_object()
                .map(|m| format!("{:.4} / {:.4}", m["mean"].as_f64().unwrap_or(0.0), m["min"].as_f64().unwrap_or(0.0))),
            _ => None,
        };
        println!(
            "{name:<30} {mean:>9.4} {min:>9.4} {:>9.1}   {}",
            summary.bytes_out as f64 / 1e6,
            mlx.unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}
