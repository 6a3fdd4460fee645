//! Seeded random-weight checkpoints from a config.json: tiny models for golden tests (the Python
//! reference loads the very same files) and full-size shapes (Qwen3-Embedding 0.6B/4B/8B) for load
//! and memory tests. Deterministic: a tensor's values depend only on the seed and its name.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::{Error, Result};

/// Tensor naming of the written checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `model.layers.N…` (Qwen3ForCausalLM / SequenceClassification) or `bert.…` (BERT heads).
    Prefixed,
    /// `layers.N…` (the official Qwen3-Embedding uploads) or bare BertModel names.
    Flat,
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub seed: u64,
    /// Spread of matrix weights (uniform in ±scale·√3, i.e. this standard deviation).
    pub std: f32,
    pub dtype: DType,
    pub naming: Naming,
}

/// SplitMix64: tiny, fast and reproducible everywhere (no dependency on an RNG crate's stream).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[derive(Clone, Copy)]
enum Init {
    /// centre ± spread
    Uniform { centre: f32, spread: f32 },
}

fn tensor(name: &str, shape: &[usize], init: Init, opts: &SynthOptions) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut rng = Rng(name_seed(opts.seed, name));
    let Init::Uniform { centre, spread } = init;
    let data: Vec<f32> = (0..n).map(|_| centre + spread * rng.unit()).collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(opts.dtype)?)
}

