//! BERT encoder (BertModel, and the pooler + classifier of BertForSequenceClassification) with a
//! real padding mask, token type ids and absolute positions.

use candle_core::{Module, Tensor, D};

use super::layers::{attention, padding_bias, Embedding, LayerNorm};
use super::Batch;
use crate::spec::{Activation, BertConfig, Head};
use crate::weights::{Linear, WeightStore};
use crate::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod cpu;

/// Attention's input projections: on the CPU one GEMM over the concatenated weights (the input is
/// read and, on the integer path, quantized once; the output rows are q | k | v, which attention
/// reads with a row stride); elsewhere three layers.
enum Qkv {
    Fused(Linear),
    Split { q: Linear, k: Linear, v: Linear },
}

impl Qkv {
    fn load(ws: &WeightStore, p: &str, h: usize) -> Result<Self> {
        // The input is a layer-normalized hidden state: a few huge channels (see
        // `linear_outlier_split`).
        let part = |name: &str| ws.linear_outlier_split(&format!("{p}.attention.self.{name}"), h, h, true);
        let (q, k, v) = (part("query")?, part("key")?, part("value")?);
        if !ws.device.is_cpu() {
            return Ok(Qkv::Split { q, k, v });
        }
        Ok(match Linear::concat(vec![q, k, v])? {
            Ok(qkv) => Qkv::Fused(qkv),
            Err(mut p) => {
                let (v, k, q) = (p.remove(2), p.remove(1), p.remove(0));
                Qkv::Split { q, k, v }
            }
        })
    }

    /// q, k and v `[.., h]` of `x` (the tensor path).
    fn forward(&self, x: &Tensor, h: usize) -> Result<(Tensor, Tensor, Tensor)> {
        Ok(match self {
            Qkv::Fused(qkv) => {
                let y = qkv.forward(x)?;
                let part = |i: usize| y.narrow(D::Minus1, i * h, h)?.contiguous();
                (part(0)?, part(1)?, part(2)?)
            }
            Qkv::Split { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
        })
    }
}

struct Layer {
    qkv: Qkv,
    attn_out: Linear,
    attn_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

pub struct Bert {
    word: Embedding,
    pos: Embedding,
    types: Embedding,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    act: Activation,
    /// pooler + classifier, for cross-encoders
    classifier: Option<(Linear, Linear)>,
}

impl Bert {
    pub fn load(c: &BertConfig, head: &Head, ws: &WeightStore) -> Result<Self> {
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        let e = "embeddings";
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: Qkv::load(ws, &p, h)?,
                attn_out: ws.linear(&format!("{p}.attention.output.dense"), h, h, true)?,
                attn_ln: LayerNorm::load(ws, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
                inter: ws.linear_outlier_split(&format!("{p}.intermediate.dense"), h, c.intermediate_size, true)?,
                out: ws.linear(&format!("{p}.output.dense"), c.intermediate_size, h, true)?,
                out_ln: LayerNorm::load(ws, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        let classifier = match head {
            Head::BertClassifier { num_labels } => {
                Some((ws.linear("pooler.dense", h, h, true)?, ws.linear("classifier", h, *num_labels, true)?))
            }
            _ => None,
        };
        Ok(Bert {
            word: Embedding::load(ws, &format!("{e}.word_embeddings"), c.vocab_size, h)?,
            pos: Embedding::load(ws, &format!("{e}.position_embeddings"), c.max_position_embeddings, h)?,
            types: Embedding::load(ws, &format!("{e}.token_type_embeddings"), c.type_vocab_size, h)?,
            emb_ln: LayerNorm::load(ws, &format!("{e}.LayerNorm"), h, eps)?,
            layers,
            heads: c.num_attention_heads,
            act: c.hidden_act,
            classifier,
        })
    }

    /// Hidden states [b, l, hidden]; batches must be right-padded.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        if l > self.pos.num_rows() {
            return Err(Error::InvalidInput(format!(
                "sequence of {l} tokens is longer than the model's {} positions",
                self.pos.num_rows()
            )));
        }
        #[cfg(target_arch = "x86_64")]
        if self.cpu_fast_path(batch) {
            return self.forward_cpu(batch);
        }
        let positions = Tensor::arange(0u32, l as u32, batch.ids.device())?.unsqueeze(0)?.repeat((b, 1))?;
        let x = self
            .word
            .forward(&batch.ids)?
            .add(&self.types.forward(&batch.type_ids)?)?
            .add(&self.pos.forward(&positions)?)?;
        let mut x = self.emb_ln.forward(&x)?;
        let bias = padding_bias(&batch.mask)?;
        let hd = x.dim(D::Minus1)? / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let split = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, l, self.heads, hd))?.transpose(1, 2)?) };
            let (q, k, v) = layer.qkv.forward(&x, self.heads * hd)?;
            let (q, k, v) = (split(q)?, split(k)?, split(v)?);
            let ctx = attention(&q, &k, &v, &bias, scale)?.transpose(1, 2)?.reshape((b, l, self.heads * hd))?;
            let a = layer.attn_ln.forward(&(layer.attn_out.forward(&ctx)? + &x)?)?;
            let i = layer.inter.forward(&a)?;
            let i = match self.act {
                Activation::Gelu => i.gelu_erf()?,
                Activation::GeluTanh => i.gelu()?,
                Activation::Relu => i.relu()?,
                Activation::Silu => i.silu()?,
            };
            x = layer.out_ln.forward(&(layer.out.forward(&i)? + &a)?)?;
        }
        Ok(x)
    }

    /// Cross-encoder logits [b, num_labels]: tanh(pooler(h[CLS])) then the classifier.
    pub fn classify(&self, batch: &Batch) -> Result<Tensor> {
        let (pooler, cls) = self
            .classifier
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("this BERT model has no classification head".into()))?;
        let h = self.forward(batch)?;
        let first = h.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = pooler.forward(&first)?.tanh()?;
        Ok(cls.forward(&pooled)?)
    }
}
