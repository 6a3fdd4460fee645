//! Quality of `embedrank convert` recipes on all-MiniLM-L6-v2: cosine (mean / min) of each
//! quantized model's embeddings against the float model's, on the golden texts, next to what MLX
//! itself gets for its own 4-bit and 8-bit conversions (tests/fixtures/mlx/minilm_mlx.json, made by
//! scripts/reference/mlx_minilm.py), then the calibrated methods of `convert --calibrate` (fitted
//! on the shipped calibration set, which shares no text with the golden ones) at 4 and 3 bits.
//! Needs the test hub (scripts/fetch-test-models.sh). Each output is kept in OUT_DIR when given,
//! for `embedrank eval` to measure retrieval and STS on.
//!
//! `cargo run --release --example quant_quality [OUT_DIR]`

use std::path::PathBuf;

use anyhow::{Context, Result};
use embedrank::convert::calibrate::{convert_calibrated, CalibrateOptions, CalibrationSet, Method};
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
    let keep = std::env::args().nth(1).map(PathBuf::from);
    let out_root = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let score = |out: &PathBuf| -> Result<(f64, f64)> {
        let r = source::resolve(out.to_str().context("path")?, &opts)?;
        let q = embed(ModelSpec::load(&r, &SpecOverrides::default())?)?;
        let cs: Vec<f64> = q.iter().zip(&float).map(|(a, b)| cosine(a, b)).collect();
        Ok((cs.iter().sum::<f64>() / cs.len() as f64, cs.iter().cloned().fold(f64::MAX, f64::min)))
    };
    println!("all-MiniLM-L6-v2, {} golden texts, cosine vs the float model", texts.len());
    println!("{:<30} {:>9} {:>9} {:>9}   MLX's own (mean / min)", "recipe", "mean", "min", "MB");
    for (name, bits, gs, emb) in recipes {
        let out = out_root.join(name.replace([' ', ',', '-'], "_"));
        let o = ConvertOptions {
            bits,
            group_size: gs,
            embedding_bits: emb,
            dtype: Some("F16"),
            force: true,
            ..Default::default()
        };
        let summary = convert(&spec, &o, &Destination::Folder(out.clone()), &|_, _| {})?;
        let (mean, min) = score(&out)?;
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
    println!("\ncalibrated on the shipped set (`convert --calibrate --method M`), group size 64");
    println!("{:<30} {:>9} {:>9} {:>9} {:>9}", "recipe", "mean", "min", "MB", "seconds");
    for bits in [4, 3] {
        for method in Method::ALL {
            let name = format!("{bits}-bit g64 {}", method.name());
            let out = out_root.join(name.replace([' ', ',', '-'], "_"));
            let o = ConvertOptions { bits, group_size: 64, dtype: Some("F16"), force: true, ..Default::default() };
            let cal = CalibrateOptions {
                texts: CalibrationSet::default_set(),
                method: Some(method),
                eval: Default::default(),
            };
            let t = std::time::Instant::now();
            let (summary, _) =
                convert_calibrated(&spec, &o, &Destination::Folder(out.clone()), &cal, &|_| {}, &|_, _| {})?;
            let secs = t.elapsed().as_secs_f64();
            let (mean, min) = score(&out)?;
            println!("{name:<30} {mean:>9.4} {min:>9.4} {:>9.1} {secs:>9.1}", summary.bytes_out as f64 / 1e6);
        }
    }
    if let Some(k) = keep {
        println!("\noutputs kept in {}", k.display());
    }
    Ok(())
}
