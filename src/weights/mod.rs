//! Weights stage: safetensors files (memory-mapped, sharded or not) behind one name lookup that
//! accepts either naming style (`bert.`/`model.`/`roberta.` prefixed or flat), and the layer types
//! whose storage the model code does not need to know.

pub mod cuda_quant;
pub(crate) mod dense_cpu;
pub mod embedding;
pub mod linear;
pub mod packed_f32;
pub mod qkernel;
pub mod quant;
pub mod recorder;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

pub use embedding::Embedding;
pub use linear::Linear;
pub use quant::RawEntry;

use crate::spec::Quantization;
use crate::{Error, Result};

/// Default padded tokens per forward pass of a quantized model (on disk, or `--dtype int8`) on the
/// CPU. There the activations, not the weights, decide peak memory (a 4B model at 4 bits holds
/// 2.3 GB of weights, and each token of a Qwen3-4B forward pass holds about 0.3 MB of activations at
/// its peak), and throughput peaks about here: the integer kernel's activations stay in cache
/// (all-MiniLM-L6-v2 `--dtype int8`, SciFact: 10.8k tokens/s at 1024, 10.1k at 512 and 2048,
/// 9.3k at 16384).
pub const QUANTIZED_CPU_MAX_BATCH_TOKENS: usize = 1024;

/// The padded-token budget per forward pass: what the user asked for, else the default for the
/// model — [`QUANTIZED_CPU_MAX_BATCH_TOKENS`] for quantized models running on the CPU,
/// `crate::engine::DEFAULT_MAX_BATCH_TOKENS` otherwise.
pub fn forward_token_budget(requested: Option<usize>, quantized: bool, cpu: bool) -> usize {
    match requested {
        Some(n) => n.max(1),
        None if quantized && cpu => QUANTIZED_CPU_MAX_BATCH_TOKENS,
        None => crate::engine::DEFAULT_MAX_BATCH_TOKENS,
    }
}

/// Leading prefixes stripped from tensor names so model code asks for one canonical name.
const PREFIXES: &[&str] = &["model.", "bert.", "roberta.", "transformer."];

/// A tensor or layer name without the backbone prefix (`bert.`, `model.`, ...): the name models
/// ask the weight store for.
pub fn canonical_name(name: &str) -> &str {
    PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name)
}

/// How a quantized layer's activations enter the integer kernel (see `qkernel::AffineWeight`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Acts {
    Integer,
    SplitOutliers,
    Float,
}

pub struct WeightStore {
    st: MmapedSafetensors,
    /// canonical name -> name in the file
    names: HashMap<String, String>,
    files: Vec<PathBuf>,
    pub device: Device,
    /// dtype float tensors are converted to when loaded
    pub dtype: DType,
    /// real name -> where its bytes are (quantized tensors are read without the map)
    raw: HashMap<String, RawEntry>,
    /// MLX quantization entry, to check quantized layers against (shapes decide without it).
    quantization: Option<Quantization>,
    /// (bits, group size): quantize float linear layers as they load (`set_load_quantization`).
    load_quant: Option<(u32, usize)>,
    /// Calibration: float linear layers record their inputs here (`Linear::Recorded`).
    recorder: Option<std::sync::Arc<recorder::ActivationRecorder>>,
}

impl WeightStore {
    pub fn open(files: &[PathBuf], device: &Device, dtype: DType) -> Result<Self> {
        let mut raw = HashMap::new();
        for f in files {
            raw.extend(check_safetensors(f)?);
        }
        // SAFETY: the files are memory-mapped read-only; a model file changed underneath a running
        // process is outside what we can defend against (the same contract as every mmap loader).
        let st = unsafe { MmapedSafetensors::multi(files) }
            .map_err(|e| Error::weights(files.first().cloned().unwrap_or_default(), e.to_string()))?;
        let mut names = HashMap::new();
        for (name, _) in st.tensors() {
            let canon = canonical_name(&name).to_string();
            names.insert(canon, name.clone());
            names.entry(name.clone()).or_insert(name);
        }
        Ok(WeightStore {
            st,
            names,
            files: files.to_vec(),
            device: device.clone(),
            dtype,
            raw,
            quantization: None,
            load_quant: None,
            recorder: None,
        })
    }

    pub fn path(&self) -> &Path {
        self.files.first().map(PathBuf::as_path).unwrap_or(Path::new(""))
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// All canonical names.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.keys()
    }

    /// A tensor as stored (dtype unchanged), on the CPU.
    pub fn raw(&self, name: &str) -> Result<Tensor> {
        let real =
            self.names.get(name).ok_or_else(|| Error::weights(self.path(), format!("tensor `{name}` not found")))?;
        self.st.load(real, &Device::Cpu).map_err(|e| Error::weights(self.path(), format!("tensor `{name}`: {e}")))
    }

