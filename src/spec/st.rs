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
    /// sentence-transformers 6 CrossEncoder over a causal LM: `LogitScore` (true token, false token).
    pub logit_score: Option<(u32, u32)>,
}

/// Module classes whose computation we implement (the last part of the `type`, which moved between
/// packages across sentence-transformers releases: `…models.Pooling` in 2.x–5.x,
/// `…sentence_transformer.modules.pooling.Pooling` in 6.x).
const KNOWN_MODULES: &[&str] = &["Transformer", "Pooling", "Normalize", "LogitScore"];

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
            let short = m.ty.rsplit('.').next().unwrap_or(&m.ty);
            if !KNOWN_MODULES.contains(&short) {
                // A Dense projection, a LayerNorm, a Router, … changes the output; skipping it would
                // give vectors that look fine and are wrong.
                return Err(Error::config(
                    &modules_path,
                    format!(
                        "sentence-transformers module `{}` is not supported (supported: {})",
                        m.ty,
                        KNOWN_MODULES.join(", ")
                    ),
                ));
            }
            if short == "Pooling" && !m.path.is_empty() {
                pooling_dir = dir.join(&m.path);
            }
            if short == "LogitScore" {
                st.logit_score = Some(read_logit_score(&dir.join(&m.path).join("config.json"))?);
            }
        }
        st.module_types = modules.into_iter().map(|m| m.ty).collect();
    }
    let pooling_path = pooling_dir.join("config.json");
    if let Some(v) = read_json(&pooling_path)? {
        st.pooling = Some(pooling_from_config(&v).map_err(|m| Error::config(&pooling_path, m))?);
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

fn read_logit_score(path: &Path) -> Result<(u32, u32)> {
    let v = read_json(path)?.ok_or_else(|| Error::config(path, "the LogitScore module's config.json is missing"))?;
    let id = |k: &str| v.get(k).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok());
    let t = id("true_token_id").ok_or_else(|| Error::config(path, "LogitScore needs an integer true_token_id"))?;
    let f = id("false_token_id").ok_or_else(|| {
        Error::config(path, "LogitScore without false_token_id (a single-token logit score) is not supported")
    })?;
    match v.get("module_input_name").and_then(Value::as_str) {
        None | Some("causal_logits") => Ok((t, f)),
        Some(other) => Err(Error::config(path, format!("LogitScore module_input_name `{other}` is not supported"))),
    }
}

/// Pooling from a 1_Pooling/config.json: the newer `pooling_mode` string, or the boolean flags.
/// Several modes at once (sentence-transformers concatenates them) and weighted-mean pooling are
/// refused by name, never reduced to one mode.
pub fn pooling_from_config(v: &Value) -> std::result::Result<Pooling, String> {
    if let Some(mode) = v.get("pooling_mode").and_then(Value::as_str) {
        return Pooling::parse(mode).ok_or_else(|| format!("pooling_mode `{mode}` is not supported"));
    }
    const FLAGS: &[(&str, Option<Pooling>)] = &[
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_lasttoken", Some(Pooling::LastToken)),
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        ("pooling_mode_mean_sqrt_len_tokens", Some(Pooling::MeanSqrtLen)),
        ("pooling_mode_weightedmean_tokens", None),
    ];
    let set: Vec<&(&str, Option<Pooling>)> =
        FLAGS.iter().filter(|(k, _)| v.get(*k).and_then(Value::as_bool).unwrap_or(false)).collect();
    match set.as_slice() {
        [] => Err("no pooling mode set (expected pooling_mode or pooling_mode_*_token: true)".into()),
        [(_, Some(p))] => Ok(*p),
        [(k, None)] => Err(format!("{k}: true is not supported (weighted-mean pooling is not implemented)")),
        many => Err(format!(
            "several pooling modes at once ({}) are not supported (sentence-transformers would concatenate them)",
            many.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pooling_modes() {
        assert_eq!(pooling_from_config(&json!({"pooling_mode_mean_tokens": true})), Ok(Pooling::Mean));
        assert_eq!(pooling_from_config(&json!({"pooling_mode": "lasttoken"})), Ok(Pooling::LastToken));
        let e = pooling_from_config(&json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}));
        assert!(e.unwrap_err().contains("pooling_mode_cls_token"));
        let e = pooling_from_config(&json!({"pooling_mode_weightedmean_tokens": true}));
        assert!(e.unwrap_err().contains("weightedmean"));
    }

    #[test]
    fn unknown_modules_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.base.modules.transformer.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
                {"idx":2,"name":"2","path":"2_Dense","type":"sentence_transformers.base.modules.dense.Dense"}]"#,
        )
        .unwrap();
        let e = read(d.path()).unwrap_err().to_string();
        assert!(e.contains("sentence_transformers.base.modules.dense.Dense"), "{e}");
    }
}
