//! MLX affine quantization of one weight matrix for `convert`: `weights::qkernel::quantize` (the one
//! implementation of MLX's `affine_quantize`, shared with the kernel's tests) run on row blocks in
//! parallel, since a large embedding table is hundreds of millions of values.

use rayon::prelude::*;

use crate::weights::qkernel;
use crate::Result;

/// One quantized matrix [n, k]: packed codes [n, k*bits/32], scales and biases [n, k/group_size],
/// the scales/biases still in f32 (the writer rounds them to the checkpoint's dtype).
pub struct Quantized {
    pub packed: Vec<u32>,
    pub scales: Vec<f32>,
    pub biases: Vec<f32>,
}

/// Rows per parallel block: large enough to amortize, small enough to balance.
const BLOCK_ROWS: usize = 256;

/// Quantize `w` ([n, k] row-major) exactly as `mx.quantize` does. Rows are independent in MLX's
/// scheme, so blocks of rows concatenate to the whole-matrix result.
pub fn quantize(w: &[f32], n: usize, k: usize, bits: u32, group_size: usize) -> Result<Quantized> {
    let blocks: Vec<(usize, usize)> = (0..n).step_by(BLOCK_ROWS).map(|r| (r, (r + BLOCK_ROWS).min(n))).collect();
    let parts = blocks
        .par_iter()
        .map(|&(a, b)| qkernel::quantize(&w[a * k..b * k], b - a, k, bits, group_size))
        .collect::<Result<Vec<_>>>()?;
    let mut q = Quantized {
        packed: Vec::with_capacity(n * k * bits as usize / 32),
        scales: Vec::with_capacity(n * k / group_size),
        biases: Vec::with_capacity(n * k / group_size),
    };
    for p in parts {
        q.packed.extend_from_slice(p.packed());
        q.scales.extend_from_slice(&p.scales());
        q.biases.extend_from_slice(&p.biases());
    }
    Ok(q)
}
