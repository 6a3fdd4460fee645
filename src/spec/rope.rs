//! Rotary position settings, read the way transformers 5 reads them: `rope_parameters` (5.x), the
//! older `rope_scaling` (which wins when both are set, as in transformers) and top-level `rope_theta`
//! / `partial_rotary_factor`. Every rope type real embedding checkpoints use is implemented; any other
//! is refused by name, never replaced by the default in silence.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// transformers' `PreTrainedConfig.default_theta`.
pub const DEFAULT_THETA: f64 = 10_000.0;

/// How the inverse frequencies are derived from the plain ones.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: only changes the base past `max_position_embeddings`, which this runtime never
    /// reaches (sequences are capped there), so it computes as `Default`.
    Dynamic {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_max: f64,
        beta_fast: f64,
        beta_slow: f64,
        truncate: bool,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: f64,
    },
}

/// Everything the rotary table needs, decided once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// Multiplies cos and sin (YaRN's attention factor; 1 otherwise).
    pub attention_factor: f64,
}

impl Default for RopeSpec {
    fn default() -> Self {
        RopeSpec { theta: DEFAULT_THETA, scaling: RopeScaling::Default, attention_factor: 1.0 }
    }
}

/// Keys inside a rope dict that this module reads (anything else there is refused: it would be math
/// we do not do).
const KNOWN_PARAM_KEYS: &[&str] = &[
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "partial_rotary_factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "truncate",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "low_freq_factor",
    "high_freq_factor",
];

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

