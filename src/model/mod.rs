//! Model stage: architectures written once on a few shared layers. Input is a padded [`Batch`];
//! output is final hidden states (embedders) or one score per row (rerankers).

pub mod bert;
// The f32 CPU fast path calls the `gemm` crate, an x86-64-only dependency; other CPUs (Apple
// silicon) keep candle's path.
#[cfg(target_arch = "x86_64")]
mod avx512_math;
mod cpu_ops;
pub mod cuda_ops;
pub mod layers;
pub mod profile;
pub mod qwen3;

use candle_core::Tensor;

use crate::spec::{Arch, Head, ModelSpec};
use crate::weights::WeightStore;
use crate::Result;

/// A padded batch of token ids. `mask` is 1.0 for real tokens and 0.0 for padding, in the
/// compute dtype, shape [batch, len].
pub struct Batch {
    pub ids: Tensor,
    pub type_ids: Tensor,
    pub mask: Tensor,
    /// Real length of each row.
    pub lengths: Vec<usize>,
    /// Rows are padded on the left (decoders) instead of the right.
    pub left_padded: bool,
}

pub enum Model {
    Bert(bert::Bert),
    Qwen3(qwen3::Qwen3),
}

impl Model {
    pub fn load(spec: &ModelSpec, ws: &WeightStore) -> Result<Model> {
        Ok(match &spec.arch {
            Arch::Bert(c) => Model::Bert(bert::Bert::load(c, &spec.head, ws)?),
            Arch::Qwen3(c) => Model::Qwen3(qwen3::Qwen3::load(c, &spec.head, ws)?),
        })
    }

    /// Final hidden states [batch, len, hidden].
    pub fn hidden_states(&self, batch: &Batch) -> Result<Tensor> {
        match self {
            Model::Bert(m) => m.forward(batch),
            Model::Qwen3(m) => m.forward(batch),
        }
    }

    /// Reranker scores before activation, [batch] (first label for multi-label heads).
    pub fn scores(&self, batch: &Batch, head: &Head) -> Result<Tensor> {
        match self {
            Model::Bert(m) => m.classify(batch),
            Model::Qwen3(m) => m.score(batch, head),
        }
    }
}
