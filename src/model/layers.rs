//! Shared layers: embedding lookup, layer norm, RMS norm, rotary embeddings, attention with a mask.

use candle_core::{DType, Device, Module, Tensor, D};

use crate::spec::rope::RopeSpec;
pub use crate::weights::Embedding;
use crate::weights::WeightStore;
use crate::Result;

/// A large negative number for masked attention scores. Finite, so a row with every key masked
/// (a padding query row) softmaxes to uniform instead of NaN; its output is never used.
pub const MASK_VALUE: f32 = -1e30;

pub struct LayerNorm(candle_nn::LayerNorm);

impl LayerNorm {
    /// Accepts both `weight`/`bias` and the old `gamma`/`beta` names.
    pub fn load(ws: &WeightStore, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let (w, b) = if ws.has(&format!("{name}.weight")) {
            (ws.get(&format!("{name}.weight"), &[dim])?, ws.get(&format!("{name}.bias"), &[dim])?)
        } else {
            (ws.get(&format!("{name}.gamma"), &[dim])?, ws.get(&format!("{name}.beta"), &[dim])?)
        };
        Ok(LayerNorm(candle_nn::LayerNorm::new(w, b, eps)))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(&x.contiguous()?)?)
    }

    /// (weight, bias, eps), for kernels that normalize raw buffers.
    pub fn params(&self) -> (&Tensor, Option<&Tensor>, f64) {
        (self.0.weight(), self.0.bias(), self.0.eps())
    }
}

pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(ws: &WeightStore, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm { weight: ws.get(&format!("{name}.weight"), &[dim])?, eps: eps as f32 })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalizes over the last dim; computed in f32 as the reference does, then cast back. On CUDA
    /// candle's fused kernel does exactly that in one pass for every dtype (f32 sums, one rounding at
    /// the end, where the reference rounds before the weight multiply too: at most one bf16 ulp apart).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        if dt == DType::F32 || x.device().is_cuda() {
            return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?);
        }
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps as f64)?.sqrt()?)?.to_dtype(dt)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// Rotary embedding tables (non-interleaved, rotate-half), computed in f32.
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// cos and sin [max_len, head_dim/2] in f32, each already multiplied by the rope's attention factor
    /// (transformers scales both; 1 except for YaRN).
    pub fn tables_f32(head_dim: usize, max_len: usize, rope: &RopeSpec, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = head_dim / 2;
        let inv = Tensor::from_vec(rope.inv_freq(head_dim), (1, half), device)?;
        let pos = Tensor::arange(0u32, max_len as u32, device)?.to_dtype(DType::F32)?.reshape((max_len, 1))?;
        let freqs = pos.matmul(&inv)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        if rope.attention_factor == 1.0 {
            return Ok((cos, sin));
        }
        Ok(((cos * rope.attention_factor)?, (sin * rope.attention_factor)?))
    }

    pub fn new(head_dim: usize, max_len: usize, rope: &RopeSpec, dtype: DType, device: &Device) -> Result<Self> {
        let (cos, sin) = Self::tables_f32(head_dim, max_len, rope, device)?;
        Ok(Rotary { cos: cos.to_dtype(dtype)?, sin: sin.to_dtype(dtype)? })
    }

    pub fn max_len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// x: [b, heads, l, head_dim], positions 0..l.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let l = x.dim(2)?;
        let cos = self.cos.narrow(0, 0, l)?;
        let sin = self.sin.narrow(0, 0, l)?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}

/// Scaled dot-product attention. q [b, h, lq, d], k/v [b, h, lk, d], bias broadcastable to
/// [b, h, lq, lk] (0 or MASK_VALUE). Softmax in f32.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let dt = q.dtype();
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(bias)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dt)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

/// Padding bias [b, 1, 1, l] for bidirectional encoders: 0 for real tokens, MASK_VALUE for pads.
pub fn padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, l) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    let bias = ((m.ones_like()? - m)? * MASK_VALUE as f64)?;
    Ok(bias.reshape((b, 1, 1, l))?)
}

/// Causal + padding bias [b, 1, l, l] for decoders.
pub fn causal_padding_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, l) = mask.dims2()?;
    let m: Vec<Vec<f32>> = mask.to_dtype(DType::F32)?.to_vec2()?;
    let mut out = vec![0f32; b * l * l];
    for (bi, row) in m.iter().enumerate() {
        for i in 0..l {
            for (j, &mj) in row.iter().enumerate() {
                if j > i || mj == 0.0 {
                    out[bi * l * l + i * l + j] = MASK_VALUE;
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, 1, l, l), mask.device())?)
}
