//! The Apple Silicon (AArch64) path, written as portable Rust shaped for LLVM's vectorizer rather
//! than with `std::arch::aarch64` intrinsics: fixed-width lane arrays and `mul_add` compile to NEON
//! `fmla` on AArch64, and the same code builds (and is tested) on x86-64, where no AArch64 toolchain
//! is available to check hand-written intrinsics.

use super::{scalar, AffineWeight};

const LANES: usize = 16;

/// Dequantize row `r` of `w` into `out[..k]`.
pub(crate) fn dequantize_row(w: &AffineWeight, r: usize, out: &mut [f32]) {
    let (row, scales, biases) = w.row_parts(r);
    let gs = w.group_size();
    let out = &mut out[..w.k()];
    match w.bits() {
        4 => {
            let bytes: &[u8] = bytemuck::cast_slice(row);
            for ((chunk, src), (&s, &b)) in
                out.chunks_exact_mut(gs).zip(bytes.chunks_exact(gs / 2)).zip(scales.iter().zip(biases))
            {
                for (pair, &byte) in chunk.chunks_exact_mut(2).zip(src) {
                    pair[0] = ((byte & 0x0F) as f32).mul_add(s, b);
                    pair[1] = ((byte >> 4) as f32).mul_add(s, b);
                }
            }
        }
        8 => {
            let bytes: &[u8] = bytemuck::cast_slice(row);
            for ((chunk, src), (&s, &b)) in
                out.chunks_exact_mut(gs).zip(bytes.chunks_exact(gs)).zip(scales.iter().zip(biases))
            {
                for (o, &q) in chunk.iter_mut().zip(src) {
                    *o = (q as f32).mul_add(s, b);
                }
            }
        }
        _ => scalar::dequantize_row(w, r, out),
    }
}

/// Dot product with `LANES` independent accumulators so the loop vectorizes without reassociation.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}
