//! Every config.json key of the architectures we run, classified: implemented (read and used),
//! inert (cannot change a forward pass: training, generation and bookkeeping settings), or refused
//! when its value would change the math in a way we do not implement. Anything else is unknown: it
//! is listed (load log at info level, `embedrank check`) so a new key is seen, not silently ignored.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// Keys of any transformers config that cannot change an encoder's or decoder's forward pass.
const INERT_COMMON: &[&str] = &[
    "_name_or_path",
    "_attn_implementation_autoset",
    "_commit_hash",
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "cls_token_id",
    "unk_token_id",
    "mask_token_id",
    "decoder_start_token_id",
    "initializer_range",
    "initializer_factor",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "attention_dropout",
    "classifier_dropout",
    "dropout",
    "gradient_checkpointing",
    "problem_type",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "finetuning_task",
    "chunk_size_feed_forward",
    "torchscript",
    "tie_encoder_decoder",
    "use_bfloat16",
    "tf_legacy_loss",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "label_smoothing",
    "pretraining_tp",
    // Read by the spec stage (labels, cross-encoder activation, MLX quantization), not by the math here.
    "id2label",
    "label2id",
    "num_labels",
    "sentence_transformers",
    "sbert_ce_default_activation_function",
    "quantization",
    "quantization_config",
];

/// Keys the BERT forward reads.
const BERT_IMPLEMENTED: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "position_embedding_type",
];

/// BERT keys without effect on inference (old Google checkpoints' pooler settings, etc.).
const BERT_INERT: &[&str] = &[
    "pooler_fc_size",
    "pooler_num_attention_heads",
    "pooler_num_fc_layers",
    "pooler_size_per_head",
    "pooler_type",
    "directionality",
];

const QWEN3_IMPLEMENTED: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "original_max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "hidden_act",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "layer_types",
    "pad_token_id",
];

/// Which family a config is audited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Qwen3,
}

/// What the audit found besides refusals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyAudit {
    /// Keys in no list: neither used nor known to be inert.
    pub unknown: Vec<String>,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Refuse values that change the computation in ways we do not implement; list unknown keys.
pub fn audit(family: Family, cfg: &Value, path: &Path) -> Result<KeyAudit> {
    let obj = cfg.as_object().ok_or_else(|| Error::config(path, "expected a JSON object"))?;
    let refuse = |k: &str, v: &Value, why: &str| Err(Error::config(path, format!("{k}: {v} is not supported ({why})")));
    // Common keys whose non-default values change the math for every family.
    for (k, why) in [
        ("is_encoder_decoder", "encoder-decoder models are not run"),
        ("add_cross_attention", "cross-attention layers are not run"),
        ("pruned_heads", "pruned attention heads are not implemented"),
        ("is_decoder", "a causal mask on this architecture is not implemented"),
    ] {
        if let Some(v) = obj.get(k) {
            let allowed = family == Family::Qwen3 && k == "is_decoder";
            if truthy(v) && !allowed {
                return refuse(k, v, why);
            }
        }
    }
    if let Some(qc) = obj.get("quantization_config") {
        // MLX writes its `quantization` entry twice; anything else (GPTQ, AWQ, bitsandbytes, …) is a
        // weight format we do not read.
        if !qc.is_null() && obj.get("quantization") != Some(qc) {
            let method = qc.get("quant_method").and_then(Value::as_str).unwrap_or("unknown");
            return Err(Error::config(
                path,
                format!(
                    "quantization_config (quant_method `{method}`) is not supported; only MLX affine quantization is"
                ),
            ));
        }
    }
    let (implemented, inert): (&[&str], &[&str]) = match family {
        Family::Bert => (BERT_IMPLEMENTED, BERT_INERT),
        Family::Qwen3 => (QWEN3_IMPLEMENTED, &[]),
    };
    match family {
        Family::Bert => {
            if let Some(v) = obj.get("position_embedding_type") {
                if v.as_str() != Some("absolute") && !v.is_null() {
                    return refuse("position_embedding_type", v, "only `absolute` is implemented");
                }
            }
            check_act(
                obj.get("hidden_act"),
                &["gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish"],
                path,
            )?;
        }
        Family::Qwen3 => {
            check_act(obj.get("hidden_act"), &["silu", "swish"], path)?;
            let n_layers = obj.get("num_hidden_layers").and_then(Value::as_u64).unwrap_or(0) as usize;
            // transformers: the window is only real with use_sliding_window, and only on layers typed
            // `sliding_attention` (given, or from max_window_layers).
            let use_sw = obj.get("use_sliding_window").is_some_and(truthy);
            let window = obj.get("sliding_window").and_then(Value::as_u64);
            let types: Option<Vec<&str>> = match obj.get("layer_types") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => {
                    let mut t = Vec::with_capacity(a.len());
                    for x in a {
                        match x.as_str() {
                            Some(s @ ("full_attention" | "sliding_attention")) => t.push(s),
                            _ => return refuse("layer_types", x, "only full_attention and sliding_attention exist"),
                        }
                    }
                    if t.len() != n_layers {
                        return Err(Error::config(
                            path,
                            format!("layer_types has {} entries for {n_layers} layers", t.len()),
                        ));
                    }
                    Some(t)
                }
                Some(v) => return refuse("layer_types", v, "expected a list"),
            };
            // A layer typed sliding_attention without use_sliding_window makes transformers raise at
            // forward time; with it, the window is real. Neither is implemented here.
            let max_window_layers = obj.get("max_window_layers").and_then(Value::as_u64).unwrap_or(28) as usize;
            let sliding = match (&types, use_sw && window.is_some()) {
                (Some(t), _) => t.iter().filter(|s| **s == "sliding_attention").count(),
                (None, true) => n_layers.saturating_sub(max_window_layers),
                (None, false) => 0,
            };
            if sliding > 0 {
                let w = window.map_or("null".to_string(), |w| w.to_string());
                return Err(Error::config(
                    path,
                    format!(
                        "sliding_window {w} (use_sliding_window: {use_sw}) on {sliding} of {n_layers} layers is not \
                         supported: sliding-window attention is not implemented"
                    ),
                ));
            }
        }
    }
    let mut unknown = Vec::new();
    for k in obj.keys() {
        let k = k.as_str();
        if !implemented.contains(&k) && !inert.contains(&k) && !INERT_COMMON.contains(&k) {
            if matches!(k, "is_encoder_decoder" | "add_cross_attention" | "pruned_heads" | "is_decoder") {
                continue; // checked above; harmless values
            }
            unknown.push(k.to_string());
        }
    }
    Ok(KeyAudit { unknown })
}

