//! AVX-512 (F/BW/VL + FMA) kernels: unpack 4-/8-bit codes 16 at a time into f32 and apply
//! `scale * q + bias` with one FMA. Other bit widths use the scalar unpacker (they are rare in
//! published checkpoints and only cost time on the dequantize side).
//!
//! Every `unsafe` block here relies on two facts checked at the top of each safe wrapper:
//! the CPU has the features the inner function is compiled for, and the slices are long enough
//! for the unaligned loads/stores (k is a multiple of the group size, itself a multiple of 32).

#![cfg(target_arch = "x86_64")]
// AVX-512 intrinsics and `target_feature = "avx512*"` are stable since Rust 1.89 (Cargo.toml's
// `rust-version`).

use std::arch::x86_64::*;
use std::ops::Range;

use super::{scalar, AffineWeight, ParamRow};

fn available() -> bool {
    super::KernelPath::Avx512.is_available()
}

/// Dequantize groups `groups` of row `r` of `w` into `out[..groups.len() * group_size]`.
pub(crate) fn dequantize_groups(w: &AffineWeight, r: usize, groups: Range<usize>, out: &mut [f32]) {
    assert!(available(), "avx512 kernel called on a CPU without AVX-512");
    let gs = w.group_size();
    let (row, scales, biases) = w.row_parts(r);
    assert!(groups.end * gs <= w.k() && out.len() >= groups.len() * gs, "avx512 dequantize: range out of bounds");
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
/// length, a multiple of 16: up to sixteen accumulators, so the loop runs at FMA speed rather than
/// at load speed.
pub(crate) fn dot4(x: &[&[f32]], w: [&[f32]; 4], acc: &mut [[f32; 4]; 4]) {
    assert!(available(), "avx512 kernel called on a CPU without AVX-512");
    let len = w[0].len();
    assert!(len.is_multiple_of(16), "dot4: length {len} is not a multiple of 16");
    assert!(x.iter().chain(&w).all(|s| s.len() == len), "dot4: slices differ in length");
    // SAFETY: features checked above; every slice holds `len` floats, a multiple of 16.
    unsafe {
        match *x {
            [a] => dot_rx4([a], w, len, acc),
            [a, b] => dot_rx4([a, b], w, len, acc),
            [a, b, c] => dot_rx4([a, b, c], w, len, acc),
            [a, b, c, d] => dot_rx4([a, b, c, d], w, len, acc),
            _ => panic!("dot4: {} activation rows, expected 1 to 4", x.len()),
        }
    }
}

/// 4-bit: 16 bytes hold 32 codes, low nibble first. Splitting into low and high nibbles and
/// interleaving them bytewise restores element order.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
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
        let s = _mm512_set1_ps(scales.get(g));
        let b = _mm512_set1_ps(biases.get(g));
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

/// 8-bit: one byte per code.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
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
        let s = _mm512_set1_ps(scales.get(g));
        let b = _mm512_set1_ps(biases.get(g));
        let base = bytes.as_ptr().add(g * gs);
        for c in 0..gs / 16 {
            let v = _mm_loadu_si128(base.add(c * 16) as *const __m128i);
            let q = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
            _mm512_storeu_ps(chunk.as_mut_ptr().add(c * 16), _mm512_fmadd_ps(q, s, b));
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn dot_rx4<const R: usize>(x: [&[f32]; R], w: [&[f32]; 4], len: usize, acc: &mut [[f32; 4]; 4]) {
    let xp = x.map(|s| s.as_ptr());
    let wp = w.map(|s| s.as_ptr());
    let mut a = [[_mm512_setzero_ps(); 4]; R];
    let mut i = 0;
    while i < len {
        let wv = [
            _mm512_loadu_ps(wp[0].add(i)),
            _mm512_loadu_ps(wp[1].add(i)),
            _mm512_loadu_ps(wp[2].add(i)),
            _mm512_loadu_ps(wp[3].add(i)),
        ];
        for (r, ar) in a.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(xp[r].add(i));
            for (c, acc) in ar.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(xv, wv[c], *acc);
            }
        }
        i += 16;
    }
    for (r, ar) in a.iter().enumerate() {
        for (c, v) in ar.iter().enumerate() {
            acc[r][c] += _mm512_reduce_add_ps(*v);
        }
    }
}
