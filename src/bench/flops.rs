//! Forward-pass FLOPs of the useful work, for achieved FLOP/s and MFU.
//!
//! Counted: the matrix products of every layer (2 FLOPs per multiply-add) for the real tokens only,
//! plus attention scores and the weighted sum (QKᵀ and AV) over the real tokens of each sequence,
//! with the causal half only for decoders. Not counted: padding (wasted work is not useful work),
//! norms, activations, softmax, embeddings lookups, and the tiny pooling/score heads.

use crate::spec::Arch;

/// Peak dense bf16 tensor throughput of an H100/H200 SXM (989 TFLOP/s): the MFU denominator on CUDA.
pub const HOPPER_BF16_DENSE_TFLOPS: f64 = 989.0;

/// FLOPs of one token through the linear layers (independent of sequence length).
pub fn linear_flops_per_token(arch: &Arch) -> f64 {
    let per_layer = match arch {
        Arch::Bert(c) => {
            let h = c.hidden_size as f64;
            4.0 * h * h + 2.0 * h * c.intermediate_size as f64
        }
        Arch::Qwen3(c) => {
            let h = c.hidden_size as f64;
            let q = (c.num_attention_heads * c.head_dim()) as f64;
            let kv = (c.num_key_value_heads * c.head_dim()) as f64;
            h * q + 2.0 * h * kv + q * h + 3.0 * h * c.intermediate_size as f64
        }
    };
    2.0 * layers(arch) * per_layer
}

fn layers(arch: &Arch) -> f64 {
    match arch {
        Arch::Bert(c) => c.num_hidden_layers as f64,
        Arch::Qwen3(c) => c.num_hidden_layers as f64,
    }
}

/// Attention FLOPs (QKᵀ and AV) of one sequence of `n` real tokens.
pub fn attention_flops(arch: &Arch, n: usize) -> f64 {
    let n = n as f64;
    match arch {
        // Bidirectional: every token attends to all n.
        Arch::Bert(c) => 4.0 * layers(arch) * c.hidden_size as f64 * n * n,
        // Causal: token t attends to t+1 tokens, n(n+1)/2 pairs in all.
        Arch::Qwen3(c) => {
            let q = (c.num_attention_heads * c.head_dim()) as f64;
            4.0 * layers(arch) * q * n * (n + 1.0) / 2.0
        }
    }
}

/// Useful forward FLOPs of a set of sequences given their real lengths.
pub fn forward_flops(arch: &Arch, lengths: impl IntoIterator<Item = usize>) -> f64 {
    let per_token = linear_flops_per_token(arch);
    lengths.into_iter().map(|n| per_token * n as f64 + attention_flops(arch, n)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BertConfig, Qwen3Config};

    fn minilm() -> Arch {
        let cfg = serde_json::json!({
            "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
            "intermediate_size": 1536, "hidden_act": "gelu", "max_position_embeddings": 512,
            "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0
        });
        Arch::Bert(serde_json::from_value::<BertConfig>(cfg).unwrap())
    }

    fn qwen3_06b() -> Arch {
        let cfg = serde_json::json!({
            "vocab_size": 151669, "hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16,
            "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
            "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true, "attention_bias": false
        });
        Arch::Qwen3(serde_json::from_value::<Qwen3Config>(cfg).unwrap())
    }

    #[test]
    fn minilm_by_hand() {
        // 6 layers × (4·384² + 2·384·1536) weights × 2 FLOPs = 21,233,664 per token.
        let a = minilm();
        assert_eq!(linear_flops_per_token(&a), 21_233_664.0);
        // 4 · 6 layers · 384 · n²
        assert_eq!(attention_flops(&a, 10), 4.0 * 6.0 * 384.0 * 100.0);
        assert_eq!(forward_flops(&a, [10, 0]), 10.0 * 21_233_664.0 + 921_600.0);
    }

    #[test]
    fn qwen3_06b_by_hand() {
        // Per layer: q 1024·2048 + k,v 2·1024·1024 + o 2048·1024 + mlp 3·1024·3072 = 15,728,640 weights;
        // ×28 layers = 440.4M non-embedding weights, ×2 FLOPs.
        let a = qwen3_06b();
        assert_eq!(linear_flops_per_token(&a), 2.0 * 28.0 * 15_728_640.0);
        // Causal: 4 · 28 · 2048 · n(n+1)/2
        assert_eq!(attention_flops(&a, 3), 4.0 * 28.0 * 2048.0 * 6.0);
    }
}
