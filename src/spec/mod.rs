//! Spec stage: read a model folder's files once and decide everything model-specific: architecture,
//! task, pooling, prompts, normalization, max length, padding side. Later stages read only the spec.

pub mod config;
pub mod keys;
pub mod quant;
pub mod rope;
pub mod st;
pub mod weights_index;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use config::{Activation, BertConfig, Qwen3Config, RawConfig};
pub use quant::{QuantMode, QuantParams, Quantization};

use crate::source::ResolvedModel;
use crate::{Error, Result};
use keys::KeyAudit;

/// The Qwen3-Embedding model card's default retrieval task.
pub const QWEN3_DEFAULT_TASK: &str = "Given a web search query, retrieve relevant passages that answer the query";
/// Qwen3-Embedding query template (`{task}` is the instruction); no space after `Query:`.
pub const QWEN3_QUERY_TEMPLATE: &str = "Instruct: {task}\nQuery:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Embed,
    Rerank,
}

/// `embedrank.json`, written by `embedrank convert` next to its output: the task the source was
/// taken as. A Qwen3-Reranker is known by its name alone (same architecture and files as
/// Qwen3-Embedding), which a converted copy in a folder of another name would lose.
pub const RECORD_FILE: &str = "embedrank.json";

fn recorded_task(dir: &Path) -> Result<Option<Task>> {
    let path = dir.join(RECORD_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::config(&path, format!("not valid JSON: {e}")))?;
    match v.get("task") {
        None => Ok(None),
        Some(t) => t
            .as_str()
            .and_then(Task::parse)
            .map(Some)
            .ok_or_else(|| Error::config(&path, format!("task must be \"embed\" or \"rerank\", got {t}"))),
    }
}

impl Task {
    /// The name `embedrank.json` and `--task` use.
    pub fn key(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Rerank => "rerank",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Embed => "an embedding model",
            Task::Rerank => "a reranker",
        }
    }
    pub fn parse(s: &str) -> Option<Task> {
        match s {
            "embed" | "embedding" => Some(Task::Embed),
            "rerank" | "reranker" => Some(Task::Rerank),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Cls,
    Mean,
    Max,
    MeanSqrtLen,
    LastToken,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Pooling> {
        match s.to_ascii_lowercase().as_str() {
            "cls" | "first" => Some(Pooling::Cls),
            "mean" => Some(Pooling::Mean),
            "max" => Some(Pooling::Max),
            "mean_sqrt_len_tokens" | "mean-sqrt-len" => Some(Pooling::MeanSqrtLen),
            "lasttoken" | "last_token" | "last-token" | "last" => Some(Pooling::LastToken),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::LastToken => "lasttoken",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    Left,
    Right,
}

#[derive(Debug, Clone)]
pub enum Arch {
    Bert(BertConfig),
    Qwen3(Qwen3Config),
}

impl Arch {
    pub fn hidden_size(&self) -> usize {
        match self {
            Arch::Bert(c) => c.hidden_size,
            Arch::Qwen3(c) => c.hidden_size,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Bert(_) => "bert",
            Arch::Qwen3(_) => "qwen3",
        }
    }
}

/// What produces the output from the final hidden states.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// Pool token states into one vector.
    Pool(Pooling),
    /// BertForSequenceClassification: pooler (tanh) then classifier; `num_labels` outputs.
    BertClassifier { num_labels: usize },
    /// Qwen3-Reranker (CausalLM): logit[yes] − logit[no] at the last token, two lm_head rows only.
    Qwen3YesNo { yes_id: u32, no_id: u32 },
    /// Qwen3ForSequenceClassification (`score` head, one label) at the last token.
    Qwen3SeqCls,
}

/// How a reranker's raw score is turned into `relevance_score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreActivation {
    Sigmoid,
    Identity,
}

/// Prompt template parts of the Qwen3-Reranker model card.
#[derive(Debug, Clone)]
pub struct RerankTemplate {
    pub prefix: String,
    pub suffix: String,
    pub default_instruction: String,
}

impl RerankTemplate {
    pub fn qwen3() -> Self {
        RerankTemplate {
            prefix: "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n".into(),
            suffix: "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n".into(),
            default_instruction: QWEN3_DEFAULT_TASK.into(),
        }
    }

    pub fn body(&self, instruction: &str, query: &str, doc: &str) -> String {
        format!("<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}")
    }
}

/// Everything later stages need to know about a model, decided once.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub dir: PathBuf,
    pub repo_id: Option<String>,
    pub commit: Option<String>,
    pub arch: Arch,
    pub architectures: Vec<String>,
    pub task: Task,
    pub head: Head,
    pub normalize: bool,
    pub max_length: usize,
    pub padding_side: PaddingSide,
    /// Named prompts (sentence-transformers `prompts`), prepended to the text.
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    /// For instruction-aware embedders: the query template with `{task}`, and the default task.
    pub instruction_template: Option<(String, String)>,
    /// Pooling excludes the prompt's tokens (sentence-transformers `include_prompt: false`).
    pub pooling_excludes_prompt: bool,
    /// Token id to append after each text when the tokenizer does not (Qwen3-Embedding EOS).
    pub append_eos: Option<u32>,
    pub rerank_template: Option<RerankTemplate>,
    pub score_activation: ScoreActivation,
    pub tokenizer_file: PathBuf,
    pub weight_files: Vec<PathBuf>,
    /// Size and mtime of each weight file, read once here for cache keys and memory estimates.
    pub weight_stamps: Vec<weights_index::WeightStamp>,
    /// sha256 of config.json.
    pub config_sha256: String,
    /// MLX quantization entry of config.json (None: not a quantized checkpoint).
    pub quantization: Option<Quantization>,
    /// Decisions made from fallbacks rather than files, for `--verbose`.
    pub notes: Vec<String>,
    /// config.json keys neither implemented nor known to be inert (listed by `check` and the load log).
    pub unknown_config_keys: Vec<String>,
}

