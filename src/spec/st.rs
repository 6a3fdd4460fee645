//! sentence-transformers module files: modules.json, 1_Pooling/config.json, sentence_bert_config.json,
//! config_sentence_transformers.json. All optional; each present one must be valid.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::Pooling;
use crate::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct StFiles {
    /// modules.json was present.
    pub has_modules: bool,
    /// Type names of the modules, in order (e.g. `sentence_transformers.models.Pooling`).
    pub module_types: Vec<String>,
    /// Pooling from the pooling module's config, when that file exists.
    pub pooling: Option<Pooling>,
    /// Pooling module's `include_prompt` (default true).
    pub include_prompt: bool,
    pub max_seq_length: Option<usize>,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    /// CrossEncoder activation stored by sentence-transformers, if any.
    pub activation_fn: Option<String>,
}

impl StFiles {
    pub fn has_module(&self, short: &str) -> bool {
        self.module_types.iter().any(|t| t.rsplit('.').next() == Some(short))
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    path: String,
}

pub fn read(dir: &Path) -> Result<StFiles> {
    let mut st = StFiles { include_prompt: true, ..Default::default() };
    let modules_path = dir.join("modules.json");
    let mut pooling_dir = dir.join("1_Pooling");
    if let Some(v) = read_json(&modules_path)? {
        let modules: Vec<Module> =
            serde_json::from_value(v).map_err(|e| Error::config(&modules_path, e.to_string()))?;
        st.has_modules = true;
        for m in &modules {
            if m.ty.ends_with(".Pooling") && !m.path.is_empty() {
                pooling_dir = dir.join(&m.path);
            }
        }
        st.module_types = modules.into_iter().map(|m| m.ty).collect();
    }
    let pooling_path = pooling_dir.join("config.json");
    if let Some(v) = read_json(&pooling_path)? {
        st.pooling = Some(pooling_from_config(&v).ok_or_else(|| {
            Error::config(&pooling_path, "no pooling mode set (expected pooling_mode or pooling_mode_*_token: true)")
        })?);
        if let Some(b) = v.get("include_prompt").and_then(Value::as_bool) {
            st.include_prompt = b;
        }
    }
    let sbert_path = dir.join("sentence_bert_config.json");
    if let Some(v) = read_json(&sbert_path)? {
        match v.get("max_seq_length") {
            None | Some(Value::Null) => {}
            Some(x) => {
                let n = x.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                    Error::config(&sbert_path, format!("max_seq_length must be a positive integer, got {x}"))
                })?;
                st.max_seq_length = Some(n as usize);
            }
        }
    }
    let cst_path = dir.join("config_sentence_transformers.json");
    if let Some(v) = read_json(&cst_path)? {
        if let Some(p) = v.get("prompts").and_then(Value::as_object) {
            for (k, val) in p {
                let s =
                    val.as_str().ok_or_else(|| Error::config(&cst_path, format!("prompt `{k}` is not a string")))?;
                st.prompts.insert(k.clone(), s.to_string());
            }
        }
        st.default_prompt_name = v.get("default_prompt_name").and_then(Value::as_str).map(str::to_string);
        st.activation_fn = v.get("activation_fn").and_then(Value::as_str).map(str::to_string);
    }
    Ok(st)
}

/// Pooling from a 1_Pooling/config.json: the newer `pooling_mode` string, or the boolean flags.
pub fn pooling_from_config(v: &Value) -> Option<Pooling> {
    if let Some(mode) = v.get("pooling_mode").and_then(Value::as_str) {
        return Pooling::parse(mode);
    }
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("pooling_mode_cls_token") {
        Some(Pooling::Cls)
    } else if flag("pooling_mode_lasttoken") {
        Some(Pooling::LastToken)
    } else if flag("pooling_mode_mean_tokens") {
        Some(Pooling::Mean)
    } else if flag("pooling_mode_max_tokens") {
        Some(Pooling::Max)
    } else if flag("pooling_mode_mean_sqrt_len_tokens") {
        Some(Pooling::MeanSqrtLen)
    } else {
        None
    }
}
