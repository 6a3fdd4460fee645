//! `embedrank convert`: quantize a standard checkpoint (BERT embedders and cross-encoders, Qwen3
//! embedders and rerankers) into the MLX affine layout that mlx-lm / mlx-embeddings load unchanged:
//! every Linear and Embedding weight `P.weight` becomes `P.weight` (packed u32) + `P.scales` +
//! `P.biases` (in the weight's float dtype), config.json gains `quantization` and its copy
//! `quantization_config`, and tokenizer and sentence-transformers files are copied. The output is
//! written into a temporary folder beside the destination and renamed into place when complete.

pub mod calibrate;
pub mod quantize;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::spec::quant::{AFFINE_BITS, AFFINE_GROUP_SIZES};
use crate::spec::{Arch, ModelSpec, Task};
use crate::{Error, Result};
use write::{Declared, StreamWriter};

/// Files next to the weights that a loader needs; everything else at the top level that is not a
/// weight file is copied too, module folders of modules.json included.
const WEIGHT_EXTENSIONS: &[&str] = &["safetensors", "bin", "pt", "pth", "h5", "msgpack", "ot", "onnx", "gguf"];

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub bits: u32,
    pub group_size: usize,
    /// Bits for embedding tables (word/position/token-type, `embed_tokens`) when they differ from
    /// `bits`; written as per-layer overrides, which MLX applies at load.
    pub embedding_bits: Option<u32>,
    /// Cast float tensors to this dtype (`F32`, `F16`, `BF16`) before quantizing, as mlx-lm and
    /// mlx-embeddings `convert --dtype` do (mlx-embeddings defaults to float16); None keeps each
    /// tensor's stored dtype.
    pub dtype: Option<&'static str>,
    /// Bits for single layers (canonical module names, e.g. `encoder.layer.0.output.dense`), over
    /// `bits` and `embedding_bits`: mixed precision, written as MLX per-layer overrides.
    pub layer_bits: BTreeMap<String, u32>,
    /// What calibrated the quantization (method and texts' digest), for the output's name and
    /// commit id; None for round to nearest.
    pub calibration: Option<String>,
    pub force: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            bits: 4,
            group_size: 64,
            embedding_bits: None,
            dtype: None,
            layer_bits: BTreeMap::new(),
            calibration: None,
            force: false,
        }
    }
}

impl ConvertOptions {
    pub fn validate(&self) -> Result<()> {
        for b in std::iter::once(self.bits).chain(self.embedding_bits).chain(self.layer_bits.values().copied()) {
            if !AFFINE_BITS.contains(&b) {
                return Err(Error::InvalidInput(format!(
                    "--bits {b}: MLX affine quantization takes 2, 3, 4, 5, 6 or 8"
                )));
            }
        }
        if !AFFINE_GROUP_SIZES.contains(&self.group_size) {
            return Err(Error::InvalidInput(format!(
                "--group-size {}: MLX affine quantization takes 32, 64 or 128",
                self.group_size
            )));
        }
        Ok(())
    }

    /// Suffix of the default output name, e.g. `4bit`, `4bit-g32`, `4bit-e8`.
    pub fn suffix(&self) -> String {
        let mut s = format!("{}bit", self.bits);
        if self.group_size != 64 {
            s.push_str(&format!("-g{}", self.group_size));
        }
        if let Some(e) = self.embedding_bits.filter(|e| *e != self.bits) {
            s.push_str(&format!("-e{e}"));
        }
        if let Some(d) = self.dtype {
            s.push_str(&format!("-{}", d.to_ascii_lowercase()));
        }
        if !self.layer_bits.is_empty() {
            s.push_str("-mixed");
        }
        if self.calibration.is_some() {
            s.push_str("-cal");
        }
        s
    }
}

/// Where the converted model goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A plain folder.
    Folder(PathBuf),
    /// A repo in a hub cache root (`models--org--name/snapshots/<commit>` + `refs/main`), so the
    /// resolver (and huggingface_hub) finds it by `org/name`.
    Cache { root: PathBuf, repo_id: String },
}

