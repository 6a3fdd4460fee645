//! Portable scalar kernels: the reference every SIMD path is tested against, and the fallback on
//! CPUs without one. Written for clarity, not speed.

use std::ops::Range;

use super::AffineWeight;

/// Code `j` of a packed row: MLX stores each row as a little-endian, LSB-first stream of `bits`-wide
/// codes cut into u32 words, so 3/5/6-bit codes may straddle two words.
#[inline]
pub(crate) fn code(row: &[u32], j: usize, bits: u32) -> u32 {
    let off = j * bits as usize;
    let (w, sh) = (off / 32, (off % 32) as u32);
    let mut v = row[w] >> sh;
    if sh + bits > 32 {
        v |= row[w + 1] << (32 - sh);
    }
    v & ((1u32 << bits) - 1)
}

/// Dequantize groups `groups` of row `r` into `out[..groups.len() * group_size]`:
/// `w = scale * q + bias` per group, in f32.
pub(crate) fn dequantize_groups(w: &AffineWeight, r: usize, groups: Range<usize>, out: &mut [f32]) {
    let (gs, bits) = (w.group_size, w.bits);
    let (row, scales, biases) = w.row_parts(r);
    for (chunk, g) in out[..groups.len() * gs].chunks_exact_mut(gs).zip(groups) {
        let (s, b) = (scales.get(g), biases.get(g));
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = (code(row, g * gs + i, bits) as f32).mul_add(s, b);
        }
    }
}

/// Dequantize one weight row into `out` (len k).
pub(crate) fn dequantize_row(w: &AffineWeight, r: usize, out: &mut [f32]) {
    dequantize_groups(w, r, 0..w.k / w.group_size, out)
}

/// `out[m, n] = x[m, k] · Wᵀ`: dequantize each weight row, then a plain dot product per input row.
pub(crate) fn matmul(w: &AffineWeight, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    let mut row = vec![0f32; k];
    for r in 0..n {
        dequantize_row(w, r, &mut row);
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            out[i * n + r] = xi.iter().zip(&row).map(|(a, b)| a * b).sum();
        }
    }
}
