//! Qwen3 decoder (Qwen3-Embedding, Qwen3-Reranker, Qwen3ForSequenceClassification): RMSNorm, q/k
//! norms before rotary embeddings, grouped-query attention with causal + padding mask, SwiGLU MLP.
//! Stateless: no KV cache, every forward sees the whole padded batch.
//!
//! bf16 on CUDA takes a fused path (`cuda_ops`, [`Qwen3::forward_fused`]): q|k|v and gate|up each one
//! GEMM over concatenated weights, q/k norm + rotary + transpose in one kernel, grouped attention without
//! repeating k/v (each kv head's query group is one GEMM), the causal + padding mask applied inside the
//! softmax kernel from the row lengths, SwiGLU in one kernel, and each residual add fused with the RMS
//! norm that follows it. `EMBEDRANK_CUDA_KERNELS=0` switches it off (generic candle ops, as on CPU and
//! Metal).

use candle_core::{DType, Module, Tensor, D};

use super::layers::{attention, causal_padding_bias, Embedding, RmsNorm, Rotary};
use super::profile::{self, mark};
use super::{cuda_ops, Batch};
use crate::spec::rope::RopeSpec;
use crate::spec::{Head, Qwen3Config};
use crate::weights::{Linear, WeightStore};
use crate::{Error, Result};

struct Layer {
    in_norm: RmsNorm,
    qkv: Qkv,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_norm: RmsNorm,
    gate_up: GateUp,
    down: Linear,
}

/// The q, k and v projections: one GEMM over the concatenated weights on the fused path (dense
/// weights), else three.
enum Qkv {
    Split { q: Linear, k: Linear, v: Linear },
    Fused { qkv: Linear, q_cols: usize, kv_cols: usize },
}

impl Qkv {
    /// q [.., heads * hd], k and v [.., kv_heads * hd]; column slices of one output when fused.
    fn forward(&self, r: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        Ok(match self {
            Qkv::Split { q, k, v } => (q.forward(r)?, k.forward(r)?, v.forward(r)?),
            Qkv::Fused { qkv, q_cols, kv_cols } => {
                let y = qkv.forward(r)?;
                (
                    y.narrow(D::Minus1, 0, *q_cols)?,
                    y.narrow(D::Minus1, *q_cols, *kv_cols)?,
                    y.narrow(D::Minus1, q_cols + kv_cols, *kv_cols)?,
                )
            }
        })
    }
}

/// The gate and up projections, fused like [`Qkv`].
enum GateUp {
    Split { gate: Linear, up: Linear },
    Fused { gate_up: Linear, cols: usize },
}

impl GateUp {
    fn forward(&self, r: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            GateUp::Split { gate, up } => (gate.forward(r)?, up.forward(r)?),
            GateUp::Fused { gate_up, cols } => {
                let y = gate_up.forward(r)?;
                (y.narrow(D::Minus1, 0, *cols)?, y.narrow(D::Minus1, *cols, *cols)?)
            }
        })
    }
}

pub struct Qwen3 {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    rotary: Rotary,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Reranker head: the rows of lm_head (or `score`) that give the score, [outputs, hidden].
    score_rows: Option<Tensor>,
    /// The fused CUDA path's rotary table [positions, head_dim] f32 (cos | sin); None: generic ops.
    fused_cos_sin: Option<Tensor>,
}

/// Whether the fused CUDA kernels may be used (`EMBEDRANK_CUDA_KERNELS=0` says no).
fn fused_allowed() -> bool {
    std::env::var("EMBEDRANK_CUDA_KERNELS").map_or(true, |v| v != "0")
}

/// Rotary table for the fused kernel: [positions, head_dim] f32, cos in the first half, sin in the second.
fn cos_sin_table(head_dim: usize, max_len: usize, rope: &RopeSpec, device: &candle_core::Device) -> Result<Tensor> {
    let (cos, sin) = Rotary::tables_f32(head_dim, max_len, rope, device)?;
    Ok(Tensor::cat(&[cos, sin], 1)?.contiguous()?)
}

