//! The BERT encoder's f32 CPU forward pass over packed tokens: the real tokens of every sequence
//! are laid end to end ([T, hidden], no padding), so the linear layers, norms and GELU never touch
//! a pad, and attention runs per (sequence, head) on exactly that sequence's tokens. Same math as
//! [`Bert::forward`]; buffers are reused between layers and the element-wise work is vectorized
//! (see `model::cpu_ops` for why this path exists).

use candle_core::{DType, Device, Tensor};

use super::super::cpu_ops as ops;
use super::super::layers::LayerNorm;
use super::super::Batch;
use super::Bert;
use crate::spec::Activation;
use crate::weights::dense_cpu::with_f32;
use crate::Result;

fn layer_norm(ln: &LayerNorm, x: &mut [f32], dim: usize) -> Result<()> {
    let (w, b, eps) = ln.params();
    let b = b.ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
    with_f32(w, |w| with_f32(b, |b| ops::layer_norm_rows(x, dim, w, b, eps as f32)))??;
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
        let x = self.word.rows(&p_ids)?.add(&self.types.rows(&p_types)?)?.add(&self.pos.rows(&p_pos)?)?;
        let mut x = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        layer_norm(&self.emb_ln, &mut x, h)?;

        let heads = self.heads;
        let hd = h / heads;
        let inter_dim = self.layers.first().map_or(0, |ly| ly.inter.out_dim());
        let mut q = vec![0f32; t * h];
        let mut k = vec![0f32; t * h];
        let mut v = vec![0f32; t * h];
        let mut ctx = vec![0f32; t * h];
        let mut a = vec![0f32; t * h];
        let mut inter = vec![0f32; t * inter_dim];
        for layer in &self.layers {
            layer.q.forward_f32(&x, t, &mut q, None)?;
            layer.k.forward_f32(&x, t, &mut k, None)?;
            layer.v.forward_f32(&x, t, &mut v, None)?;
            ops::attention_varlen(&q, &k, &v, h, &seqs, heads, hd, false, &mut ctx);
            layer.attn_out.forward_f32(&ctx, t, &mut a, Some(&x))?;
            layer_norm(&layer.attn_ln, &mut a, h)?;
            layer.inter.forward_f32(&a, t, &mut inter, None)?;
            match self.act {
                Activation::Gelu => ops::gelu_erf(&mut inter),
                Activation::GeluTanh => ops::gelu_tanh(&mut inter),
                Activation::Relu => ops::relu(&mut inter),
                Activation::Silu => ops::silu(&mut inter),
            }
            layer.out.forward_f32(&inter, t, &mut x, Some(&a))?;
            layer_norm(&layer.out_ln, &mut x, h)?;
        }

        // Back to the padded [b, l, h] layout the pooling stage reads.
        let mut padded = vec![0f32; b * l * h];
        for (row, &(s, len)) in seqs.iter().enumerate() {
            padded[row * l * h..(row * l + len) * h].copy_from_slice(&x[s * h..(s + len) * h]);
        }
        Ok(Tensor::from_vec(padded, (b, l, h), &Device::Cpu)?)
    }
}
