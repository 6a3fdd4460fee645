//! all-MiniLM-L6-v2 quantized the MLX way, against MLX itself (fixture from
//! scripts/reference/mlx_minilm.py): `embedrank convert` must write exactly the tensors
//! `mlx_embeddings.convert` writes, and embedrank's embeddings of that checkpoint must match MLX's.

mod common;

use std::path::Path;

use common::{cosine, f32_rows, fixture, offline_opts, strings, MINILM};
use embedrank::convert::{convert, ConvertOptions, Destination};
use embedrank::engine::{EmbedOptions, Engine, EngineOptions};
use embedrank::source;
use embedrank::spec::{ModelSpec, Pooling, QuantParams, SpecOverrides};
use sha2::{Digest, Sha256};

fn opts(bits: u32) -> ConvertOptions {
    ConvertOptions {
        bits,
        group_size: 64,
        embedding_bits: None,
        dtype: Some("F16"),
        force: false,
        ..Default::default()
    }
}

fn convert_minilm(bits: u32, out: &Path) {
    let spec = common::spec(MINILM);
    convert(&spec, &opts(bits), &Destination::Folder(out.to_path_buf()), &|_, _| {}).expect("convert");
}

fn digests(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let hex: String = Sha256::digest(st.tensor(n).unwrap().data()).iter().map(|b| format!("{b:02x}")).collect();
            (n.to_string(), serde_json::Value::String(hex))
        })
        .collect()
}

fn local_spec(dir: &Path) -> ModelSpec {
    let r = source::resolve(dir.to_str().unwrap(), &offline_opts()).unwrap();
    ModelSpec::load(&r, &SpecOverrides::default()).unwrap()
}

#[test]
fn convert_writes_the_tensors_mlx_embeddings_writes() {
    let fx = fixture("mlx/minilm_mlx.json");
    for bits in [4, 8] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("q");
        convert_minilm(bits, &out);
        let ours = digests(&out);
        let theirs = fx[format!("q{bits}")]["digests"].as_object().unwrap();
        let ours_names: Vec<_> = ours.keys().collect();
        let their_names: Vec<_> = theirs.keys().collect();
        assert_eq!(ours_names, their_names, "{bits}-bit: tensor names differ from MLX's");
        for (k, v) in theirs {
            assert_eq!(&ours[k], v, "{bits}-bit: tensor `{k}` differs from mlx_embeddings.convert");
        }
        let spec = local_spec(&out);
        assert_eq!(spec.quantization.as_ref().map(|q| q.global), Some(QuantParams::affine(bits, 64)));
    }
}

#[test]
fn embeddings_of_the_mlx_4bit_checkpoint_match_mlx() {
    let fx = fixture("mlx/minilm_mlx.json");
    let texts = strings(&fx["texts"]);
    let want = f32_rows(&fx["q4"]["embeddings"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q4");
    convert_minilm(4, &out);
    let engine = Engine::load(local_spec(&out), &EngineOptions::default()).unwrap();
    let got = engine.embed(&texts, &EmbedOptions::default()).unwrap().vectors;
    let mut min = f64::MAX;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        min = min.min(c);
        assert!(c >= 0.999, "text {i} ({:?}): cosine {c} vs MLX", &texts[i].chars().take(40).collect::<String>());
    }
    eprintln!("minilm 4-bit vs MLX: {} texts, min cosine {min:.6}", texts.len());
}

#[test]
fn existing_output_needs_force_and_missing_pooling_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    convert_minilm(4, &out);
    let spec = common::spec(MINILM);
    let err = convert(&spec, &opts(4), &Destination::Folder(out.clone()), &|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    let forced = ConvertOptions { force: true, ..opts(8) };
    convert(&spec, &forced, &Destination::Folder(out.clone()), &|_, _| {}).unwrap();
    assert_eq!(local_spec(&out).quantization.unwrap().global.bits, 8);
    // No temporary folders left beside the output.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // Like an mlx-community upload: modules.json present, 1_Pooling missing -> family pooling (mean),
    // with a note saying so; --pooling still overrides.
    std::fs::remove_dir_all(out.join("1_Pooling")).unwrap();
    let renamed = tmp.path().join("all-MiniLM-L6-v2-4bit");
    std::fs::rename(&out, &renamed).unwrap();
    let spec = local_spec(&renamed);
    assert_eq!(spec.head, embedrank::spec::Head::Pool(Pooling::Mean));
    assert!(spec.notes.iter().any(|n| n.contains("Pooling module but its config.json is missing")), "{:?}", spec.notes);
    let r = source::resolve(renamed.to_str().unwrap(), &offline_opts()).unwrap();
    let ov = SpecOverrides { pooling: Some(Pooling::Cls), ..Default::default() };
    assert_eq!(ModelSpec::load(&r, &ov).unwrap().head, embedrank::spec::Head::Pool(Pooling::Cls));
}

#[test]
fn default_destination_is_found_by_name_in_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = common::spec(MINILM);
    let o = opts(4);
    let repo_id = Destination::default_repo_id(&spec, &o);
    assert_eq!(repo_id, "embedrank/all-MiniLM-L6-v2-4bit-f16");
    let dest = Destination::Cache { root: tmp.path().to_path_buf(), repo_id: repo_id.clone() };
    let summary = convert(&spec, &o, &dest, &|_, _| {}).unwrap();
    let ropts =
        source::ResolveOptions { roots: source::CacheRoots::new(vec![tmp.path().to_path_buf()]), offline: true };
    let r = source::resolve(&repo_id, &ropts).unwrap();
    assert_eq!(r.dir, summary.dir);
    assert!(ModelSpec::load(&r, &SpecOverrides::default()).unwrap().quantization.is_some());
}