/// Write a safetensors file one tensor at a time, so an 8B-parameter checkpoint never needs its
/// whole size in memory.
fn write_streaming(path: &Path, tensors: &[(String, Vec<usize>, Init)], opts: &SynthOptions) -> Result<()> {
    use std::io::Write;
    let (dtype_name, elem) = match opts.dtype {
        DType::F32 => ("F32", 4usize),
        DType::BF16 => ("BF16", 2),
        DType::F16 => ("F16", 2),
        other => return Err(Error::InvalidInput(format!("synth: unsupported dtype {other:?}"))),
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, shape, _) in tensors {
        let n: usize = shape.iter().product::<usize>() * elem;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype_name, "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::InvalidInput(e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let io = |e| Error::io(path, e);
    w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&h).map_err(io)?;
    for (name, shape, init) in tensors {
        let t = tensor(name, shape, *init, opts)?.flatten_all()?;
        let bytes: Vec<u8> = match opts.dtype {
            DType::F32 => t.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::BF16 => t.to_vec1::<half::bf16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => t.to_vec1::<half::f16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        w.write_all(&bytes).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}

fn usize_field(cfg: &Value, k: &str, path: &Path) -> Result<usize> {
    cfg.get(k).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| Error::config(path, format!("missing {k}")))
}

/// Write `config` as config.json plus random weights as model.safetensors into `dir`.
pub fn write_checkpoint(dir: &Path, config: &Value, opts: &SynthOptions) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg_path = dir.join("config.json");
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
    let arch = config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("").to_string();
    let w = opts.std * 3f32.sqrt();
    let mat = Init::Uniform { centre: 0.0, spread: w };
    let norm = Init::Uniform { centre: 1.0, spread: 0.1 };
    let small = Init::Uniform { centre: 0.0, spread: 0.05 };
    let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let f = |k: &str| usize_field(config, k, &cfg_path);
    match model_type {
        "qwen3" => {
            let (h, l, nh, nkv, inter, vocab) = (
                f("hidden_size")?,
                f("num_hidden_layers")?,
                f("num_attention_heads")?,
                f("num_key_value_heads")?,
                f("intermediate_size")?,
                f("vocab_size")?,
            );
            let hd = config.get("head_dim").and_then(Value::as_u64).map_or(h / nh, |v| v as usize);
            let p = if opts.naming == Naming::Prefixed { "model." } else { "" };
            t.push((format!("{p}embed_tokens.weight"), vec![vocab, h], mat));
            for i in 0..l {
                let q = format!("{p}layers.{i}");
                t.push((format!("{q}.input_layernorm.weight"), vec![h], norm));
                t.push((format!("{q}.post_attention_layernorm.weight"), vec![h], norm));
                t.push((format!("{q}.self_attn.q_proj.weight"), vec![nh * hd, h], mat));
                t.push((format!("{q}.self_attn.k_proj.weight"), vec![nkv * hd, h], mat));
                t.push((format!("{q}.self_attn.v_proj.weight"), vec![nkv * hd, h], mat));
                t.push((format!("{q}.self_attn.o_proj.weight"), vec![h, nh * hd], mat));
                t.push((format!("{q}.self_attn.q_norm.weight"), vec![hd], norm));
                t.push((format!("{q}.self_attn.k_norm.weight"), vec![hd], norm));
                t.push((format!("{q}.mlp.gate_proj.weight"), vec![inter, h], mat));
                t.push((format!("{q}.mlp.up_proj.weight"), vec![inter, h], mat));
                t.push((format!("{q}.mlp.down_proj.weight"), vec![h, inter], mat));
            }
            t.push((format!("{p}norm.weight"), vec![h], norm));
            let tied = config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
            if arch.ends_with("ForSequenceClassification") {
                t.push(("score.weight".into(), vec![1, h], mat));
            } else if arch.ends_with("ForCausalLM") && !tied {
                t.push(("lm_head.weight".into(), vec![vocab, h], mat));
            }
        }
        "bert" => {
            let (h, l, inter, vocab, pos) = (
                f("hidden_size")?,
                f("num_hidden_layers")?,
                f("intermediate_size")?,
                f("vocab_size")?,
                f("max_position_embeddings")?,
            );
            let types = config.get("type_vocab_size").and_then(Value::as_u64).unwrap_or(2) as usize;
            let seq_cls = arch.ends_with("ForSequenceClassification");
            let p = if seq_cls || opts.naming == Naming::Prefixed { "bert." } else { "" };
            let lin = |t: &mut Vec<(String, Vec<usize>, Init)>, name: String, o: usize, i: usize| {
                t.push((format!("{name}.weight"), vec![o, i], mat));
                t.push((format!("{name}.bias"), vec![o], small));
            };
            let ln = |t: &mut Vec<(String, Vec<usize>, Init)>, name: String| {
                t.push((format!("{name}.weight"), vec![h], norm));
                t.push((format!("{name}.bias"), vec![h], small));
            };
            t.push((format!("{p}embeddings.word_embeddings.weight"), vec![vocab, h], mat));
            t.push((format!("{p}embeddings.position_embeddings.weight"), vec![pos, h], mat));
            t.push((format!("{p}embeddings.token_type_embeddings.weight"), vec![types, h], mat));
            ln(&mut t, format!("{p}embeddings.LayerNorm"));
            for i in 0..l {
                let q = format!("{p}encoder.layer.{i}");
                lin(&mut t, format!("{q}.attention.self.query"), h, h);
                lin(&mut t, format!("{q}.attention.self.key"), h, h);
                lin(&mut t, format!("{q}.attention.self.value"), h, h);
                lin(&mut t, format!("{q}.attention.output.dense"), h, h);
                ln(&mut t, format!("{q}.attention.output.LayerNorm"));
                lin(&mut t, format!("{q}.intermediate.dense"), inter, h);
                lin(&mut t, format!("{q}.output.dense"), h, inter);
                ln(&mut t, format!("{q}.output.LayerNorm"));
            }
            lin(&mut t, format!("{p}pooler.dense"), h, h);
            if seq_cls {
                let labels = config.get("id2label").and_then(Value::as_object).map_or(1, |m| m.len().max(1));
                lin(&mut t, "classifier".into(), labels, h);
            }
        }
        other => {
            return Err(Error::UnsupportedArchitecture {
                path: cfg_path,
                arch: other.to_string(),
                supported: "bert, qwen3".into(),
            })
        }
    }
    let text = serde_json::to_string_pretty(config).map_err(|e| Error::config(&cfg_path, e.to_string()))?;
    std::fs::write(&cfg_path, text).map_err(|e| Error::io(&cfg_path, e))?;
    let st = dir.join("model.safetensors");
    let tmp = dir.join("model.safetensors.partial");
    write_streaming(&tmp, &t, opts)?;
    std::fs::rename(&tmp, &st).map_err(|e| Error::io(&st, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_name() {
        let o = SynthOptions { seed: 7, std: 0.1, dtype: DType::F32, naming: Naming::Flat };
        let init = Init::Uniform { centre: 0.0, spread: 1.0 };
        let a = tensor("x", &[4, 3], init, &o).unwrap().to_vec2::<f32>().unwrap();
        let b = tensor("x", &[4, 3], init, &o).unwrap().to_vec2::<f32>().unwrap();
        let c = tensor("y", &[4, 3], init, &o).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().flatten().all(|v| v.abs() <= 1.0));
    }
}

/// The tiny test models of the golden tests (recipes: configs below, seed 42). Their reference
/// outputs come from transformers / sentence-transformers (scripts/reference/tiny_golden.py) run
/// on exactly these files.
pub mod tiny {
    use std::path::Path;

    use candle_core::DType;
    use serde_json::{json, Value};

    use super::{write_checkpoint, Naming, SynthOptions};
    use crate::{Error, Result};

    pub const SEED: u64 = 42;
    pub const QWEN3_EMBED: &str = "tiny-qwen3-embedding";
    pub const QWEN3_EMBED_EOS: &str = "tiny-qwen3-embedding-eos-template";
    pub const QWEN3_RERANKER: &str = "tiny-Qwen3-Reranker";
    pub const QWEN3_SEQ_CLS: &str = "tiny-qwen3-reranker-seq-cls";
    pub const BERT_CROSS_ENCODER: &str = "tiny-bert-cross-encoder";

    fn qwen3_config(arch: &str, tie: bool) -> Value {
        json!({
            "architectures": [arch],
            "model_type": "qwen3",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 128,
            "vocab_size": 151669,
            "max_position_embeddings": 512,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": tie,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "use_sliding_window": false,
            "sliding_window": null,
            "max_window_layers": 2,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "pad_token_id": 151643,
            "torch_dtype": "float32"
        })
    }

    fn write_json(path: &Path, v: &Value) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let s = serde_json::to_string_pretty(v).map_err(|e| Error::config(path, e.to_string()))?;
        std::fs::write(path, s).map_err(|e| Error::io(path, e))
    }

    /// sentence-transformers' modules.json of an embedder: Transformer, Pooling, Normalize.
    fn write_st_modules(d: &Path) -> Result<()> {
        write_json(
            &d.join("modules.json"),
            &json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            ]),
        )
    }

    fn copy(from: &Path, to: &Path) -> Result<()> {
        std::fs::copy(from, to).map(|_| ()).map_err(|e| Error::io(from, e))
    }

    /// Write every tiny model under `out`. `qwen3_tok` holds the real Qwen3 tokenizer.json and
    /// tokenizer_config.json; `minilm` is the MiniLM snapshot (for its BERT tokenizer files).
    pub fn write_all(out: &Path, qwen3_tok: &Path, minilm: &Path) -> Result<()> {
        let opts = |naming| SynthOptions { seed: SEED, std: 0.1, dtype: DType::F32, naming };

        // Qwen3 embedder, official Qwen3-Embedding layout (flat names) with sentence-transformers files.
        for (name, eos_template) in [(QWEN3_EMBED, false), (QWEN3_EMBED_EOS, true)] {
            let d = out.join(name);
            write_checkpoint(&d, &qwen3_config("Qwen3ForCausalLM", true), &opts(Naming::Flat))?;
            copy(&qwen3_tok.join("tokenizer_config.json"), &d.join("tokenizer_config.json"))?;
            if eos_template {
                // The fixed upstream tokenizer: a template that appends <|endoftext|> itself.
                let text = std::fs::read_to_string(qwen3_tok.join("tokenizer.json"))
                    .map_err(|e| Error::io(qwen3_tok.join("tokenizer.json"), e))?;
                let mut tok: Value = serde_json::from_str(&text)
                    .map_err(|e| Error::config(qwen3_tok.join("tokenizer.json"), e.to_string()))?;
                tok["post_processor"] = json!({
                    "type": "Sequence",
                    "processors": [
                        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
                        {"type": "TemplateProcessing",
                         "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
                         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                  {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
                         "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [151643], "tokens": ["<|endoftext|>"]}}}
                    ]
                });
                write_json(&d.join("tokenizer.json"), &tok)?;
            } else {
                copy(&qwen3_tok.join("tokenizer.json"), &d.join("tokenizer.json"))?;
            }
            write_st_modules(&d)?;
            write_json(
                &d.join("1_Pooling/config.json"),
                &json!({"word_embedding_dimension": 64, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false,
                        "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false,
                        "pooling_mode_weightedmean_tokens": false, "pooling_mode_lasttoken": true, "include_prompt": true}),
            )?;
            write_json(&d.join("sentence_bert_config.json"), &json!({"max_seq_length": 48, "do_lower_case": false}))?;
            write_json(
                &d.join("config_sentence_transformers.json"),
                &json!({"prompts": {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:", "document": ""},
                        "default_prompt_name": null, "similarity_fn_name": "cosine"}),
            )?;
        }

        // Qwen3-Reranker (CausalLM, untied lm_head, `model.` names).
        let d = out.join(QWEN3_RERANKER);
        write_checkpoint(&d, &qwen3_config("Qwen3ForCausalLM", false), &opts(Naming::Prefixed))?;
        copy(&qwen3_tok.join("tokenizer.json"), &d.join("tokenizer.json"))?;
        copy(&qwen3_tok.join("tokenizer_config.json"), &d.join("tokenizer_config.json"))?;

        // Qwen3ForSequenceClassification, one label.
        let d = out.join(QWEN3_SEQ_CLS);
        let mut cfg = qwen3_config("Qwen3ForSequenceClassification", true);
        cfg["id2label"] = json!({"0": "LABEL_0"});
        cfg["label2id"] = json!({"LABEL_0": 0});
        write_checkpoint(&d, &cfg, &opts(Naming::Prefixed))?;
        copy(&qwen3_tok.join("tokenizer.json"), &d.join("tokenizer.json"))?;
        copy(&qwen3_tok.join("tokenizer_config.json"), &d.join("tokenizer_config.json"))?;

        write_bert_cross_encoder(&out.join(BERT_CROSS_ENCODER), minilm, [32, 2, 4, 64])
    }

    /// The shape of cross-encoder/ms-marco-MiniLM-L6-v2 (the common CPU reranker): for load and
    /// latency measurements, where the cost per token matters and the scores do not.
    pub const MINILM_SHAPE_CROSS_ENCODER: [usize; 4] = [384, 6, 12, 1536];

    fn bert_config(arch: &str, [hidden, layers, heads, intermediate]: [usize; 4]) -> Value {
        json!({
            "architectures": [arch],
            "model_type": "bert",
            "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": intermediate,
            "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2, "vocab_size": 30522,
            "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute",
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02
        })
    }

    fn write_bert(d: &Path, minilm: &Path, cfg: &Value) -> Result<()> {
        let opts = SynthOptions { seed: SEED, std: 0.1, dtype: DType::F32, naming: Naming::Prefixed };
        write_checkpoint(d, cfg, &opts)?;
        for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"] {
            copy(&minilm.join(f), &d.join(f))?;
        }
        Ok(())
    }

    /// A BertForSequenceClassification reranker (one label) of `[hidden, layers, heads,
    /// intermediate]` with seeded random weights and MiniLM's (uncased WordPiece) tokenizer files.
    pub fn write_bert_cross_encoder(d: &Path, minilm: &Path, shape: [usize; 4]) -> Result<()> {
        let mut cfg = bert_config("BertForSequenceClassification", shape);
        cfg["id2label"] = json!({"0": "LABEL_0"});
        cfg["label2id"] = json!({"LABEL_0": 0});
        write_bert(d, minilm, &cfg)
    }

    /// A BertModel embedder of `shape` as sentence-transformers saves one (mean pooling, then
    /// Normalize), with MiniLM's tokenizer files; for the fuzz harness, where a forward pass
    /// must cost microseconds.
    pub fn write_bert_embedder(d: &Path, minilm: &Path, shape: [usize; 4]) -> Result<()> {
        write_bert(d, minilm, &bert_config("BertModel", shape))?;
        write_st_modules(d)?;
        write_json(
            &d.join("1_Pooling/config.json"),
            &json!({"word_embedding_dimension": shape[0], "pooling_mode_cls_token": false,
                    "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                    "pooling_mode_mean_sqrt_len_tokens": false}),
        )?;
        write_json(&d.join("sentence_bert_config.json"), &json!({"max_seq_length": 128, "do_lower_case": false}))
    }
}