/// User choices that override what the files say.
#[derive(Debug, Clone, Default)]
pub struct SpecOverrides {
    pub task: Option<Task>,
    pub pooling: Option<Pooling>,
    pub max_length: Option<usize>,
}

const SUPPORTED: &str = "BertModel, BertForMaskedLM, BertForSequenceClassification, Qwen3Model, \
Qwen3ForCausalLM, Qwen3ForSequenceClassification";

/// The architecture a config.json describes, read, audited key by key and validated.
pub fn read_arch(raw: &RawConfig, config_path: &Path) -> Result<(Arch, KeyAudit)> {
    let model_type = raw.model_type().unwrap_or("");
    let first_arch = raw.architectures().into_iter().next().unwrap_or_default();
    if model_type == "bert" || first_arch.starts_with("Bert") {
        let (c, a) = BertConfig::read(raw, config_path)?;
        Ok((Arch::Bert(c), a))
    } else if model_type == "qwen3" || first_arch.starts_with("Qwen3") {
        let (c, a) = Qwen3Config::read(raw, config_path)?;
        Ok((Arch::Qwen3(c), a))
    } else {
        let arch = if first_arch.is_empty() { model_type.to_string() } else { first_arch };
        Err(Error::UnsupportedArchitecture {
            path: config_path.to_path_buf(),
            arch: if arch.is_empty() { "(none given)".into() } else { arch },
            supported: SUPPORTED.into(),
        })
    }
}

