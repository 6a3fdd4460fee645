//! The Apple Silicon (AArch64) path, written as portable Rust shaped for LLVM's vectorizer rather
//! than with `std::arch::aarch64` intrinsics: fixed-width lane arrays and `mul_add` compile to NEON
//! `fmla` on AArch64, and the same code builds (and is tested) on x86-64, where no AArch64 toolchain
//! is available to check hand-written intrinsics.

use std::ops::Range;

use super::{scalar, AffineWeight};

/// Dequantize groups `groups` of row `r` of `w` into `out[..groups.len() * group_size]`.
pub(crate) fn dequantize_groups(w: &AffineWeight, r: usize, groups: Range<usize>, out: &mut [f32]) {
    let (row, scales, biases) = w.row_parts(r);
    let gs = w.group_size();
    let out = &mut out[..groups.len() * gs];
    match w.bits() {
        4 => {
            let bytes: &[u8] = bytemuck::cast_slice(row);
            for (chunk, g) in out.chunks_exact_mut(gs).zip(groups) {
                let (s, b) = (scales.get(g), biases.get(g));
                let src = &bytes[g * gs / 2..(g + 1) * gs / 2];
                for (pair, &byte) in chunk.chunks_exact_mut(2).zip(src) {
                    pair[0] = ((byte & 0x0F) as f32).mul_add(s, b);
                    pair[1] = ((byte >> 4) as f32).mul_add(s, b);
                }
            }
        }
        8 => {
            let bytes: &[u8] = bytemuck::cast_slice(row);
            for (chunk, g) in out.chunks_exact_mut(gs).zip(groups) {
                let (s, b) = (scales.get(g), biases.get(g));
                for (o, &q) in chunk.iter_mut().zip(&bytes[g * gs..(g + 1) * gs]) {
                    *o = (q as f32).mul_add(s, b);
                }
            }
        }
        _ => scalar::dequantize_groups(w, r, groups, out),
    }
}

/// `acc[i][j] += x[i] · w[j]` for up to four activation rows and four weight rows of one length:
/// each weight chunk is reused across the activation rows while it is in registers.
pub(crate) fn dot4(x: &[&[f32]], w: [&[f32]; 4], acc: &mut [[f32; 4]; 4]) {
    const L: usize = 4;
    let len = w[0].len();
    let mut lanes = [[[0f32; L]; 4]; 4];
    let mut i = 0;
    while i + L <= len {
        for (r, xr) in x.iter().enumerate() {
            let xv = &xr[i..i + L];
            for (c, wc) in w.iter().enumerate() {
                let wv = &wc[i..i + L];
                for l in 0..L {
                    lanes[r][c][l] = xv[l].mul_add(wv[l], lanes[r][c][l]);
                }
            }
        }
        i += L;
    }
    for (r, xr) in x.iter().enumerate() {
        for (c, wc) in w.iter().enumerate() {
            let tail: f32 = xr[i..len].iter().zip(&wc[i..len]).map(|(a, b)| a * b).sum();
            acc[r][c] += lanes[r][c].iter().sum::<f32>() + tail;
        }
    }
}
