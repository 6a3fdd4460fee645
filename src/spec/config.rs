//! config.json of the architectures we run. Values are read, never assumed; fields a family always
//! has are required and a missing one is a clear error naming the file.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

use super::keys::{self, Family, KeyAudit};
use super::rope::RopeSpec;
use crate::{Error, Result};

/// The raw config.json, kept as JSON so each architecture picks its own fields.
#[derive(Debug, Clone)]
pub struct RawConfig {
    pub value: Value,
    /// sha256 of the file's bytes (hex): a fingerprint of the config (incl. an MLX quantization entry).
    pub sha256: String,
}

impl RawConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_text(&text, path)
    }

    /// config.json's text; `path` names it in errors.
    pub fn from_text(text: &str, path: &Path) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::config(path, "expected a JSON object"));
        }
        let sha256 = sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        Ok(RawConfig { value, sha256 })
    }

    pub fn model_type(&self) -> Option<&str> {
        self.value.get("model_type").and_then(Value::as_str)
    }

    pub fn architectures(&self) -> Vec<String> {
        self.value
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    pub fn parse<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<T> {
        T::deserialize(&self.value).map_err(|e| Error::config(path, e.to_string()))
    }
}

/// Activation names as written in HF configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

fn default_gelu() -> Activation {
    Activation::Gelu
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_gelu")]
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

impl BertConfig {
    /// Parse, audit every key (refusing math we do not implement) and validate.
    pub fn read(raw: &RawConfig, path: &Path) -> Result<(Self, KeyAudit)> {
        let audit = keys::audit(Family::Bert, &raw.value, path)?;
        let c: BertConfig = raw.parse(path)?;
        c.validate(path)?;
        Ok((c, audit))
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        check_sizes(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
                ("type_vocab_size", self.type_vocab_size),
            ],
        )?;
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::config(
                path,
                format!("position_embedding_type `{}` is not supported (only absolute)", self.position_embedding_type),
            ));
        }
        Ok(())
    }
}

/// Sizes far past any real model (the largest have vocabularies of a few hundred thousand, widths
/// of tens of thousands) are refused before anything is sized from them: a corrupt or hostile
/// config.json must not make the loader allocate terabytes.
const MAX_SIZE: usize = 1 << 24;

fn check_sizes(path: &Path, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v > MAX_SIZE) {
        Some((k, v)) => {
            Err(Error::config(path, format!("{k} {v} is implausibly large (this runtime takes at most {MAX_SIZE})")))
        }
        None => Ok(()),
    }
}

fn default_rms_eps() -> f64 {
    1e-6
}

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: Option<usize>,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    /// Rotary settings from rope_parameters / rope_scaling / rope_theta (set by `Qwen3Config::read`).
    #[serde(skip)]
    pub rope: RopeSpec,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    pub pad_token_id: Option<u32>,
    pub eos_token_id: Option<Value>,
}

impl Qwen3Config {
    /// Parse, audit every key (refusing math we do not implement), read the rotary settings, validate.
    pub fn read(raw: &RawConfig, path: &Path) -> Result<(Self, KeyAudit)> {
        let audit = keys::audit(Family::Qwen3, &raw.value, path)?;
        let mut c: Qwen3Config = raw.parse(path)?;
        c.rope = RopeSpec::from_config(&raw.value, path)?;
        c.validate(path)?;
        Ok((c, audit))
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::config(path, m));
        check_sizes(
            path,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("intermediate_size", self.intermediate_size),
                ("max_position_embeddings", self.max_position_embeddings),
            ],
        )?;
        // The rotary table is sized max_position_embeddings × head_dim at load.
        if self.head_dim() > 8192 || self.max_position_embeddings.saturating_mul(self.head_dim()) > 1 << 31 {
            return bad(format!(
                "head_dim {} with max_position_embeddings {} is implausibly large",
                self.head_dim(),
                self.max_position_embeddings
            ));
        }
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return bad("num_attention_heads and num_key_value_heads must be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for rotary embeddings", self.head_dim()));
        }
        Ok(())
    }
}