impl ModelSpec {
    pub fn load(resolved: &ResolvedModel, ov: &SpecOverrides) -> Result<ModelSpec> {
        let dir = resolved.dir.clone();
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(Error::MissingFile { path: config_path, what: "config.json".into() });
        }
        let raw = RawConfig::read(&config_path)?;
        let tokenizer_file = dir.join("tokenizer.json");
        if !tokenizer_file.exists() {
            return Err(Error::MissingFile {
                path: tokenizer_file,
                what: "tokenizer.json (only fast-tokenizer files are supported)".into(),
            });
        }
        let weight_files = weights_index::weight_files(&dir)?;
        let weight_stamps = weights_index::stamps(&weight_files)?;
        let quantization = Quantization::from_config(&raw.value, &config_path)?;
        let st = st::read(&dir)?;
        let architectures = raw.architectures();
        let first_arch = architectures.first().cloned().unwrap_or_default();
        let name_has_reranker = resolved.name.to_ascii_lowercase().contains("reranker");
        let mut notes = Vec::new();

        let (arch, audit) = read_arch(&raw, &config_path)?;
        let is_qwen3 = matches!(arch, Arch::Qwen3(_));
        let seq_cls = first_arch.ends_with("ForSequenceClassification");
        if !audit.unknown.is_empty() {
            tracing::info!(
                model = %resolved.name,
                "config.json keys this runtime does not know (check they do not change the math): {}",
                audit.unknown.join(", ")
            );
        }

        // Task: what `embedrank convert` recorded, then the files, then the name rule for
        // Qwen3-Reranker, then the user's override.
        let detected = if let Some(t) = recorded_task(&dir)? {
            t
        } else if st.has_modules && st.has_module("Pooling") {
            Task::Embed
        } else if st.logit_score.is_some() || seq_cls || (is_qwen3 && name_has_reranker) {
            Task::Rerank
        } else {
            Task::Embed
        };
        let task = ov.task.unwrap_or(detected);

        let tokenizer_json = read_tokenizer_json(&tokenizer_file)?;
        let mut append_eos = None;
        let mut rerank_template = None;
        let mut instruction_template = None;
        let mut prompts = st.prompts.clone();
        let mut padding_side = PaddingSide::Right;
        let mut score_activation = ScoreActivation::Sigmoid;

        let head = match (&arch, task) {
            (Arch::Bert(_), Task::Embed) => {
                let p = match (ov.pooling, st.pooling) {
                    (Some(p), _) => p,
                    (None, Some(p)) => p,
                    (None, None) => {
                        // MLX conversions copy only top-level JSON files: modules.json can name a
                        // Pooling module whose folder was not copied. bge pools CLS; MiniLM/mpnet mean.
                        let n = resolved.name.to_ascii_lowercase();
                        let p = if n.contains("bge") { Pooling::Cls } else { Pooling::Mean };
                        let why = if st.has_module("Pooling") {
                            "modules.json lists a Pooling module but its config.json is missing"
                        } else {
                            "no sentence-transformers pooling config"
                        };
                        notes.push(format!(
                            "{why}; using the model family's pooling `{}` (override with --pooling)",
                            p.as_str()
                        ));
                        p
                    }
                };
                Head::Pool(p)
            }
            (Arch::Bert(_), Task::Rerank) => {
                if !seq_cls {
                    return Err(Error::config(
                        &config_path,
                        format!("`{first_arch}` has no classification head; a BERT reranker must be BertForSequenceClassification"),
                    ));
                }
                let num_labels = num_labels(&raw);
                // sentence-transformers CrossEncoder: a stored activation wins, else Sigmoid for one label.
                score_activation = match st.activation_fn.as_deref().or_else(|| ce_activation(&raw)) {
                    Some(a) if a.ends_with("Identity") => ScoreActivation::Identity,
                    Some(a) if a.ends_with("Sigmoid") => ScoreActivation::Sigmoid,
                    Some(a) => {
                        notes.push(format!("unknown cross-encoder activation `{a}`; returning raw logits"));
                        ScoreActivation::Identity
                    }
                    None if num_labels == 1 => ScoreActivation::Sigmoid,
                    None => ScoreActivation::Identity,
                };
                Head::BertClassifier { num_labels }
            }
            (Arch::Qwen3(_), Task::Embed) => {
                padding_side = PaddingSide::Left;
                let eos = token_id(&tokenizer_json, "<|endoftext|>");
                if let Some(eos) = eos {
                    if !post_processor_appends(&tokenizer_json, "<|endoftext|>") {
                        append_eos = Some(eos);
                        notes.push("tokenizer does not append <|endoftext|>; appending it".into());
                    }
                }
                if prompts.is_empty() {
                    prompts.insert("query".into(), QWEN3_QUERY_TEMPLATE.replace("{task}", QWEN3_DEFAULT_TASK));
                    prompts.insert("document".into(), String::new());
                }
                instruction_template = Some((QWEN3_QUERY_TEMPLATE.to_string(), QWEN3_DEFAULT_TASK.to_string()));
                let p = ov.pooling.or(st.pooling).unwrap_or_else(|| {
                    notes.push("no sentence-transformers pooling config; using last-token pooling".into());
                    Pooling::LastToken
                });
                Head::Pool(p)
            }
            (Arch::Qwen3(_), Task::Rerank) => {
                padding_side = PaddingSide::Left;
                rerank_template = Some(RerankTemplate::qwen3());
                if seq_cls {
                    Head::Qwen3SeqCls
                } else if let Some((yes_id, no_id)) = st.logit_score {
                    // sentence-transformers 6 CrossEncoder: its LogitScore module names the tokens.
                    Head::Qwen3YesNo { yes_id, no_id }
                } else {
                    let yes = token_id(&tokenizer_json, "yes");
                    let no = token_id(&tokenizer_json, "no");
                    match (yes, no) {
                        (Some(yes_id), Some(no_id)) => Head::Qwen3YesNo { yes_id, no_id },
                        _ => {
                            return Err(Error::Tokenizer {
                                path: tokenizer_file,
                                message:
                                    "the tokens `yes` and `no` a Qwen3 reranker scores with are not in the vocabulary"
                                        .into(),
                            })
                        }
                    }
                }
            }
        };

