//! AVX2 + FMA kernels, the path for x86-64 CPUs without AVX-512 (and the one tests force on
//! AVX-512 machines). Same scheme as `avx512.rs` with 8-lane vectors.
//!
//! Every `unsafe` block relies on the feature check at the top of each safe wrapper and on k being
//! a multiple of 32 (group sizes are 32/64/128), which bounds the unaligned loads and stores.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::ops::Range;

use super::{scalar, AffineWeight, ParamRow};

fn available() -> bool {
    super::KernelPath::Avx2.is_available()
}

/// Dequantize groups `groups` of row `r` of `w` into `out[..groups.len() * group_size]`.
pub(crate) fn dequantize_groups(w: &AffineWeight, r: usize, groups: Range<usize>, out: &mut [f32]) {
    assert!(available(), "avx2 kernel called on a CPU without AVX2/FMA");
    let gs = w.group_size();
    let (row, scales, biases) = w.row_parts(r);
    assert!(groups.end * gs <= w.k() && out.len() >= groups.len() * gs, "avx2 dequantize: range out of bounds");
    let out = &mut out[..groups.len() * gs];
    match w.bits() {
        // SAFETY: features checked above; `row` holds k*bits/8 bytes, of which the kernels read the
        // bytes of `groups`, and `out` holds exactly those groups' floats (asserted above).
        4 => unsafe { dequant4(bytemuck::cast_slice(row), scales, biases, gs, groups, out) },
        8 => unsafe { dequant8(bytemuck::cast_slice(row), scales, biases, gs, groups, out) },
        _ => scalar::dequantize_groups(w, r, groups, out),
    }
}

/// `acc[i][j] += x[i] · w[j]` for up to four activation rows and four weight rows, all of one
/// length, a multiple of 8. Two passes over two weight rows each (at most eight accumulators: AVX2
/// has 16 registers).
pub(crate) fn dot4(x: &[&[f32]], w: [&[f32]; 4], acc: &mut [[f32; 4]; 4]) {
    assert!(available(), "avx2 kernel called on a CPU without AVX2/FMA");
    let len = w[0].len();
    assert!(len.is_multiple_of(8), "dot4: length {len} is not a multiple of 8");
    assert!(x.iter().chain(&w).all(|s| s.len() == len), "dot4: slices differ in length");
    for half in 0..2 {
        let wh = [w[2 * half], w[2 * half + 1]];
        let mut part = [[0f32; 2]; 4];
        // SAFETY: features checked above; every slice holds `len` floats, a multiple of 8.
        unsafe {
            match *x {
                [a] => part[..1].copy_from_slice(&dot_rx2([a], wh, len)),
                [a, b] => part[..2].copy_from_slice(&dot_rx2([a, b], wh, len)),
                [a, b, c] => part[..3].copy_from_slice(&dot_rx2([a, b, c], wh, len)),
                [a, b, c, d] => part.copy_from_slice(&dot_rx2([a, b, c, d], wh, len)),
                _ => panic!("dot4: {} activation rows, expected 1 to 4", x.len()),
            }
        }
        for (r, p) in part.iter().enumerate().take(x.len()) {
            acc[r][2 * half] += p[0];
            acc[r][2 * half + 1] += p[1];
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn widen8(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    _mm_cvtss_f32(h)
}

/// 4-bit: 16 bytes hold 32 codes, low nibble first; interleaving low and high nibbles restores
/// element order.
#[target_feature(enable = "avx2,fma")]
unsafe fn dequant4(
    bytes: &[u8],
    scales: ParamRow<'_>,
    biases: ParamRow<'_>,
    gs: usize,
    groups: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(bytes.len() * 2 >= groups.end * gs && out.len() == groups.len() * gs);
    let mask = _mm_set1_epi8(0x0F);
    for (chunk, g) in out.chunks_exact_mut(gs).zip(groups) {
        let s = _mm256_set1_ps(scales.get(g));
        let b = _mm256_set1_ps(biases.get(g));
        let base = bytes.as_ptr().add(g * gs / 2);
        for c in 0..gs / 32 {
            let v = _mm_loadu_si128(base.add(c * 16) as *const __m128i);
            let lo = _mm_and_si128(v, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
            let a = _mm_unpacklo_epi8(lo, hi);
            let z = _mm_unpackhi_epi8(lo, hi);
            let dst = chunk.as_mut_ptr().add(c * 32);
            _mm256_storeu_ps(dst, _mm256_fmadd_ps(widen8(a), s, b));
            _mm256_storeu_ps(dst.add(8), _mm256_fmadd_ps(widen8(_mm_srli_si128(a, 8)), s, b));
            _mm256_storeu_ps(dst.add(16), _mm256_fmadd_ps(widen8(z), s, b));
            _mm256_storeu_ps(dst.add(24), _mm256_fmadd_ps(widen8(_mm_srli_si128(z, 8)), s, b));
        }
    }
}

/// 8-bit: one byte per code.
#[target_feature(enable = "avx2,fma")]
unsafe fn dequant8(
    bytes: &[u8],
    scales: ParamRow<'_>,
    biases: ParamRow<'_>,
    gs: usize,
    groups: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(bytes.len() >= groups.end * gs && out.len() == groups.len() * gs);
    for (chunk, g) in out.chunks_exact_mut(gs).zip(groups) {
        let s = _mm256_set1_ps(scales.get(g));
        let b = _mm256_set1_ps(biases.get(g));
        let base = bytes.as_ptr().add(g * gs);
        for c in 0..gs / 16 {
            let v = _mm_loadu_si128(base.add(c * 16) as *const __m128i);
            let dst = chunk.as_mut_ptr().add(c * 16);
            _mm256_storeu_ps(dst, _mm256_fmadd_ps(widen8(v), s, b));
            _mm256_storeu_ps(dst.add(8), _mm256_fmadd_ps(widen8(_mm_srli_si128(v, 8)), s, b));
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rx2<const R: usize>(x: [&[f32]; R], w: [&[f32]; 2], len: usize) -> [[f32; 2]; R] {
    let xp = x.map(|s| s.as_ptr());
    let wp = w.map(|s| s.as_ptr());
    let mut a = [[_mm256_setzero_ps(); 2]; R];
    let mut i = 0;
    while i < len {
        let w0 = _mm256_loadu_ps(wp[0].add(i));
        let w1 = _mm256_loadu_ps(wp[1].add(i));
        for (r, ar) in a.iter_mut().enumerate() {
            let xv = _mm256_loadu_ps(xp[r].add(i));
            ar[0] = _mm256_fmadd_ps(xv, w0, ar[0]);
            ar[1] = _mm256_fmadd_ps(xv, w1, ar[1]);
        }
        i += 8;
    }
    let mut out = [[0f32; 2]; R];
    for (o, ar) in out.iter_mut().zip(&a) {
        *o = [hsum(ar[0]), hsum(ar[1])];
    }
    out
}