impl Qwen3 {
    pub fn load(c: &Qwen3Config, head: &Head, ws: &WeightStore) -> Result<Self> {
        let h = c.hidden_size;
        let hd = c.head_dim();
        let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps;
        let bias = c.attention_bias;
        let inter = c.intermediate_size;
        let fused = fused_allowed()
            && ws.device.is_cuda()
            && ws.dtype == DType::BF16
            && cuda_ops::rope_supports(hd)
            && nkv > 0
            && nh % nkv == 0
            && h.is_multiple_of(8)
            && inter.is_multiple_of(2);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("layers.{i}");
            let q = ws.linear_float_activations(&format!("{p}.self_attn.q_proj"), h, nh * hd, bias)?;
            let k = ws.linear_float_activations(&format!("{p}.self_attn.k_proj"), h, nkv * hd, bias)?;
            let v = ws.linear_float_activations(&format!("{p}.self_attn.v_proj"), h, nkv * hd, bias)?;
            let gate = ws.linear_outlier_split(&format!("{p}.mlp.gate_proj"), h, inter, false)?;
            let up = ws.linear_outlier_split(&format!("{p}.mlp.up_proj"), h, inter, false)?;
            // The fused path multiplies the concatenated weights once (bigger GEMMs run closer to peak);
            // the separate tensors are dropped, so the weights are held once.
            let (qkv, gate_up) = if fused {
                let qkv = match Linear::concat(vec![q, k, v])? {
                    Ok(qkv) => Qkv::Fused { qkv, q_cols: nh * hd, kv_cols: nkv * hd },
                    Err(mut p) => {
                        let (v, k, q) = (p.remove(2), p.remove(1), p.remove(0));
                        Qkv::Split { q, k, v }
                    }
                };
                let gate_up = match Linear::concat(vec![gate, up])? {
                    Ok(gate_up) => GateUp::Fused { gate_up, cols: inter },
                    Err(mut p) => {
                        let (up, gate) = (p.remove(1), p.remove(0));
                        GateUp::Split { gate, up }
                    }
                };
                (qkv, gate_up)
            } else {
                (Qkv::Split { q, k, v }, GateUp::Split { gate, up })
            };
            layers.push(Layer {
                in_norm: RmsNorm::load(ws, &format!("{p}.input_layernorm"), h, eps)?,
                qkv,
                o: ws.linear(&format!("{p}.self_attn.o_proj"), nh * hd, h, bias)?,
                q_norm: RmsNorm::load(ws, &format!("{p}.self_attn.q_norm"), hd, eps)?,
                k_norm: RmsNorm::load(ws, &format!("{p}.self_attn.k_norm"), hd, eps)?,
                post_norm: RmsNorm::load(ws, &format!("{p}.post_attention_layernorm"), h, eps)?,
                gate_up,
                down: ws.linear(&format!("{p}.mlp.down_proj"), inter, h, false)?,
            });
        }
        let embed = Embedding::load(ws, "embed_tokens", c.vocab_size, h)?;
        let score_rows = match head {
            Head::Qwen3YesNo { yes_id, no_id } => {
                // Only the two rows the score needs: the embedding when tied (as transformers ties
                // them, a shipped lm_head is then not used), else lm_head, which must be there;
                // either may be quantized, then only these two rows are dequantized.
                let lm_head;
                let table = if c.tie_word_embeddings {
                    if ws.has("lm_head.weight") {
                        tracing::info!(
                            "tie_word_embeddings is true: scoring with embed_tokens, not the shipped lm_head"
                        );
                    }
                    &embed
                } else if ws.has("lm_head.weight") {
                    lm_head = Embedding::load(ws, "lm_head", c.vocab_size, h)?;
                    &lm_head
                } else {
                    return Err(Error::weights(
                        ws.path(),
                        "tie_word_embeddings is false (or unset) but the checkpoint has no lm_head.weight",
                    ));
                };
                let vocab = table.num_rows();
                for id in [*yes_id, *no_id] {
                    if id as usize >= vocab {
                        return Err(Error::weights(
                            ws.path(),
                            format!("token id {id} is outside the {vocab}-row lm_head"),
                        ));
                    }
                }
                Some(table.rows(&[*yes_id, *no_id])?)
            }
            Head::Qwen3SeqCls => Some(ws.get("score.weight", &[1, h])?),
            _ => None,
        };
        let rope_len = c.max_position_embeddings.max(1);
        let fused_cos_sin = if fused { Some(cos_sin_table(hd, rope_len, &c.rope, &ws.device)?) } else { None };
        Ok(Qwen3 {
            embed,
            layers,
            norm: RmsNorm::load(ws, "norm", h, eps)?,
            rotary: Rotary::new(hd, rope_len, &c.rope, ws.dtype, &ws.device)?,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            score_rows,
            fused_cos_sin,
        })
    }

    /// Final-norm hidden states [b, l, hidden]. Positions run 0..l over the padded row, as in the
    /// reference implementation.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (_, l) = batch.ids.dims2()?;
        if l > self.rotary.max_len() {
            return Err(Error::InvalidInput(format!(
                "sequence of {l} tokens is longer than the model's {} positions",
                self.rotary.max_len()
            )));
        }
        match &self.fused_cos_sin {
            Some(cs) => self.forward_fused(batch, cs),
            None => self.forward_generic(batch),
        }
    }

    /// Generic candle ops (CPU, Metal, f32/f16 on CUDA).
    fn forward_generic(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        let mut prof = profile::start(batch.ids.device())?;
        let mut x = self.embed.forward(&batch.ids)?;
        let bias = causal_padding_bias(&batch.mask)?;
        mark(&mut prof, "embed + mask")?;
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let rep = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let r = layer.in_norm.forward(&x)?;
            mark(&mut prof, "rms norm")?;
            let (q, k, v) = layer.qkv.forward(&r)?;
            mark(&mut prof, "q/k/v proj")?;
            let q = layer.q_norm.forward(&q.reshape((b, l, nh, hd))?)?.transpose(1, 2)?;
            let k = layer.k_norm.forward(&k.reshape((b, l, nkv, hd))?)?.transpose(1, 2)?;
            let v = v.reshape((b, l, nkv, hd))?.transpose(1, 2)?;
            let q = self.rotary.apply(&q)?;
            let k = self.rotary.apply(&k)?;
            mark(&mut prof, "q/k norm + rope")?;
            let (k, v) = if rep > 1 { (repeat_kv(&k, rep)?, repeat_kv(&v, rep)?) } else { (k, v) };
            let ctx = attention(&q, &k, &v, &bias, scale)?.transpose(1, 2)?.reshape((b, l, nh * hd))?;
            mark(&mut prof, "attention")?;
            let x1 = (layer.o.forward(&ctx)? + &x)?;
            mark(&mut prof, "o proj + residual")?;
            let r = layer.post_norm.forward(&x1)?;
            mark(&mut prof, "rms norm")?;
            let (g, u) = layer.gate_up.forward(&r)?;
            mark(&mut prof, "gate/up proj")?;
            let m = (g.silu()? * u)?;
            mark(&mut prof, "silu * up")?;
            x = (layer.down.forward(&m)? + x1)?;
            mark(&mut prof, "down proj + residual")?;
        }
        let out = self.norm.forward(&x)?;
        mark(&mut prof, "rms norm")?;
        Ok(out)
    }

    /// bf16 on CUDA with embedrank's kernels (`cuda_ops`). Activations stay [tokens, features]; the
    /// residual stream `x` and its normed copy `r` come out of one add + norm kernel per sublayer.
    fn forward_fused(&self, batch: &Batch, cos_sin: &Tensor) -> Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        let device = batch.ids.device();
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let (t, rep) = (b * l, nh / nkv);
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let mut prof = profile::start(device)?;
        let lengths: Vec<u32> = batch.lengths.iter().map(|&n| n as u32).collect();
        let lengths = Tensor::from_vec(lengths, b, device)?;
        let mut x = self.embed.forward(&batch.ids)?;
        let hidden = x.dim(D::Minus1)?;
        x = x.reshape((t, hidden))?;
        let first = self.layers.first().map_or(&self.norm, |layer| &layer.in_norm);
        let mut r = cuda_ops::rmsnorm(&x, first.weight(), first.eps())?;
        mark(&mut prof, "embed + rms norm")?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (q, k, v) = layer.qkv.forward(&r)?;
            mark(&mut prof, "q/k/v proj")?;
            let q = cuda_ops::rmsnorm_rope(&q, nh, layer.q_norm.weight(), cos_sin, l, layer.q_norm.eps())?;
            let k = cuda_ops::rmsnorm_rope(&k, nkv, layer.k_norm.weight(), cos_sin, l, layer.k_norm.eps())?;
            let v = cuda_ops::to_heads(&v, nkv, l)?;
            mark(&mut prof, "q/k norm + rope, v")?;
            // Query heads h*rep..(h+1)*rep share kv head h: as [b, nkv, rep * l, hd] they are one GEMM
            // against that head's keys, with no copy of k or v per query head.
            let scores = q.reshape((b, nkv, rep * l, hd))?.matmul(&k.t()?)?;
            mark(&mut prof, "attn q.k")?;
            cuda_ops::causal_softmax_(&scores, &lengths, batch.left_padded, scale)?;
            mark(&mut prof, "attn softmax")?;
            let ctx = cuda_ops::from_heads(&scores.matmul(&v)?.reshape((b, nh, l, hd))?)?;
            mark(&mut prof, "attn p.v")?;
            let o = layer.o.forward(&ctx)?;
            mark(&mut prof, "o proj")?;
            let (x1, r1) = cuda_ops::add_rmsnorm(&o, &x, layer.post_norm.weight(), layer.post_norm.eps())?;
            mark(&mut prof, "add + rms norm")?;
            let (g, u) = layer.gate_up.forward(&r1)?;
            mark(&mut prof, "gate/up proj")?;
            let m = cuda_ops::silu_mul(&g, &u)?;
            mark(&mut prof, "silu * up")?;
            let d = layer.down.forward(&m)?;
            mark(&mut prof, "down proj")?;
            let next = self.layers.get(i + 1).map_or(&self.norm, |n| &n.in_norm);
            (x, r) = cuda_ops::add_rmsnorm(&d, &x1, next.weight(), next.eps())?;
            mark(&mut prof, "add + rms norm")?;
        }
        Ok(r.reshape((b, l, hidden))?)
    }

    /// Raw reranker score per row: yes−no logit difference, or the seq-cls score, at the last
    /// real token.
    pub fn score(&self, batch: &Batch, head: &Head) -> Result<Tensor> {
        let rows = self
            .score_rows
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("this Qwen3 model has no reranker head".into()))?;
        let h = self.forward(batch)?;
        let last = last_token(&h, &batch.lengths, batch.left_padded)?;
        // `last` is a strided gather of rows; CUDA matmul needs it contiguous.
        let logits = last.contiguous()?.matmul(&rows.t()?)?.to_dtype(candle_core::DType::F32)?;
        Ok(match head {
            Head::Qwen3YesNo { .. } => (logits.narrow(1, 0, 1)? - logits.narrow(1, 1, 1)?)?.squeeze(1)?,
            _ => logits.squeeze(1)?,
        })
    }
}

/// [b, kv, l, d] -> [b, kv*rep, l, d], each kv head repeated `rep` times in place.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    let (b, kv, l, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?.expand((b, kv, rep, l, d))?.reshape((b, kv * rep, l, d))?)
}

/// Hidden state of each row's last real token: [b, hidden].
pub fn last_token(h: &Tensor, lengths: &[usize], left_padded: bool) -> Result<Tensor> {
    let l = h.dim(1)?;
    if left_padded {
        return Ok(h.narrow(1, l - 1, 1)?.squeeze(1)?);
    }
    let rows = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| h.get(i)?.get(n.max(1) - 1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?.reshape((lengths.len(), h.dim(D::Minus1)?))?)
}