impl RopeSpec {
    /// Read from a config.json object. `layer_types` names the nested per-layer-type dicts transformers
    /// may write; every layer this runtime runs is full attention, so only that entry applies.
    pub fn from_config(cfg: &Value, path: &Path) -> Result<RopeSpec> {
        let bad = |m: String| Error::config(path, m);
        let top_theta = match cfg.get("rope_theta") {
            None | Some(Value::Null) => None,
            Some(v) => Some(num(v).ok_or_else(|| bad(format!("rope_theta must be a number, got {v}")))?),
        };
        // transformers: `rope_scaling or rope_parameters`.
        let pick = |k: &str| cfg.get(k).and_then(Value::as_object).filter(|m| !m.is_empty());
        let (key, params) = match (pick("rope_scaling"), pick("rope_parameters")) {
            (Some(m), _) => ("rope_scaling", Some(m)),
            (None, Some(m)) => ("rope_parameters", Some(m)),
            (None, None) => ("rope_parameters", None),
        };
        for k in ["rope_scaling", "rope_parameters"] {
            if let Some(v) = cfg.get(k) {
                if !v.is_null() && !v.is_object() {
                    return Err(bad(format!("{k} must be an object, got {v}")));
                }
            }
        }
        let empty = Map::new();
        let mut params = params.unwrap_or(&empty);
        // Nested by layer type (transformers 5 for models with several attention kinds).
        let layer_types: Vec<&str> = cfg
            .get("layer_types")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let nested: Vec<&String> = params.keys().filter(|k| layer_types.contains(&k.as_str())).collect();
        if !nested.is_empty() {
            let Some(full) = params.get("full_attention").and_then(Value::as_object) else {
                return Err(bad(format!(
                    "{key} is nested by layer type ({}) without a `full_attention` entry",
                    nested.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            params = full;
        }
        for k in params.keys() {
            if !KNOWN_PARAM_KEYS.contains(&k.as_str()) {
                return Err(bad(format!("{key}.{k} is not supported (it would change the rotary embedding)")));
            }
        }
        let get = |k: &str| -> Result<Option<f64>> {
            match params.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => num(v).map(Some).ok_or_else(|| bad(format!("{key}.{k} must be a number, got {v}"))),
            }
        };
        let theta = get("rope_theta")?.or(top_theta).unwrap_or(DEFAULT_THETA);
        if theta <= 1.0 {
            return Err(bad(format!("rope theta must be greater than 1, got {theta}")));
        }
        let partial = get("partial_rotary_factor")?.or(match cfg.get("partial_rotary_factor") {
            None | Some(Value::Null) => None,
            Some(v) => Some(num(v).ok_or_else(|| bad(format!("partial_rotary_factor must be a number, got {v}")))?),
        });
        if let Some(p) = partial {
            if p != 1.0 {
                return Err(bad(format!("partial_rotary_factor {p} is not supported (only 1.0)")));
            }
        }
        let rope_type =
            params.get("rope_type").or_else(|| params.get("type")).and_then(Value::as_str).unwrap_or("default");
        let factor = |what: &str| -> Result<f64> {
            let f = get("factor")?.ok_or_else(|| bad(format!("{key}: rope type `{what}` needs `factor`")))?;
            if f < 1.0 {
                return Err(bad(format!("{key}.factor must be at least 1, got {f}")));
            }
            Ok(f)
        };
        // transformers: the top-level field wins (Phi-3 style), then the dict's, then max_position_embeddings.
        let original_max = || -> Result<f64> {
            let top = cfg.get("original_max_position_embeddings").and_then(num);
            let v = match top {
                Some(v) => Some(v),
                None => get("original_max_position_embeddings")?,
            };
            let v = v.or_else(|| cfg.get("max_position_embeddings").and_then(num)).ok_or_else(|| {
                bad(format!("{key}: original_max_position_embeddings or max_position_embeddings is required"))
            })?;
            if v < 1.0 {
                return Err(bad(format!("original_max_position_embeddings must be positive, got {v}")));
            }
            Ok(v)
        };
        let unused = |keys: &[&str]| -> Result<()> {
            for k in keys {
                if params.get(*k).is_some_and(|v| !v.is_null()) {
                    return Err(bad(format!("{key}.{k} is not used by rope type `{rope_type}`; refusing to guess")));
                }
            }
            Ok(())
        };
        let mut attention_factor = 1.0;
        let scaling = match rope_type {
            "default" => {
                unused(&[
                    "factor",
                    "low_freq_factor",
                    "high_freq_factor",
                    "attention_factor",
                    "mscale",
                    "mscale_all_dim",
                ])?;
                RopeScaling::Default
            }
            "linear" => RopeScaling::Linear { factor: factor("linear")? },
            "dynamic" => RopeScaling::Dynamic { factor: factor("dynamic")? },
            "yarn" => {
                let omax = original_max()?;
                // transformers: a missing factor is max_position_embeddings / original (DeepSeek-V3 style).
                let f = match get("factor")? {
                    Some(f) => f,
                    None => {
                        let mp = cfg.get("max_position_embeddings").and_then(num).unwrap_or(omax);
                        mp / omax
                    }
                };
                let mscale_of = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
                attention_factor = match get("attention_factor")? {
                    Some(a) => a,
                    None => match (get("mscale")?, get("mscale_all_dim")?) {
                        (Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => mscale_of(f, m) / mscale_of(f, ma),
                        _ => mscale_of(f, 1.0),
                    },
                };
                let or = |v: Option<f64>, d: f64| v.filter(|x| *x != 0.0).unwrap_or(d);
                let truncate = match params.get("truncate") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => return Err(bad(format!("{key}.truncate must be a boolean, got {v}"))),
                };
                RopeScaling::Yarn {
                    factor: f,
                    original_max: omax,
                    beta_fast: or(get("beta_fast")?, 32.0),
                    beta_slow: or(get("beta_slow")?, 1.0),
                    truncate,
                }
            }
            "llama3" => {
                let need = |k: &str| -> Result<f64> {
                    get(k)?.ok_or_else(|| bad(format!("{key}: rope type `llama3` needs `{k}`")))
                };
                let (lo, hi) = (need("low_freq_factor")?, need("high_freq_factor")?);
                if hi <= lo {
                    return Err(bad(format!("{key}: high_freq_factor {hi} must exceed low_freq_factor {lo}")));
                }
                RopeScaling::Llama3 {
                    factor: factor("llama3")?,
                    low_freq_factor: lo,
                    high_freq_factor: hi,
                    original_max: original_max()?,
                }
            }
            other => {
                return Err(bad(format!(
                    "{key}.rope_type `{other}` is not supported (supported: default, linear, dynamic, yarn, llama3)"
                )))
            }
        };
        Ok(RopeSpec { theta, scaling, attention_factor })
    }

    /// Inverse frequencies for `head_dim` (length head_dim/2), as transformers computes them (f32
    /// arithmetic where transformers uses it, so the tables agree to the last bits that matter).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let dim = head_dim as f64;
        let half = head_dim / 2;
        let plain: Vec<f64> = (0..half).map(|i| 1.0 / (self.theta.powf(2.0 * i as f64 / dim) as f32) as f64).collect();
        let out: Vec<f64> = match &self.scaling {
            RopeScaling::Default | RopeScaling::Dynamic { .. } => plain,
            RopeScaling::Linear { factor } => plain.iter().map(|f| f / factor).collect(),
            RopeScaling::Yarn { factor, original_max, beta_fast, beta_slow, truncate } => {
                let corr =
                    |rot: f64| dim * (original_max / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * self.theta.ln());
                let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let mut high = high.min(dim - 1.0);
                if low == high {
                    high += 0.001;
                }
                plain
                    .iter()
                    .enumerate()
                    .map(|(i, &extra)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        let inter = extra / factor;
                        inter * (1.0 - extrapolation) + extra * extrapolation
                    })
                    .collect()
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
                let low_wavelen = original_max / low_freq_factor;
                let high_wavelen = original_max / high_freq_factor;
                plain
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth =
                                (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        out.into_iter().map(|x| x as f32).collect()
    }

    /// One line for logs and `check`.
    pub fn describe(&self) -> String {
        let s = match &self.scaling {
            RopeScaling::Default => "default".to_string(),
            RopeScaling::Linear { factor } => format!("linear ×{factor}"),
            RopeScaling::Dynamic { factor } => format!("dynamic ×{factor}"),
            RopeScaling::Yarn { factor, original_max, .. } => format!("yarn ×{factor} from {original_max}"),
            RopeScaling::Llama3 { factor, original_max, .. } => format!("llama3 ×{factor} from {original_max}"),
        };
        format!("rope {s}, theta {}", self.theta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<RopeSpec> {
        RopeSpec::from_config(&v, Path::new("config.json"))
    }

    #[test]
    fn transformers5_rope_parameters_theta() {
        let s = spec(json!({"rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}})).unwrap();
        assert_eq!(s.theta, 1e6);
        assert_eq!(s.scaling, RopeScaling::Default);
        // Older layout, same answer.
        assert_eq!(spec(json!({"rope_theta": 1000000.0, "rope_scaling": null})).unwrap(), s);
        // Nothing given: transformers' default theta.
        assert_eq!(spec(json!({})).unwrap().theta, DEFAULT_THETA);
    }

    #[test]
    fn rope_scaling_wins_over_rope_parameters() {
        let s = spec(json!({"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0},
                             "rope_parameters": {"rope_type": "default", "rope_theta": 7.0}}))
        .unwrap();
        assert_eq!(s.scaling, RopeScaling::Linear { factor: 2.0 });
        assert_eq!(s.theta, 5e5);
    }

    #[test]
    fn refusals_name_the_key_and_value() {
        let e = spec(json!({"rope_parameters": {"rope_type": "longrope", "long_factor": [1.0]}})).unwrap_err();
        assert!(e.to_string().contains("long_factor"), "{e}");
        let e = spec(json!({"rope_parameters": {"rope_type": "longrope"}})).unwrap_err();
        assert!(e.to_string().contains("longrope"), "{e}");
        let e = spec(json!({"rope_parameters": {"rope_type": "mrope", "mrope_section": [1]}})).unwrap_err();
        assert!(e.to_string().contains("mrope_section"), "{e}");
        let e = spec(json!({"partial_rotary_factor": 0.5})).unwrap_err();
        assert!(e.to_string().contains("partial_rotary_factor"), "{e}");
        let e = spec(json!({"rope_parameters": {"rope_type": "default", "factor": 4.0}})).unwrap_err();
        assert!(e.to_string().contains("factor"), "{e}");
    }

    #[test]
    fn yarn_and_llama3_tables() {
        let hd = 16;
        let s = spec(json!({"max_position_embeddings": 128, "rope_parameters":
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 1e6}}))
        .unwrap();
        assert!((s.attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
        let plain = RopeSpec { theta: 1e6, ..Default::default() }.inv_freq(hd);
        let y = s.inv_freq(hd);
        // Highest frequencies extrapolate (unchanged), lowest interpolate (÷ factor).
        assert_eq!(y[0], plain[0]);
        assert!((y[7] - plain[7] / 4.0).abs() <= plain[7] * 1e-6);
        let l = spec(json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 1e6}}))
        .unwrap();
        let li = l.inv_freq(hd);
        assert_eq!(li[0], plain[0]);
        assert!((li[7] - plain[7] / 8.0).abs() <= plain[7] * 1e-6);
        assert_eq!(l.attention_factor, 1.0);
    }
}
