//! The MLX quantization entry of config.json (`quantization`, or its copy `quantization_config`):
//! global bits / group size / mode plus per-module overrides (a dict, or `false` = unquantized).
//! Which layer is quantized is decided by the weights (`<path>.scales` exists); this entry says with
//! which parameters, and lets unsupported modes fail before any tensor is read.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// Bit widths MLX affine quantization accepts (7 is rejected by MLX itself).
pub const AFFINE_BITS: &[u32] = &[2, 3, 4, 5, 6, 8];
/// Group sizes MLX affine quantization accepts.
pub const AFFINE_GROUP_SIZES: &[usize] = &[32, 64, 128];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMode {
    Affine,
    Mxfp4,
    Mxfp8,
    Nvfp4,
}

impl QuantMode {
    pub fn parse(s: &str) -> Option<QuantMode> {
        match s {
            "affine" => Some(QuantMode::Affine),
            "mxfp4" => Some(QuantMode::Mxfp4),
            "mxfp8" => Some(QuantMode::Mxfp8),
            "nvfp4" => Some(QuantMode::Nvfp4),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
            QuantMode::Mxfp8 => "mxfp8",
            QuantMode::Nvfp4 => "nvfp4",
        }
    }
}

/// Parameters of one quantized layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantParams {
    pub bits: u32,
    pub group_size: usize,
    pub mode: QuantMode,
}

impl QuantParams {
    pub fn affine(bits: u32, group_size: usize) -> Self {
        QuantParams { bits, group_size, mode: QuantMode::Affine }
    }

    /// Affine parameters MLX accepts; other modes are refused with their name.
    pub fn check_supported(&self) -> std::result::Result<(), String> {
        if self.mode != QuantMode::Affine {
            return Err(format!(
                "quantization mode `{}` is not supported (embedrank loads MLX `affine` quantization only)",
                self.mode.as_str()
            ));
        }
        if !AFFINE_BITS.contains(&self.bits) {
            return Err(format!("{} bits is not an MLX affine bit width (2, 3, 4, 5, 6 or 8)", self.bits));
        }
        if !AFFINE_GROUP_SIZES.contains(&self.group_size) {
            return Err(format!("group size {} is not an MLX affine group size (32, 64 or 128)", self.group_size));
        }
        Ok(())
    }
}

/// The whole quantization entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    pub global: QuantParams,
    /// Module path (as written in the file, e.g. `model.layers.3.mlp.down_proj`) -> its own
    /// parameters, or None for `false` (left unquantized).
    pub overrides: BTreeMap<String, Option<QuantParams>>,
}

impl Quantization {
    /// Read the entry from a parsed config.json; None when the model is not quantized.
    pub fn from_config(config: &Value, path: &Path) -> Result<Option<Quantization>> {
        let entry = match config.get("quantization").or_else(|| config.get("quantization_config")) {
            None | Some(Value::Null) => return Ok(None),
            Some(v) => v,
        };
        let obj = entry.as_object().ok_or_else(|| Error::config(path, "`quantization` must be an object"))?;
        if let Some(m) = obj.get("quant_method").and_then(Value::as_str) {
            // Foreign (transformers) quantization configs: awq, gptq, bitsandbytes, ...
            return Err(Error::config(
                path,
                format!("quantization method `{m}` is not supported (only MLX affine checkpoints are)"),
            ));
        }
        let global = parse_params(entry, None, path, "quantization")?;
        global.check_supported().map_err(|m| Error::config(path, m))?;
        let mut overrides = BTreeMap::new();
        for (k, v) in obj {
            if matches!(k.as_str(), "bits" | "group_size" | "mode") {
                continue;
            }
            let p = match v {
                Value::Bool(false) => None,
                Value::Object(_) => {
                    let p = parse_params(v, Some(&global), path, k)?;
                    p.check_supported().map_err(|m| Error::config(path, format!("`quantization.{k}`: {m}")))?;
                    Some(p)
                }
                // mlx-lm writes only dicts and `false`; other scalar keys are metadata we ignore.
                _ => continue,
            };
            overrides.insert(k.clone(), p);
        }
        Ok(Some(Quantization { global, overrides }))
    }

    /// Parameters for the module at `path` (any naming prefix): its override, else the globals.
    /// None when the override says `false`.
    pub fn params_for(&self, module: &str) -> Option<QuantParams> {
        let canon = canonical(module);
        for (k, v) in &self.overrides {
            if k == module || canonical(k) == canon {
                return *v;
            }
        }
        Some(self.global)
    }