    /// A float tensor in the compute dtype on the compute device, with its shape checked.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.raw(name)?;
        if t.dims() != shape {
            return Err(Error::weights(
                self.path(),
                format!("tensor `{name}` has shape {:?}, expected {:?}", t.dims(), shape),
            ));
        }
        if !t.dtype().is_float() {
            return Err(Error::weights(
                self.path(),
                format!("tensor `{name}` has dtype {:?}, expected a float", t.dtype()),
            ));
        }
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.has(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Check quantized layers against this config entry (bits, group size, mode).
    pub fn set_quantization(&mut self, q: Option<Quantization>) {
        self.quantization = q;
    }

    /// Quantize float linear layers (CPU only) to MLX affine `(bits, group size)` as they load; the
    /// float copy is dropped. Layers whose input width is not a multiple of the group stay float.
    pub fn set_load_quantization(&mut self, q: Option<(u32, usize)>) {
        self.load_quant = q;
    }

    /// Record the inputs of every float linear layer loaded after this (calibration).
    pub fn set_recorder(&mut self, r: Option<std::sync::Arc<recorder::ActivationRecorder>>) {
        self.recorder = r;
    }

    /// A linear layer `prefix.weight` [out, in] (+ `prefix.bias` [out] when `bias`). Quantized
    /// exactly when `prefix.scales` exists (the MLX rule), or at load (`set_load_quantization`).
    pub fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        self.linear_inner(prefix, in_dim, out_dim, bias, Acts::Integer)
    }

    /// `linear` for a layer whose input has a few huge channels that the integer kernel should
    /// multiply in f32 (the feed-forward input, a normalized hidden state: BERT's intermediate,
    /// Qwen3's gate/up; see `AffineWeight::set_split_outliers`).
    pub fn linear_outlier_split(&self, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        self.linear_inner(prefix, in_dim, out_dim, bias, Acts::SplitOutliers)
    }

    /// `linear` for a layer whose activations must stay f32 (see
    /// `AffineWeight::set_float_activations`): a quantized checkpoint's layer never takes the
    /// integer kernel, and load-time quantization leaves the layer dense (with f32 activations it
    /// would gain no speed, only rounding).
    pub fn linear_float_activations(&self, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        self.linear_inner(prefix, in_dim, out_dim, bias, Acts::Float)
    }

