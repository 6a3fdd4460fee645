//! Engine stage: one loaded model with its tokenizer. Tokenizes (prompts, instructions,
//! truncation), batches by length under a token budget, runs the model and post-processes
//! (pooling, normalization, Matryoshka dimensions, reranker activation).

pub mod batch;
pub mod device;
pub mod memory;
pub mod pool;
pub mod rerank;
pub mod tokenize;

use std::time::Instant;

use candle_core::{DType, Device};

pub use device::DeviceChoice;
pub use rerank::{RerankOptions, RerankResult};
pub use tokenize::{Tokens, Truncation};

use crate::model::{profile, Batch, Model};
use crate::spec::{Head, ModelSpec, Pooling, Task};
use crate::weights::WeightStore;
use crate::{Error, Result};

/// Default padded-token budget of one forward pass (batch rows × padded length).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16384;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: DeviceChoice,
    /// None: f32 on CPU, bf16 on GPUs.
    pub dtype: Option<DType>,
    /// Padded tokens per forward pass; None: the model's default (`weights::forward_token_budget`).
    pub max_batch_tokens: Option<usize>,
    /// Quantize a float checkpoint's linear layers at load to this many bits (CPU only; see
    /// `DtypeChoice::Int8`). Ignored for checkpoints that are quantized already.
    pub quantize_bits: Option<u32>,
    /// Calibration: float linear layers record their inputs here (`convert --calibrate`).
    pub recorder: Option<std::sync::Arc<crate::weights::recorder::ActivationRecorder>>,
}

impl EngineOptions {
    /// Whether `spec`'s linear layers run quantized with these options (on disk, or at load).
    pub fn quantizes(&self, spec: &ModelSpec) -> bool {
        spec.quantization.is_some() || self.quantize_bits.is_some()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            device: DeviceChoice::Cpu,
            dtype: None,
            max_batch_tokens: None,
            quantize_bits: None,
            recorder: None,
        }
    }
}

/// What `--dtype` / a config's `dtype` asks for: a float compute dtype, or `int8`: on the CPU, the
/// linear layers quantized at load to 8 bits (MLX affine, group 32) and their activations to 8 bits
/// per group of 32 inputs, multiplied by integer dot products where the CPU has AVX-512 VNNI
/// (`weights::qkernel`); everything else (attention, norms, pooling) in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeChoice {
    Float(DType),
    Int8,
}

impl DtypeChoice {
    pub fn parse(s: &str) -> Result<DtypeChoice> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => DtypeChoice::Float(DType::F32),
            "f16" | "float16" => DtypeChoice::Float(DType::F16),
            "bf16" | "bfloat16" => DtypeChoice::Float(DType::BF16),
            "int8" | "q8" => DtypeChoice::Int8,
            d => return Err(Error::InvalidInput(format!("unknown dtype `{d}` (f32, f16, bf16, int8)"))),
        })
    }

    /// Set `opts.dtype` and `opts.quantize_bits` for this choice.
    pub fn apply(self, opts: &mut EngineOptions) {
        match self {
            DtypeChoice::Float(d) => {
                opts.dtype = Some(d);
                opts.quantize_bits = None;
            }
            DtypeChoice::Int8 => {
                opts.dtype = Some(DType::F32);
                opts.quantize_bits = Some(8);
            }
        }
    }
}

/// Group size of load-time quantization: the smallest MLX allows, the closest to the float model
/// (all-MiniLM-L6-v2: 8-bit group 32 alone keeps cosine ≥ 0.9997 to f32).
pub const LOAD_QUANT_GROUP: usize = 32;

/// Per-call embedding options.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// Text prepended to every input (already resolved from prompt name / instruction).
    pub prompt: String,
    /// Matryoshka truncation.
    pub dimensions: Option<usize>,
    /// Override the model's normalization.
    pub normalize: Option<bool>,
    /// Rows per forward pass (also bounded by the token budget).
    pub batch_size: Option<usize>,
    /// What to do with inputs longer than the max length.
    pub truncation: Truncation,
}

pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens actually run through the model (after truncation), summed.
    pub tokens: usize,
}

pub struct Engine {
    pub spec: ModelSpec,
    pub tokenizer: tokenize::TextTokenizer,
    model: Model,
    pub device: Device,
    pub dtype: DType,
    pub max_batch_tokens: usize,
    pub load_time: std::time::Duration,
    /// Bits the linear layers were quantized to at load (`--dtype int8`), if they were.
    pub load_quant_bits: Option<u32>,
}

impl Engine {
    pub fn load(spec: ModelSpec, opts: &EngineOptions) -> Result<Engine> {
        let t0 = Instant::now();
        let device = opts.device.open()?;
        let dtype = opts.dtype.unwrap_or(if device.is_cpu() { DType::F32 } else { DType::BF16 });
        let tokenizer = tokenize::TextTokenizer::load(&spec)?;
        if opts.quantize_bits.is_some() && !device.is_cpu() {
            return Err(Error::InvalidInput(
                "dtype int8 runs on the CPU only; on a GPU use bf16 or an MLX-quantized checkpoint".into(),
            ));
        }
        // A checkpoint quantized on disk keeps its own quantization.
        let load_quant_bits = opts.quantize_bits.filter(|_| spec.quantization.is_none());
        let mut ws = WeightStore::open(&spec.weight_files, &device, dtype)?;
        ws.set_quantization(spec.quantization.clone());
        ws.set_load_quantization(load_quant_bits.map(|b| (b, LOAD_QUANT_GROUP)));
        ws.set_recorder(opts.recorder.clone());
        let model = Model::load(&spec, &ws)?;
        let max_batch_tokens =
            crate::weights::forward_token_budget(opts.max_batch_tokens, opts.quantizes(&spec), device.is_cpu());
        for n in &spec.notes {
            tracing::info!(model = %spec.name, "{n}");
        }
        Ok(Engine { spec, tokenizer, model, device, dtype, max_batch_tokens, load_time: t0.elapsed(), load_quant_bits })
    }