        let normalize = match task {
            Task::Rerank => false,
            Task::Embed if st.has_modules => st.has_module("Normalize"),
            Task::Embed => {
                notes.push("no modules.json; normalizing embeddings (L2)".into());
                true
            }
        };

        let max_pos = match &arch {
            Arch::Bert(c) => c.max_position_embeddings,
            Arch::Qwen3(c) => c.max_position_embeddings,
        };
        let mut max_length = match st.max_seq_length {
            Some(n) => n,
            None => {
                let tk_max = tokenizer_model_max_length(&dir);
                let n = tk_max.map_or(max_pos, |t| t.min(max_pos));
                notes.push(format!("no sentence_bert_config.json max_seq_length; using {n}"));
                n
            }
        };
        if matches!(arch, Arch::Qwen3(_)) && st.max_seq_length.is_none() {
            // The model card's transformers example uses 8192; longer inputs cost quadratic memory.
            max_length = max_length.min(8192);
        }
        if let Some(m) = ov.max_length {
            if m == 0 {
                return Err(Error::InvalidInput("--max-length must be positive".into()));
            }
            max_length = m;
        }
        if max_length > max_pos && matches!(arch, Arch::Bert(_)) {
            return Err(Error::InvalidInput(format!(
                "max length {max_length} exceeds the model's max_position_embeddings {max_pos}"
            )));
        }