    /// Short human description, e.g. `affine 4-bit, group 64 (3 per-layer overrides)`.
    pub fn describe(&self) -> String {
        let g = &self.global;
        let mut s = format!("{} {}-bit, group {}", g.mode.as_str(), g.bits, g.group_size);
        if !self.overrides.is_empty() {
            s.push_str(&format!(" ({} per-layer overrides)", self.overrides.len()));
        }
        s
    }
}

/// Module path without a leading `model.`/`bert.`/`roberta.`/`transformer.` prefix.
fn canonical(p: &str) -> &str {
    ["model.", "bert.", "roberta.", "transformer."].iter().find_map(|x| p.strip_prefix(x)).unwrap_or(p)
}

fn parse_params(v: &Value, defaults: Option<&QuantParams>, path: &Path, key: &str) -> Result<QuantParams> {
    let bad = |m: String| Error::config(path, format!("`{key}`: {m}"));
    let bits = match v.get("bits") {
        Some(b) => b.as_u64().ok_or_else(|| bad(format!("bits must be an integer, got {b}")))? as u32,
        None => match defaults {
            Some(d) => d.bits,
            None => return Err(bad("missing `bits`".into())),
        },
    };
    let group_size = match v.get("group_size") {
        Some(g) => g.as_u64().ok_or_else(|| bad(format!("group_size must be an integer, got {g}")))? as usize,
        None => match defaults {
            Some(d) => d.group_size,
            None => return Err(bad("missing `group_size`".into())),
        },
    };
    // No `mode` means affine: checkpoints written before MLX 0.29 do not have the field.
    let mode = match v.get("mode") {
        None | Some(Value::Null) => defaults.map_or(QuantMode::Affine, |d| d.mode),
        Some(m) => {
            let s = m.as_str().ok_or_else(|| bad(format!("mode must be a string, got {m}")))?;
            QuantMode::parse(s).ok_or_else(|| {
                bad(format!("unknown quantization mode `{s}` (MLX modes: affine, mxfp4, mxfp8, nvfp4)"))
            })?
        }
    };
    Ok(QuantParams { bits, group_size, mode })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Option<Quantization>> {
        Quantization::from_config(&v, Path::new("config.json"))
    }

    #[test]
    fn global_and_overrides() {
        let q = parse(json!({"quantization": {"group_size": 64, "bits": 4,
            "model.layers.3.mlp.down_proj": {"group_size": 64, "bits": 6},
            "model.embed_tokens": {"bits": 8},
            "lm_head": false}}))
        .unwrap()
        .unwrap();
        assert_eq!(q.global, QuantParams::affine(4, 64));
        assert_eq!(q.params_for("layers.3.mlp.down_proj"), Some(QuantParams::affine(6, 64)));
        assert_eq!(q.params_for("embed_tokens"), Some(QuantParams::affine(8, 64)));
        assert_eq!(q.params_for("lm_head"), None);
        assert_eq!(q.params_for("model.layers.0.mlp.up_proj"), Some(QuantParams::affine(4, 64)));
    }

    #[test]
    fn copy_under_quantization_config_and_absent() {
        let q = parse(json!({"quantization_config": {"group_size": 32, "bits": 3, "mode": "affine"}})).unwrap();
        assert_eq!(q.unwrap().global, QuantParams::affine(3, 32));
        assert!(parse(json!({"hidden_size": 8})).unwrap().is_none());
    }

    #[test]
    fn unsupported_modes_and_values_are_named() {
        let e = parse(json!({"quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"}})).unwrap_err();
        assert!(e.to_string().contains("mxfp4"), "{e}");
        let e = parse(json!({"quantization": {"group_size": 16, "bits": 4, "mode": "nvfp4"}})).unwrap_err();
        assert!(e.to_string().contains("nvfp4"), "{e}");
        let e = parse(json!({"quantization": {"group_size": 64, "bits": 7}})).unwrap_err();
        assert!(e.to_string().contains("7 bits"), "{e}");
        let e = parse(json!({"quantization": {"group_size": 48, "bits": 4}})).unwrap_err();
        assert!(e.to_string().contains("group size 48"), "{e}");
        let e = parse(json!({"quantization": {"group_size": 64, "bits": 4, "x": {"mode": "mxfp8"}}})).unwrap_err();
        assert!(e.to_string().contains("mxfp8"), "{e}");
        let e = parse(json!({"quantization_config": {"quant_method": "awq", "bits": 4}})).unwrap_err();
        assert!(e.to_string().contains("awq"), "{e}");
    }
}