impl Destination {
    /// Default repo id of a conversion: `embedrank/<source name>-<suffix>`.
    pub fn default_repo_id(spec: &ModelSpec, opts: &ConvertOptions) -> String {
        let base = spec.name.rsplit('/').next().unwrap_or(&spec.name);
        format!("embedrank/{base}-{}", opts.suffix())
    }
}

#[derive(Debug, Clone)]
pub struct ConvertSummary {
    pub dir: PathBuf,
    pub repo_id: Option<String>,
    pub tensors: usize,
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What happens to one source tensor.
enum Plan {
    Copy { src: String, out: String, cast: Option<&'static str> },
    Quantize { src: String, out: String, n: usize, k: usize, bits: u32, dtype: &'static str },
}

/// How one weight matrix [n, k] becomes MLX affine codes: round to nearest (`Rtn`, what
/// `mx.quantize` does) or a calibrated method (`calibrate`).
pub trait LayerQuantizer: Sync {
    /// `module` is the layer's canonical name; `dtype` the one its scales and biases are stored in.
    #[allow(clippy::too_many_arguments)]
    fn quantize(
        &self,
        module: &str,
        w: &[f32],
        n: usize,
        k: usize,
        bits: u32,
        group_size: usize,
        dtype: &'static str,
    ) -> Result<quantize::Quantized>;
}

/// Round to nearest, as `mx.quantize`.
pub struct Rtn;

impl LayerQuantizer for Rtn {
    #[allow(clippy::too_many_arguments)]
    fn quantize(
        &self,
        _module: &str,
        w: &[f32],
        n: usize,
        k: usize,
        bits: u32,
        group_size: usize,
        _dtype: &'static str,
    ) -> Result<quantize::Quantized> {
        quantize::quantize(w, n, k, bits, group_size)
    }
}

/// Convert `spec`'s model by rounding to nearest. `progress` gets the number of source bytes
/// processed so far.
pub fn convert(
    spec: &ModelSpec,
    opts: &ConvertOptions,
    dest: &Destination,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ConvertSummary> {
    convert_with(spec, opts, dest, &Rtn, &[], progress)
}

/// `convert` with a chosen quantizer; `extra` files (name, bytes) are written into the output
/// folder too (a quality report), a name already there being appended to (README.md).
pub fn convert_with(
    spec: &ModelSpec,
    opts: &ConvertOptions,
    dest: &Destination,
    quantizer: &dyn LayerQuantizer,
    extra: &[(String, Vec<u8>)],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ConvertSummary> {
    opts.validate()?;
    if let Some(q) = &spec.quantization {
        return Err(Error::InvalidInput(format!(
            "`{}` is already quantized ({}); convert takes a float checkpoint",
            spec.name,
            q.describe()
        )));
    }
    let (final_dir, repo_dir, commit) = match dest {
        Destination::Folder(d) => (d.clone(), None, None),
        Destination::Cache { root, repo_id } => {
            let repo = root.join(format!("models--{}", repo_id.replace('/', "--")));
            let commit = commit_id(spec, opts);
            (repo.join("snapshots").join(&commit), Some(repo), Some(commit))
        }
    };
    if final_dir.exists() && !opts.force {
        return Err(Error::OutputExists { path: final_dir });
    }
    let parent = final_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    // Same filesystem as the destination, so the final rename is atomic; removed on any error.
    let tmp = tempfile::Builder::new()
        .prefix(".embedrank-convert-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;

    // Map the sources (read-only) and plan every output tensor before writing anything.
    let maps = spec
        .weight_files
        .iter()
        .map(|f| {
            let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
            // SAFETY: read-only map of a file we do not modify; see WeightStore::open.
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(f, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let files = maps
        .iter()
        .zip(&spec.weight_files)
        .map(|(m, f)| SafeTensors::deserialize(m).map_err(|e| Error::weights(f, e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (i, st) in files.iter().enumerate() {
        for name in st.names() {
            by_name.insert(name.to_string(), i);
        }
    }
    let mut plans = Vec::new();
    let mut declared = Vec::new();
    let mut overrides = serde_json::Map::new();
    for (name, &fi) in &by_name {
        let view = files[fi].tensor(name).map_err(|e| Error::weights(&spec.weight_files[fi], e.to_string()))?;
        let Some(out) = output_name(spec, name) else { continue };
        let shape = view.shape().to_vec();
        let float = float_dtype(view.dtype()).map(|d| opts.dtype.unwrap_or(d));
        let module = out.strip_suffix(".weight");
        let quantizable = match (module, float, shape.as_slice()) {
            (Some(_), Some(_), [n, k]) => k % opts.group_size == 0 && (n * k) % 64 == 0,
            _ => false,
        };
        if let (true, Some(module), Some(dtype), [n, k]) = (quantizable, module, float, shape.as_slice()) {
            let layer = opts.layer_bits.get(crate::weights::canonical_name(name.trim_end_matches(".weight")));
            let bits = match (layer, opts.embedding_bits) {
                (Some(&b), _) if b != opts.bits => b,
                (None, Some(e)) if is_embedding(module) => e,
                _ => opts.bits,
            };
            if bits != opts.bits {
                overrides
                    .insert(module.to_string(), json!({"group_size": opts.group_size, "bits": bits, "mode": "affine"}));
            }
            let (n, k) = (*n, *k);
            declared.push(Declared { name: out.clone(), dtype: "U32", shape: vec![n, k * bits as usize / 32] });
            declared.push(Declared { name: format!("{module}.scales"), dtype, shape: vec![n, k / opts.group_size] });
            declared.push(Declared { name: format!("{module}.biases"), dtype, shape: vec![n, k / opts.group_size] });
            plans.push(Plan::Quantize { src: name.clone(), out, n, k, bits, dtype });
        } else {
            let stored = dtype_str(view.dtype()).ok_or_else(|| {
                Error::weights(
                    &spec.weight_files[fi],
                    format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()),
                )
            })?;
            let cast = float.filter(|d| *d != stored);
            declared.push(Declared { name: out.clone(), dtype: cast.unwrap_or(stored), shape });
            plans.push(Plan::Copy { src: name.clone(), out, cast });
        }
    }
    let quantized = plans.iter().filter(|p| matches!(p, Plan::Quantize { .. })).count();
    if quantized == 0 {
        return Err(Error::weights(
            spec.dir.clone(),
            format!("no weight matrix has a width divisible by the group size {}", opts.group_size),
        ));
    }
    // The header lists tensors in the order they are written: the order of `plans` (by name), with a
    // quantized layer's three tensors together.
    let weights_path = tmp.path().join("model.safetensors");
    let mut writer = StreamWriter::create(&weights_path, declared, &[("format", "mlx")])?;
    let bytes_in: u64 = plans
        .iter()
        .map(|p| {
            let src = match p {
                Plan::Copy { src, .. } | Plan::Quantize { src, .. } => src,
            };
            files[by_name[src]].tensor(src).map(|v| v.data().len() as u64).unwrap_or(0)
        })
        .sum();
    let mut done = 0u64;
    progress(0, bytes_in);
    for plan in &plans {
        match plan {
            Plan::Copy { src, out, cast } => {
                let view = files[by_name[src]].tensor(src).map_err(|e| Error::weights(&weights_path, e.to_string()))?;
                match cast {
                    Some(d) => writer.write(out, &from_f32(d, &to_f32(view.dtype(), view.data())))?,
                    None => writer.write(out, view.data())?,
                }
                done += view.data().len() as u64;
            }
            Plan::Quantize { src, out, n, k, bits, dtype } => {
                let view = files[by_name[src]].tensor(src).map_err(|e| Error::weights(&weights_path, e.to_string()))?;
                let mut w = to_f32(view.dtype(), view.data());
                // Quantize the values the cast checkpoint would hold, as MLX does after `astype`.
                round_to(dtype, &mut w);
                let canon = crate::weights::canonical_name(src.trim_end_matches(".weight"));
                let q = quantizer
                    .quantize(canon, &w, *n, *k, *bits, opts.group_size, dtype)
                    .map_err(|e| Error::weights(&weights_path, format!("tensor `{src}`: {e}")))?;
                drop(w);
                let module = out.trim_end_matches(".weight");
                writer.write(out, bytemuck::cast_slice(&q.packed))?;
                writer.write(&format!("{module}.scales"), &from_f32(dtype, &q.scales))?;
                writer.write(&format!("{module}.biases"), &from_f32(dtype, &q.biases))?;
                done += view.data().len() as u64;
            }
        }
        progress(done, bytes_in);
    }
    writer.finish()?;
    let bytes_out = std::fs::metadata(&weights_path).map_err(|e| Error::io(&weights_path, e))?.len();

    write_config(spec, opts, overrides, &tmp.path().join("config.json"))?;
    copy_support_files(&spec.dir, tmp.path())?;
    let record = tmp.path().join(crate::spec::RECORD_FILE);
    std::fs::write(&record, json!({"task": spec.task.key()}).to_string()).map_err(|e| Error::io(&record, e))?;
    for (name, bytes) in extra {
        let path = tmp.path().join(name);
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        std::io::Write::write_all(&mut f, bytes).map_err(|e| Error::io(&path, e))?;
    }

    // Move into place: an existing destination (only with --force) is moved aside first and deleted
    // after the new one is in, so a failure never leaves neither.
    let tmp_path = tmp.keep();
    let result = (|| -> Result<()> {
        if final_dir.exists() {
            let old = parent.join(format!(".embedrank-old-{}", std::process::id()));
            std::fs::rename(&final_dir, &old).map_err(|e| Error::io(&final_dir, e))?;
            std::fs::rename(&tmp_path, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&tmp_path, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e);
    }
    if let (Some(repo), Some(commit)) = (&repo_dir, &commit) {
        write_ref(repo, commit)?;
    }
    Ok(ConvertSummary {
        dir: final_dir,
        repo_id: match dest {
            Destination::Cache { repo_id, .. } => Some(repo_id.clone()),
            Destination::Folder(_) => None,
        },
        tensors: by_name.len(),
        quantized,
        bytes_in,
        bytes_out,
    })
}

/// Output name of a source tensor in the MLX layout, or None to drop it.
/// Qwen3: mlx-lm / mlx-embeddings modules are `model.`-prefixed (official Qwen3-Embedding files are
/// flat). BERT embedders: mlx-embeddings uses BertModel names without `bert.`; the MLM head is not
/// part of that model. Cross-encoders keep their names (backbone prefix + classifier).
fn output_name(spec: &ModelSpec, name: &str) -> Option<String> {
    if name.ends_with("position_ids") {
        return None;
    }
    match (&spec.arch, spec.task) {
        (Arch::Qwen3(_), _) => {
            if name.starts_with("model.") || name.starts_with("lm_head.") || name.starts_with("score.") {
                Some(name.to_string())
            } else {
                Some(format!("model.{name}"))
            }
        }
        (Arch::Bert(_), Task::Embed) => {
            if name.starts_with("cls.") {
                return None;
            }
            Some(name.strip_prefix("bert.").unwrap_or(name).to_string())
        }
        (Arch::Bert(_), Task::Rerank) => Some(name.to_string()),
    }
}

fn is_embedding(module: &str) -> bool {
    module.ends_with("embed_tokens") || module.ends_with("_embeddings")
}

fn float_dtype(d: Dtype) -> Option<&'static str> {
    match d {
        Dtype::F32 => Some("F32"),
        Dtype::F16 => Some("F16"),
        Dtype::BF16 => Some("BF16"),
        _ => None,
    }
}

fn dtype_str(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::F64 => "F64",
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::I64 => "I64",
        Dtype::I32 => "I32",
        Dtype::I16 => "I16",
        Dtype::I8 => "I8",
        Dtype::U64 => "U64",
        Dtype::U32 => "U32",
        Dtype::U16 => "U16",
        Dtype::U8 => "U8",
        Dtype::BOOL => "BOOL",
        _ => return None,
    })
}

/// Little-endian float bytes -> f32 (bytes may be unaligned inside the map).
fn to_f32(d: Dtype, data: &[u8]) -> Vec<f32> {
    match d {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn round_to(dtype: &str, v: &mut [f32]) {
    match dtype {
        "F16" => v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
        "BF16" => v.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
        _ => {}
    }
}

/// f32 -> bytes of `dtype` (round to nearest even, as MLX's astype).
fn from_f32(dtype: &str, v: &[f32]) -> Vec<u8> {
    match dtype {
        "F16" => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
        "BF16" => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn write_config(
    spec: &ModelSpec,
    opts: &ConvertOptions,
    overrides: serde_json::Map<String, Value>,
    path: &Path,
) -> Result<()> {
    let src = spec.dir.join("config.json");
    let text = std::fs::read_to_string(&src).map_err(|e| Error::io(&src, e))?;
    let mut cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::config(&src, format!("not valid JSON: {e}")))?;
    let mut q = json!({"group_size": opts.group_size, "bits": opts.bits, "mode": "affine"});
    if let Some(obj) = q.as_object_mut() {
        obj.extend(overrides);
    }
    let obj = cfg.as_object_mut().ok_or_else(|| Error::config(&src, "config.json is not an object"))?;
    obj.insert("quantization".into(), q.clone());
    // mlx-lm writes the same entry under both names (the second for the Hugging Face tooling).
    obj.insert("quantization_config".into(), q);
    let out = serde_json::to_string_pretty(&cfg).map_err(|e| Error::config(path, e.to_string()))?;
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// Copy tokenizer, sentence-transformers and other top-level non-weight files, and the module
/// folders modules.json names (1_Pooling, 2_Normalize, ...). Symlinks (hub cache) are followed.
fn copy_support_files(src: &Path, dst: &Path) -> Result<()> {
    let entries = std::fs::read_dir(src).map_err(|e| Error::io(src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "config.json" || name == "model.safetensors.index.json" {
            continue;
        }
        if path.is_file() {
            let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            if WEIGHT_EXTENSIONS.contains(&ext.as_str()) || name.ends_with(".index.json") {
                continue;
            }
            std::fs::copy(&path, dst.join(&name)).map_err(|e| Error::io(&path, e))?;
        }
    }
    let modules = src.join("modules.json");
    if let Ok(text) = std::fs::read_to_string(&modules) {
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::config(&modules, e.to_string()))?;
        for m in v.as_array().into_iter().flatten() {
            let Some(p) = m.get("path").and_then(Value::as_str).filter(|p| !p.is_empty()) else { continue };
            if p.contains("..") || p.starts_with('/') {
                return Err(Error::config(&modules, format!("bad module path `{p}`")));
            }
            let from = src.join(p);
            if from.is_dir() {
                copy_dir(&from, &dst.join(p))?;
            }
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// A stable 40-hex "commit" for a conversion: the same source and options give the same snapshot.
fn commit_id(spec: &ModelSpec, opts: &ConvertOptions) -> String {
    let mut h = Sha256::new();
    h.update(b"embedrank-convert-v1\0");
    h.update(spec.repo_id.as_deref().unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(spec.commit.as_deref().unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(spec.dir.to_string_lossy().as_bytes());
    h.update(format!("\0{}\0{}\0{:?}\0{:?}", opts.bits, opts.group_size, opts.embedding_bits, opts.dtype).as_bytes());
    if !opts.layer_bits.is_empty() || opts.calibration.is_some() {
        h.update(format!("\0{:?}\0{:?}", opts.layer_bits, opts.calibration).as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..40].to_string()
}

/// Point `refs/main` at `commit`, atomically.
fn write_ref(repo: &Path, commit: &str) -> Result<()> {
    let refs = repo.join("refs");
    std::fs::create_dir_all(&refs).map_err(|e| Error::io(&refs, e))?;
    let mut f = tempfile::NamedTempFile::new_in(&refs).map_err(|e| Error::io(&refs, e))?;
    use std::io::Write;
    f.write_all(commit.as_bytes()).map_err(|e| Error::io(&refs, e))?;
    let main = refs.join("main");
    f.persist(&main).map_err(|e| Error::io(&main, e.error))?;
    Ok(())
}