    /// What the user asked for as `--dtype`: "int8" when the layers were quantized at load, else
    /// the compute dtype ("f32", "bf16", ...).
    pub fn dtype_label(&self) -> &'static str {
        match self.load_quant_bits {
            Some(_) => "int8",
            None => self.dtype.as_str(),
        }
    }

    fn require(&self, task: Task) -> Result<()> {
        if self.spec.task != task {
            return Err(Error::WrongTask {
                model: self.spec.name.clone(),
                actual: self.spec.task.as_str(),
                wanted: task.as_str(),
            });
        }
        Ok(())
    }

    /// Check a Matryoshka dimension against the model.
    pub fn check_dimensions(&self, dims: Option<usize>) -> Result<()> {
        if let Some(d) = dims {
            let hidden = self.spec.embedding_dim();
            let min = 32.min(hidden);
            if d < min || d > hidden {
                return Err(Error::InvalidInput(format!(
                    "dimensions must be between {min} and {hidden} for `{}`, got {d}",
                    self.spec.name
                )));
            }
        }
        Ok(())
    }

    /// Tokenize texts for embedding (prompt prepended, truncated or rejected when too long).
    pub fn tokenize_texts(&self, texts: &[String], opts: &EmbedOptions) -> Result<Vec<Tokens>> {
        self.tokenizer.encode_texts(texts, &opts.prompt, opts.truncation)
    }

    pub fn embed(&self, texts: &[String], opts: &EmbedOptions) -> Result<Embeddings> {
        let t0 = Instant::now();
        let toks = self.tokenize_texts(texts, opts)?;
        if profile::enabled() {
            profile::add("tokenize", t0.elapsed());
        }
        self.embed_tokens(&toks, opts)
    }

    /// Embed already tokenized inputs.
    pub fn embed_tokens(&self, toks: &[Tokens], opts: &EmbedOptions) -> Result<Embeddings> {
        self.require(Task::Embed)?;
        self.check_dimensions(opts.dimensions)?;
        let Head::Pool(pooling) = self.spec.head else {
            return Err(Error::InvalidInput("model has no pooling head".into()));
        };
        let normalize = opts.normalize.unwrap_or(self.spec.normalize);
        let prompt_len = if self.spec.pooling_excludes_prompt && !opts.prompt.is_empty() {
            self.tokenizer.prompt_length(&opts.prompt)?
        } else {
            0
        };
        let mut out = vec![Vec::new(); toks.len()];
        let plan = batch::plan(toks, opts.batch_size, self.max_batch_tokens);
        for group in plan {
            let mut prof = profile::start(&self.device)?;
            let b = batch::build(toks, &group, &self.spec, &self.device, self.dtype)?;
            profile::mark(&mut prof, "batch build + upload")?;
            let pooled = self.pool_batch(&b, pooling, prompt_len)?;
            for (row, &idx) in pooled.into_iter().zip(&group) {
                out[idx] = pool::finish(row, opts.dimensions, normalize);
            }
        }
        Ok(Embeddings { vectors: out, tokens: toks.iter().map(|t| t.ids.len()).sum() })
    }

    pub fn rerank(&self, query: &str, docs: &[String], opts: &RerankOptions) -> Result<Vec<RerankResult>> {
        self.require(Task::Rerank)?;
        rerank::rerank(self, query, docs, opts)
    }

    /// Pooled vectors (before normalization and Matryoshka truncation) of one padded batch.
    pub fn pool_batch(&self, b: &Batch, pooling: Pooling, prompt_len: usize) -> Result<Vec<Vec<f32>>> {
        let h = self.model.hidden_states(b)?;
        let mut prof = profile::start(&self.device)?;
        let out = pool::pool(&h, b, pooling, prompt_len)?;
        profile::mark(&mut prof, "pool + download")?;
        // NaN or infinity would go out as `null` or as a vector that compares equal to nothing:
        // an error, not an answer.
        if out.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(Error::NonFinite { what: "embedding" });
        }
        Ok(out)
    }

    /// Raw reranker scores of one padded batch, one per row (multi-label heads: the first label,
    /// the relevance logit).
    pub fn score_batch(&self, b: &Batch) -> Result<Vec<f32>> {
        let s = self.model.scores(b, &self.spec.head)?;
        let s = if s.rank() == 2 { s.narrow(1, 0, 1)?.squeeze(1)? } else { s };
        let scores: Vec<f32> = s.to_dtype(DType::F32)?.to_vec1()?;
        if scores.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { what: "score" });
        }
        Ok(scores)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if profile::enabled() {
            eprint!("{}", profile::take_report());
        }
    }
}