    fn linear_inner(&self, prefix: &str, in_dim: usize, out_dim: usize, bias: bool, acts: Acts) -> Result<Linear> {
        let b = if bias { Some(self.get(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
        let configure = |q: &mut qkernel::AffineWeight| {
            q.set_split_outliers(acts == Acts::SplitOutliers);
            q.set_float_activations(acts == Acts::Float);
        };
        if let Some(mut q) = self.quantized(prefix, out_dim, in_dim)? {
            if self.device.is_cuda() {
                // Packed on the GPU, expanded there per call (cuda_quant); the CPU copy is dropped.
                return Ok(Linear::device_quantized(cuda_quant::DeviceAffine::load(self, prefix, &q)?, b));
            }
            configure(&mut q);
            return Ok(Linear::quantized(q, b));
        }
        let w = self.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let load_quant = self.load_quant.filter(|&(_, gs)| self.device.is_cpu() && in_dim.is_multiple_of(gs));
        if let Some((bits, gs)) = load_quant.filter(|_| acts != Acts::Float) {
            let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let mut q = qkernel::quantize(&values, out_dim, in_dim, bits, gs)
                .map_err(|e| Error::weights(self.path(), format!("layer `{prefix}`: {e}")))?;
            configure(&mut q);
            return Ok(Linear::quantized(q, b));
        }
        let layer = Linear::dense(w, b);
        Ok(match &self.recorder {
            Some(r) => {
                Linear::Recorded { inner: Box::new(layer), name: canonical_name(prefix).into(), recorder: r.clone() }
            }
            None => layer,
        })
    }

    /// Where tensor `name` (canonical or real) is in its file.
    pub(crate) fn raw_entry(&self, name: &str) -> Option<&RawEntry> {
        self.names.get(name).and_then(|real| self.raw.get(real))
    }

    /// The affine-quantized weight [rows, cols] of layer `prefix`, or None when it is not quantized.
    pub fn quantized(&self, prefix: &str, rows: usize, cols: usize) -> Result<Option<qkernel::AffineWeight>> {
        let scales = format!("{prefix}.scales");
        if !self.has(&scales) {
            return Ok(None);
        }
        let entry = |n: &str| self.names.get(n).and_then(|real| self.raw.get(real));
        let missing = |n: &str| Error::weights(self.path(), format!("tensor `{n}` not found"));
        let weight_name = format!("{prefix}.weight");
        let weight = entry(&weight_name).ok_or_else(|| missing(&weight_name))?;
        let scales = entry(&scales).ok_or_else(|| missing(&scales))?;
        let biases = entry(&format!("{prefix}.biases"));
        let expected = self.quantization.as_ref().and_then(|q| q.params_for(prefix));
        if self.quantization.is_some() && expected.is_none() {
            return Err(Error::weights(
                self.path(),
                format!("layer `{prefix}` is quantized but the config's quantization entry says `false` for it"),
            ));
        }
        let t = quant::QuantTensors { weight, scales, biases };
        quant::load_affine(&weight.file, prefix, t, rows, cols, expected).map(Some)
    }
}

/// Check a safetensors file's header and length before mapping it, so a truncated or corrupt file
/// is a one-line error naming the file.
fn check_safetensors(path: &Path) -> Result<Vec<(String, RawEntry)>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let header_len = match len {
        0..8 => {
            return Err(Error::weights(
                path,
                format!("file is {len} bytes, too short for a safetensors header (truncated?)"),
            ))
        }
        _ => {
            let mut n = [0u8; 8];
            f.read_exact(&mut n).map_err(|e| Error::io(path, e))?;
            u64::from_le_bytes(n)
        }
    };
    check_header_length(path, header_len, len)?;
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    header_entries(path, &header, len)
}

/// The header's length (the file's first 8 bytes) must fit the file and stay under 100 MB.
fn check_header_length(path: &Path, header_len: u64, file_len: u64) -> Result<()> {
    if header_len > 100_000_000 || header_len.saturating_add(8) > file_len {
        return Err(Error::weights(
            path,
            format!("header length {header_len} does not fit in a {file_len}-byte file (truncated or not safetensors)"),
        ));
    }
    Ok(())
}

/// Where each tensor of a safetensors header is in a `file_len`-byte file. Every offset and size
/// is checked against the file with overflow-free arithmetic (a header is untrusted input): the
/// data range lies inside the file, begins before it ends, and holds exactly shape × dtype bytes
/// for the dtypes whose size we know.
pub fn header_entries(path: &Path, header: &[u8], file_len: u64) -> Result<Vec<(String, RawEntry)>> {
    let bad = |m: String| Err(Error::weights(path, m));
    let data_start = 8 + header.len() as u64;
    let have = file_len.saturating_sub(data_start);
    let v: serde_json::Value = match serde_json::from_slice(header) {
        Ok(v) => v,
        Err(e) => return bad(format!("header is not valid JSON: {e}")),
    };
    let Some(obj) = v.as_object() else {
        return bad("header is not a JSON object".into());
    };
    let mut entries = Vec::new();
    for (k, t) in obj {
        if k == "__metadata__" {
            continue;
        }
        let Some(off) = t.get("data_offsets").and_then(|o| o.as_array()) else {
            continue;
        };
        let (Some(b), Some(e)) = (off.first().and_then(|x| x.as_u64()), off.get(1).and_then(|x| x.as_u64())) else {
            return bad(format!("tensor `{k}`: data_offsets must be two byte offsets"));
        };
        if b > e {
            return bad(format!("tensor `{k}`: data begins at {b}, after it ends at {e}"));
        }
        if e > have {
            return bad(format!("tensor data needs {e} bytes but the file holds {have} (truncated download?)"));
        }
        let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or("").to_string();
        let shape: Vec<usize> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|s| s.iter().filter_map(|x| x.as_u64()).map(|x| usize::try_from(x).unwrap_or(usize::MAX)).collect())
            .unwrap_or_default();
        let size = match dtype.as_str() {
            "F64" | "I64" | "U64" => Some(8u64),
            "F32" | "I32" | "U32" => Some(4),
            "F16" | "BF16" | "I16" | "U16" => Some(2),
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
            _ => None,
        };
        if let Some(size) = size {
            let bytes = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d as u64));
            if bytes != Some(e - b) {
                return bad(format!("tensor `{k}`: shape {shape:?} of {dtype} does not fill its {} data bytes", e - b));
            }
        }
        entries
            .push((k.clone(), RawEntry { file: path.to_path_buf(), dtype, shape, offset: data_start + b, len: e - b }));
    }
    Ok(entries)
}

/// A whole safetensors file's bytes (fuzzing and tests): the same checks as opening one.
pub fn check_safetensors_bytes(path: &Path, bytes: &[u8]) -> Result<Vec<(String, RawEntry)>> {
    let len = bytes.len() as u64;
    let Some(n) = bytes.get(..8) else {
        return Err(Error::weights(
            path,
            format!("file is {len} bytes, too short for a safetensors header (truncated?)"),
        ));
    };
    let header_len = u64::from_le_bytes(n.try_into().unwrap_or_default());
    check_header_length(path, header_len, len)?;
    header_entries(path, &bytes[8..8 + header_len as usize], len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_cpu_models_default_to_a_smaller_forward_budget_and_a_user_value_wins() {
        use crate::engine::DEFAULT_MAX_BATCH_TOKENS;
        assert_eq!(forward_token_budget(None, true, true), QUANTIZED_CPU_MAX_BATCH_TOKENS);
        assert_eq!(forward_token_budget(None, true, false), DEFAULT_MAX_BATCH_TOKENS);
        assert_eq!(forward_token_budget(None, false, true), DEFAULT_MAX_BATCH_TOKENS);
        // An explicit budget is the user's choice, above the quantized default too.
        assert_eq!(forward_token_budget(Some(4096), true, true), 4096);
        assert_eq!(forward_token_budget(Some(512), true, true), 512);
        assert_eq!(forward_token_budget(Some(0), false, true), 1);
    }
}