        Ok(ModelSpec {
            name: resolved.name.clone(),
            dir,
            repo_id: resolved.repo_id.clone(),
            commit: resolved.commit.clone(),
            arch,
            architectures,
            task,
            head,
            normalize,
            max_length,
            padding_side,
            prompts,
            default_prompt_name: st.default_prompt_name.clone(),
            instruction_template,
            pooling_excludes_prompt: !st.include_prompt,
            append_eos,
            rerank_template,
            score_activation,
            tokenizer_file,
            weight_files,
            weight_stamps,
            config_sha256: raw.sha256.clone(),
            quantization,
            notes,
            unknown_config_keys: audit.unknown,
        })
    }

    /// Bytes of the weight files on disk.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_stamps.iter().map(|s| s.bytes).sum()
    }

    pub fn hidden_size(&self) -> usize {
        self.arch.hidden_size()
    }

    /// Output width of an embedder.
    pub fn embedding_dim(&self) -> usize {
        self.hidden_size()
    }

    /// Resolve the prompt text for a request: explicit text, a named prompt, an instruction for
    /// instruction-aware models, or the model's default prompt.
    pub fn prompt_for(
        &self,
        prompt_name: Option<&str>,
        prompt_text: Option<&str>,
        instruction: Option<&str>,
    ) -> Result<String> {
        if let Some(t) = prompt_text {
            return Ok(t.to_string());
        }
        if let Some(instr) = instruction {
            return match &self.instruction_template {
                Some((tpl, _)) => Ok(tpl.replace("{task}", instr)),
                None => Err(Error::InvalidInput(format!(
                    "model `{}` takes no instruction; use a prompt instead",
                    self.name
                ))),
            };
        }
        let name = prompt_name.or(self.default_prompt_name.as_deref());
        match name {
            None => Ok(String::new()),
            Some(n) => match self.prompts.get(n) {
                Some(p) => Ok(p.clone()),
                // Every model accepts query/document; those without such prompts use none.
                None if n == "query" || n == "document" || n == "passage" => Ok(String::new()),
                None => Err(Error::InvalidInput(format!(
                    "model `{}` has no prompt named `{n}` (it has: {})",
                    self.name,
                    if self.prompts.is_empty() {
                        "none".to_string()
                    } else {
                        self.prompts.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ))),
            },
        }
    }
}

fn read_tokenizer_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Tokenizer { path: path.to_path_buf(), message: format!("not valid JSON: {e}") })
}

/// Id of a token, from added tokens or the model vocabulary.
fn token_id(tok: &Value, token: &str) -> Option<u32> {
    if let Some(added) = tok.get("added_tokens").and_then(Value::as_array) {
        for t in added {
            if t.get("content").and_then(Value::as_str) == Some(token) {
                return t.get("id").and_then(Value::as_u64).map(|i| i as u32);
            }
        }
    }
    tok.get("model")?.get("vocab")?.get(token)?.as_u64().map(|i| i as u32)
}

/// Whether the post-processor template adds `token` to single sequences.
fn post_processor_appends(tok: &Value, token: &str) -> bool {
    fn walk(v: &Value, token: &str) -> bool {
        match v {
            Value::Object(m) => {
                if m.get("type").and_then(Value::as_str) == Some("TemplateProcessing") {
                    return m.get("single").is_some_and(|s| s.to_string().contains(token));
                }
                m.get("processors").is_some_and(|p| walk(p, token))
            }
            Value::Array(a) => a.iter().any(|x| walk(x, token)),
            _ => false,
        }
    }
    tok.get("post_processor").is_some_and(|p| walk(p, token))
}

fn tokenizer_model_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let n = v.get("model_max_length")?.as_f64()?;
    // transformers writes a huge sentinel (1e30) when unset.
    (n > 0.0 && n < 1e9).then_some(n as usize)
}

fn num_labels(raw: &RawConfig) -> usize {
    if let Some(n) = raw.value.get("num_labels").and_then(Value::as_u64) {
        return n as usize;
    }
    raw.value.get("id2label").and_then(Value::as_object).map_or(1, |m| m.len().max(1))
}

/// Legacy activation stored in config.json by older CrossEncoder saves.
fn ce_activation(raw: &RawConfig) -> Option<&str> {
    raw.value
        .get("sentence_transformers")
        .and_then(|v| v.get("activation_fn"))
        .or_else(|| raw.value.get("sbert_ce_default_activation_function"))
        .and_then(Value::as_str)
}
