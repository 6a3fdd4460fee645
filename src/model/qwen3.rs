//! Qwen3 decoder (Qwen3-Embedding, Qwen3-Reranker, Qwen3ForSequenceClassification): RMSNorm, q/k
//! norms before rotary embeddings, grouped-query attention with causal + padding mask, SwiGLU MLP.
//! Stateless: no KV cache, every forward sees the whole padded batch.

use candle_core::{Module, Tensor, D};

use super::layers::{attention, causal_padding_bias, Embedding, RmsNorm, Rotary};
use super::Batch;
use crate::spec::{Head, Qwen3Config};
use crate::weights::{Linear, WeightStore};
use crate::{Error, Result};

struct Layer {
    in_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
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
}

impl Qwen3 {
    pub fn load(c: &Qwen3Config, head: &Head, ws: &WeightStore) -> Result<Self> {
        let h = c.hidden_size;
        let hd = c.head_dim();
        let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps;
        let bias = c.attention_bias;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("layers.{i}");
            layers.push(Layer {
                in_norm: RmsNorm::load(ws, &format!("{p}.input_layernorm"), h, eps)?,
                q: ws.linear(&format!("{p}.self_attn.q_proj"), h, nh * hd, bias)?,
                k: ws.linear(&format!("{p}.self_attn.k_proj"), h, nkv * hd, bias)?,
                v: ws.linear(&format!("{p}.self_attn.v_proj"), h, nkv * hd, bias)?,
                o: ws.linear(&format!("{p}.self_attn.o_proj"), nh * hd, h, bias)?,
                q_norm: RmsNorm::load(ws, &format!("{p}.self_attn.q_norm"), hd, eps)?,
                k_norm: RmsNorm::load(ws, &format!("{p}.self_attn.k_norm"), hd, eps)?,
                post_norm: RmsNorm::load(ws, &format!("{p}.post_attention_layernorm"), h, eps)?,
                gate: ws.linear(&format!("{p}.mlp.gate_proj"), h, c.intermediate_size, false)?,
                up: ws.linear(&format!("{p}.mlp.up_proj"), h, c.intermediate_size, false)?,
                down: ws.linear(&format!("{p}.mlp.down_proj"), c.intermediate_size, h, false)?,
            });
        }
        let embed = Embedding::load(ws, "embed_tokens", c.vocab_size, h)?;
        let score_rows = match head {
            Head::Qwen3YesNo { yes_id, no_id } => {
                // Only the two rows the score needs: lm_head if shipped, else the tied embedding;
                // either may be quantized, then only these two rows are dequantized.
                let lm_head;
                let table = if ws.has("lm_head.weight") {
                    lm_head = Embedding::load(ws, "lm_head", c.vocab_size, h)?;
                    &lm_head
                } else {
                    &embed
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
        Ok(Qwen3 {
            embed,
            layers,
            norm: RmsNorm::load(ws, "norm", h, eps)?,
            rotary: Rotary::new(hd, rope_len, c.rope_theta, ws.dtype, &ws.device)?,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            score_rows,
        })
    }

    /// Final-norm hidden states [b, l, hidden]. Positions run 0..l over the padded row, as in the
    /// reference implementation.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        if l > self.rotary.max_len() {
            return Err(Error::InvalidInput(format!(
                "sequence of {l} tokens is longer than the model's {} positions",
                self.rotary.max_len()
            )));
        }
        let mut x = self.embed.forward(&batch.ids)?;
        let bias = causal_padding_bias(&batch.mask)?;
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let rep = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let r = layer.in_norm.forward(&x)?;
            let q = layer.q.forward(&r)?.reshape((b, l, nh, hd))?;
            let k = layer.k.forward(&r)?.reshape((b, l, nkv, hd))?;
            let v = layer.v.forward(&r)?.reshape((b, l, nkv, hd))?.transpose(1, 2)?;
            let q = self.rotary.apply(&layer.q_norm.forward(&q)?.transpose(1, 2)?)?;
            let k = self.rotary.apply(&layer.k_norm.forward(&k)?.transpose(1, 2)?)?;
            let (k, v) = if rep > 1 { (repeat_kv(&k, rep)?, repeat_kv(&v, rep)?) } else { (k, v) };
            let ctx = attention(&q, &k, &v, &bias, scale)?.transpose(1, 2)?.reshape((b, l, nh * hd))?;
            let x1 = (layer.o.forward(&ctx)? + &x)?;
            let r = layer.post_norm.forward(&x1)?;
            let m = (layer.gate.forward(&r)?.silu()? * layer.up.forward(&r)?)?;
            x = (layer.down.forward(&m)? + x1)?;
        }
        self.norm.forward(&x)
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