fn check_act(v: Option<&Value>, allowed: &[&str], path: &Path) -> Result<()> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(v) => {
            Err(Error::config(path, format!("hidden_act: {v} is not supported (supported: {})", allowed.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(f: Family, v: Value) -> Result<KeyAudit> {
        audit(f, &v, Path::new("config.json"))
    }

    #[test]
    fn unknown_keys_are_listed() {
        let a = run(Family::Bert, json!({"hidden_size": 8, "fancy_new_norm": true, "dtype": "float32"})).unwrap();
        assert_eq!(a.unknown, vec!["fancy_new_norm".to_string()]);
    }

    #[test]
    fn math_changing_values_are_refused_by_name() {
        for (f, v, key) in [
            (Family::Bert, json!({"position_embedding_type": "relative_key"}), "position_embedding_type"),
            (Family::Bert, json!({"is_decoder": true}), "is_decoder"),
            (Family::Bert, json!({"hidden_act": "quick_gelu"}), "hidden_act"),
            (Family::Qwen3, json!({"hidden_act": "gelu"}), "hidden_act"),
            (
                Family::Qwen3,
                json!({"num_hidden_layers": 2, "use_sliding_window": true, "sliding_window": 4,
                                   "layer_types": ["full_attention", "sliding_attention"]}),
                "sliding_window",
            ),
            (
                Family::Qwen3,
                json!({"num_hidden_layers": 2, "use_sliding_window": true, "sliding_window": 4,
                                   "max_window_layers": 1}),
                "sliding_window",
            ),
            (Family::Qwen3, json!({"quantization_config": {"quant_method": "gptq"}}), "gptq"),
        ] {
            let e = run(f, v).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn inactive_sliding_window_loads() {
        // The official Qwen3-Embedding configs: sliding_window set, but use_sliding_window false.
        let a = run(
            Family::Qwen3,
            json!({"num_hidden_layers": 2, "use_sliding_window": false, "sliding_window": 32768,
                                           "max_window_layers": 1}),
        );
        assert!(a.unwrap().unknown.is_empty());
        // MLX's duplicated quantization entry.
        let q = json!({"group_size": 64, "bits": 4});
        assert!(run(Family::Qwen3, json!({"quantization": q, "quantization_config": q})).is_ok());
    }
}

#[cfg(test)]
mod doc_drift {
    use super::*;

    /// docs/models.md lists exactly the keys the code classifies.
    #[test]
    fn models_md_matches_the_key_lists() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/models.md")).unwrap();
        let row = |label: &str| -> Vec<String> {
            let line =
                doc.lines().find(|l| l.starts_with(&format!("| {label} |"))).unwrap_or_else(|| panic!("row {label}"));
            line.split('`').skip(1).step_by(2).map(str::to_string).collect()
        };
        let want = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(row("BERT, implemented"), want(BERT_IMPLEMENTED));
        assert_eq!(row("BERT, inert"), want(BERT_INERT));
        assert_eq!(row("Qwen3, implemented"), want(QWEN3_IMPLEMENTED));
        assert_eq!(row("every architecture, inert"), want(INERT_COMMON));
    }
}
