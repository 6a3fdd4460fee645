//! The BERT encoder's f32 CPU forward pass over packed tokens: the real tokens of every sequence
//! are laid end to end ([T, hidden], no padding), so the linear layers, norms and GELU never touch
//! a pad, and attention runs per (sequence, head) on exactly that sequence's tokens. Same math as
//! [`Bert::forward`]; buffers are reused between layers and the element-wise work is vectorized
//! (see `model::cpu_ops` for why this path exists).

use candle_core::{DType, Device, Tensor};

use super::super::cpu_ops as ops;
use super::super::layers::LayerNorm;
use super::super::profile::{self, mark};
use super::super::Batch;
use super::{Bert, Qkv};
use crate::spec::Activation;
use crate::weights::dense_cpu::{par_rows, with_f32};
use crate::weights::packed_f32::Epilogue;
use crate::weights::Linear;
use crate::Result;

fn layer_norm(ln: &LayerNorm, x: &mut [f32], dim: usize) -> Result<()> {
    let (w, b, eps) = ln.params();
    let b = b.ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
    // Rows are independent: stretches of at least 64 of them in parallel.
    with_f32(w, |w| with_f32(b, |b| par_rows(x, dim, 64, &|rows| ops::layer_norm_rows(rows, dim, w, b, eps as f32))))??;
    Ok(())
}

impl Bert {
    /// Whether `forward` can take the packed CPU path for this batch.
    /// `EMBEDRANK_CPU_FAST=0` turns it off (for A/B measurements against the candle path).
    pub(super) fn cpu_fast_path(&self, batch: &Batch) -> bool {
        static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ENABLED.get_or_init(|| std::env::var("EMBEDRANK_CPU_FAST").map_or(true, |v| v != "0"))
            && batch.ids.device().is_cpu()
            && batch.mask.dtype() == DType::F32
            && !batch.left_padded
    }

    /// Hidden states [b, l, hidden] (pad rows zero), computed over the packed real tokens.
    pub(super) fn forward_cpu(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        let mut prof = profile::start(&Device::Cpu)?;
        let ids = batch.ids.to_vec2::<u32>()?;
        let types = batch.type_ids.to_vec2::<u32>()?;
        let mut seqs = Vec::with_capacity(b);
        let (mut p_ids, mut p_types, mut p_pos) = (Vec::new(), Vec::new(), Vec::new());
        for (row, &len) in batch.lengths.iter().enumerate() {
            let len = len.min(l);
            seqs.push((p_ids.len(), len));
            p_ids.extend_from_slice(&ids[row][..len]);
            p_types.extend_from_slice(&types[row][..len]);
            p_pos.extend(0..len as u32);
        }
        let t = p_ids.len();
        let h = self.emb_ln.params().0.dims()[0];
        let mut x = vec![0f32; t * h];
        self.word.rows_f32(&p_ids, &mut x, false)?;
        self.types.rows_f32(&p_types, &mut x, true)?;
        self.pos.rows_f32(&p_pos, &mut x, true)?;
        layer_norm(&self.emb_ln, &mut x, h)?;
        mark(&mut prof, "embed + layer norm")?;

        let act: Epilogue = match self.act {
            Activation::Gelu => &ops::gelu_erf,
            Activation::GeluTanh => &ops::gelu_tanh,
            Activation::Relu => &ops::relu,
            Activation::Silu => &ops::silu,
        };
        let heads = self.heads;
        let hd = h / heads;
        // Fused projections write q | k | v rows into `q`; separate ones use all three.
        let split = self.layers.iter().any(|l| matches!(l.qkv, Qkv::Split { .. }));
        let fused = self.layers.iter().any(|l| matches!(l.qkv, Qkv::Fused(_)));
        let mut q = vec![0f32; t * h * if fused { 3 } else { 1 }];
        let mut k = vec![0f32; if split { t * h } else { 0 }];
        let mut v = vec![0f32; if split { t * h } else { 0 }];
        let mut ctx = vec![0f32; t * h];
        let mut a = vec![0f32; t * h];
        // Grown only when the feed-forward layers are not fused (see `Linear::mlp_f32`).
        let mut inter = Vec::new();
        for layer in &self.layers {
            match &layer.qkv {
                Qkv::Fused(qkv) => {
                    qkv.forward_f32(&x, t, &mut q, None, None)?;
                    mark(&mut prof, "q/k/v proj")?;
                    ops::attention_varlen(&q, &q[h..], &q[2 * h..], 3 * h, &seqs, heads, hd, false, &mut ctx);
                }
                Qkv::Split { q: wq, k: wk, v: wv } => {
                    wq.forward_f32(&x, t, &mut q, None, None)?;
                    wk.forward_f32(&x, t, &mut k, None, None)?;
                    wv.forward_f32(&x, t, &mut v, None, None)?;
                    mark(&mut prof, "q/k/v proj")?;
                    ops::attention_varlen(&q, &k, &v, h, &seqs, heads, hd, false, &mut ctx);
                }
            }
            mark(&mut prof, "attention")?;
            layer.attn_out.forward_f32(&ctx, t, &mut a, Some(&x), None)?;
            mark(&mut prof, "out proj + residual")?;
            layer_norm(&layer.attn_ln, &mut a, h)?;
            mark(&mut prof, "layer norm")?;
            // The activation runs inside the GEMM's epilogue (packed layers) or right after it.
            Linear::mlp_f32(&layer.inter, &layer.out, &a, t, &mut inter, &mut x, Some(&a), Some(act))?;
            mark(&mut prof, "feed-forward + residual")?;
            layer_norm(&layer.out_ln, &mut x, h)?;
            mark(&mut prof, "layer norm")?;
        }

        // Back to the padded [b, l, h] layout the pooling stage reads.
        let mut padded = vec![0f32; b * l * h];
        for (row, &(s, len)) in seqs.iter().enumerate() {
            padded[row * l * h..(row * l + len) * h].copy_from_slice(&x[s * h..(s + len) * h]);
        }
        let out = Tensor::from_vec(padded, (b, l, h), &Device::Cpu)?;
        mark(&mut prof, "unpack")?;
        Ok(out)
    }
}
