//! AVX-512 (F/BW/VL + FMA) kernels: unpack 4-/8-bit codes 16 at a time into f32 and apply
//! `scale * q + bias` with one FMA. Other bit widths use the scalar unpacker (they are rare in
//! published checkpoints and only cost time on the dequantize side of the tiled GEMM).
//!
//! Every `unsafe` block here relies on two facts checked at the top of each safe wrapper:
//! the CPU has the features the inner function is compiled for, and the slices are long enough
//! for the unaligned loads/stores (k is a multiple of the group size, itself a multiple of 32).

#![cfg(target_arch = "x86_64")]
// AVX-512 intrinsics and `target_feature = "avx512*"` are stable since Rust 1.89 (Cargo.toml's
// `rust-version`).

use std::arch::x86_64::*;

use super::{scalar, AffineWeight};

fn available() -> bool {
    super::KernelPath::Avx512.is_available()
}

/// Dequantize row `r` of `w` into `out[..k]`.
pub(crate) fn dequantize_row(w: &AffineWeight, r: usize, out: &mut [f32]) {
    assert!(available(), "avx512 kernel called on a CPU without AVX-512");
    let (row, scales, biases) = w.row_parts(r);
    let out = &mut out[..w.k()];
    match w.bits() {
        // SAFETY: features checked above; `row` holds k*bits/8 bytes and `out` k floats, which is
        // what the loops index (see the kernels' comments).
        4 => unsafe { dequant4(bytemuck::cast_slice(row), scales, biases, w.group_size(), out) },
        8 => unsafe { dequant8(bytemuck::cast_slice(row), scales, biases, w.group_size(), out) },
        _ => scalar::dequantize_row(w, r, out),
    }
}

/// Dot product of two equal-length slices.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert!(available(), "avx512 kernel called on a CPU without AVX-512");
    let n = a.len().min(b.len());
    // SAFETY: features checked above; the kernel reads only indices < n of both slices.
    unsafe { dot_inner(&a[..n], &b[..n]) }
}

/// 4-bit: 16 bytes hold 32 codes, low nibble first. Splitting into low and high nibbles and
/// interleaving them bytewise restores element order. Reads bytes [off/2, off/2+16) for off+32 <= k.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn dequant4(bytes: &[u8], scales: &[f32], biases: &[f32], gs: usize, out: &mut [f32]) {
    debug_assert!(bytes.len() * 2 >= out.len() && out.len().is_multiple_of(32));
    let mask = _mm_set1_epi8(0x0F);
    for (g, chunk) in out.chunks_exact_mut(gs).enumerate() {
        let s = _mm512_set1_ps(scales[g]);
        let b = _mm512_set1_ps(biases[g]);
        let base = bytes.as_ptr().add(g * gs / 2);
        for c in 0..gs / 32 {
            let v = _mm_loadu_si128(base.add(c * 16) as *const __m128i);
            let lo = _mm_and_si128(v, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
            let q0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
            let q1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(lo, hi)));
            let dst = chunk.as_mut_ptr().add(c * 32);
            _mm512_storeu_ps(dst, _mm512_fmadd_ps(q0, s, b));
            _mm512_storeu_ps(dst.add(16), _mm512_fmadd_ps(q1, s, b));
        }
    }
}

/// 8-bit: one byte per code. Reads bytes [off, off+16) for off+16 <= k.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn dequant8(bytes: &[u8], scales: &[f32], biases: &[f32], gs: usize, out: &mut [f32]) {
    debug_assert!(bytes.len() >= out.len() && out.len().is_multiple_of(32));
    for (g, chunk) in out.chunks_exact_mut(gs).enumerate() {
        let s = _mm512_set1_ps(scales[g]);
        let b = _mm512_set1_ps(biases[g]);
        let base = bytes.as_ptr().add(g * gs);
        for c in 0..gs / 16 {
            let v = _mm_loadu_si128(base.add(c * 16) as *const __m128i);
            let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
            _mm512_storeu_ps(chunk.as_mut_ptr().add(c * 16), _mm512_fmadd_ps(q, s, b));
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn dot_inner(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 16 * j)), _mm512_loadu_ps(pb.add(i + 16 * j)), *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc[0]);
        i += 16;
    }
    if i < n {
        // Masked loads read only the remaining lanes, so no element past the end is touched.
        let m: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
        let va = _mm512_maskz_loadu_ps(m, pa.add(i));
        let vb = _mm512_maskz_loadu_ps(m, pb.add(i));
        acc[1] = _mm512_fmadd_ps(va, vb, acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}
