//! AVX2 + FMA kernels, the path for x86-64 CPUs without AVX-512 (and the one tests force on
//! AVX-512 machines). Same scheme as `avx512.rs` with 8-lane vectors.
//!
//! Every `unsafe` block relies on the feature check at the top of each safe wrapper and on k being
//! a multiple of 32 (group sizes are 32/64/128), which bounds the unaligned loads and stores.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::{scalar, AffineWeight};

fn available() -> bool {
    super::KernelPath::Avx2.is_available()
}

/// Dequantize row `r` of `w` into `out[..k]`.
pub(crate) fn dequantize_row(w: &AffineWeight, r: usize, out: &mut [f32]) {
    assert!(available(), "avx2 kernel called on a CPU without AVX2/FMA");
    let (row, scales, biases) = w.row_parts(r);
    let out = &mut out[..w.k()];
    match w.bits() {
        // SAFETY: features checked above; `row` holds k*bits/8 bytes and `out` k floats.
        4 => unsafe { dequant4(bytemuck::cast_slice(row), scales, biases, w.group_size(), out) },
        8 => unsafe { dequant8(bytemuck::cast_slice(row), scales, biases, w.group_size(), out) },
        _ => scalar::dequantize_row(w, r, out),
    }
}

/// Dot product of two equal-length slices.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert!(available(), "avx2 kernel called on a CPU without AVX2/FMA");
    let n = a.len().min(b.len());
    // SAFETY: features checked above; the kernel reads only indices < n of both slices.
    unsafe { dot_inner(&a[..n], &b[..n]) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn widen8(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// 4-bit: 16 bytes hold 32 codes, low nibble first; interleaving low and high nibbles restores
/// element order.
#[target_feature(enable = "avx2,fma")]
unsafe fn dequant4(bytes: &[u8], scales: &[f32], biases: &[f32], gs: usize, out: &mut [f32]) {
    debug_assert!(bytes.len() * 2 >= out.len() && out.len().is_multiple_of(32));
    let mask = _mm_set1_epi8(0x0F);
    for (g, chunk) in out.chunks_exact_mut(gs).enumerate() {
        let s = _mm256_set1_ps(scales[g]);
        let b = _mm256_set1_ps(biases[g]);
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
unsafe fn dequant8(bytes: &[u8], scales: &[f32], biases: &[f32], gs: usize, out: &mut [f32]) {
    debug_assert!(bytes.len() >= out.len() && out.len().is_multiple_of(32));
    for (g, chunk) in out.chunks_exact_mut(gs).enumerate() {
        let s = _mm256_set1_ps(scales[g]);
        let b = _mm256_set1_ps(biases[g]);
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
unsafe fn dot_inner(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8 * j)), _mm256_loadu_ps(pb.add(i + 8 * j)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    let mut total = _mm_cvtss_f32(h);
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}
