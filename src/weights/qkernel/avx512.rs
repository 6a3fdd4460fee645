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

/// `acc[i][j] = x[i] · w[r0 + j]` over the whole row, for one or two activation rows and up to four
/// weight rows, dequantizing in registers: no buffer, so for one or two rows (memory-bound) the
/// codes go from memory to the FMAs once. Missing weight rows (`nr < 4`) repeat the last one.
/// Returns false (computing nothing) for bit widths other than 4 and 8.
pub(crate) fn gemv4(w: &AffineWeight, r0: usize, nr: usize, x: &[&[f32]], acc: &mut [[f32; 4]; 4]) -> bool {
    assert!(available(), "avx512 kernel called on a CPU without AVX-512");
    assert!((1..=4).contains(&nr) && r0 + nr <= w.n(), "gemv4: rows {r0}+{nr} out of 0..{}", w.n());
    assert!(x.iter().all(|s| s.len() == w.k()), "gemv4: activation rows must hold k values");
    let part = |j: usize| w.row_parts(r0 + j.min(nr - 1));
    let rows = [part(0), part(1), part(2), part(3)];
    let codes = rows.map(|(r, _, _)| bytemuck::cast_slice::<u32, u8>(r));
    let sc = rows.map(|(_, s, _)| s);
    let bi = rows.map(|(_, _, b)| b);
    let (gs, k) = (w.group_size(), w.k());
    // SAFETY: features checked above; each code row holds k*bits/8 bytes and each activation row k
    // floats (asserted above), which is what the kernel reads.
    unsafe {
        let out = match (w.bits(), x) {
            (4, [a]) => gemv_rx4::<1, 4>([a], codes, sc, bi, gs, k),
            (8, [a]) => gemv_rx4::<1, 8>([a], codes, sc, bi, gs, k),
            (4, [a, b]) => gemv_rx4::<2, 4>([a, b], codes, sc, bi, gs, k),
            (8, [a, b]) => gemv_rx4::<2, 8>([a, b], codes, sc, bi, gs, k),
            (4 | 8, _) => panic!("gemv4: {} activation rows, expected 1 or 2", x.len()),
            _ => return false,
        };
        for (a, o) in acc.iter_mut().zip(out) {
            *a = o;
        }
    }
    true
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn gemv_rx4<const R: usize, const BITS: usize>(
    x: [&[f32]; R],
    codes: [&[u8]; 4],
    sc: [ParamRow<'_>; 4],
    bi: [ParamRow<'_>; 4],
    gs: usize,
    k: usize,
) -> [[f32; 4]; 4] {
    let mask = _mm_set1_epi8(0x0F);
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    for g in 0..k / gs {
        let s = [0, 1, 2, 3].map(|j| _mm512_set1_ps(sc[j].get(g)));
        let b = [0, 1, 2, 3].map(|j| _mm512_set1_ps(bi[j].get(g)));
        for c in 0..gs / 32 {
            let e = g * gs + c * 32;
            let xv = x.map(|r| [_mm512_loadu_ps(r.as_ptr().add(e)), _mm512_loadu_ps(r.as_ptr().add(e + 16))]);
            for j in 0..4 {
                // The codes stream from memory; fetch a few iterations ahead (a hint: prefetching
                // past the end of the row is harmless).
                _mm_prefetch::<_MM_HINT_T0>(codes[j].as_ptr().wrapping_add(e * BITS / 8 + 512) as *const i8);
                let (q0, q1) = if BITS == 4 {
                    let v = _mm_loadu_si128(codes[j].as_ptr().add(e / 2) as *const __m128i);
                    let lo = _mm_and_si128(v, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
                    (_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi))
                } else {
                    let p = codes[j].as_ptr().add(e);
                    (_mm_loadu_si128(p as *const __m128i), _mm_loadu_si128(p.add(16) as *const __m128i))
                };
                let w0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q0)), s[j], b[j]);
                let w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q1)), s[j], b[j]);
                for (ar, xr) in acc.iter_mut().zip(&xv) {
                    ar[j] = _mm512_fmadd_ps(xr[0], w0, ar[j]);
                    ar[j] = _mm512_fmadd_ps(xr[1], w1, ar[j]);
                }
            }
        }
    }
    let mut out = [[0f32; 4]; 4];
    for (o, ar) in out.iter_mut().zip(&acc) {
        _mm_storeu_ps(o.as_mut_ptr(), sum4(*ar));
    }
    out
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
        let mut sums = [0f32; 4];
        _mm_storeu_ps(sums.as_mut_ptr(), sum4(*ar));
        for (o, s) in acc[r].iter_mut().zip(sums) {
            *o += s;
        }
    }
}

/// The horizontal sums of four vectors, `[Σv0, Σv1, Σv2, Σv3]`: folded pairwise with cross-lane
/// shuffles (10 operations where four separate reductions take about 30).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn sum4(v: [__m512; 4]) -> __m128 {
    // 128-bit quarters: [v0 q0+q2, v0 q1+q3, v1 q0+q2, v1 q1+q3], and the same for v2, v3.
    let t01 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(v[0], v[1]),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(v[0], v[1]),
    );
    let t23 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(v[2], v[3]),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(v[2], v[3]),
    );
    // Quarter i: four partial sums of v_i.
    let u =
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(t01, t23), _mm512_shuffle_f32x4::<0b11_01_11_01>(t01, t23));
    // Within each quarter: lanes [2,3,0,1] then [1,0,3,2] added leave the quarter's total in every lane.
    let u = _mm512_add_ps(u, _mm512_permute_ps::<0b01_00_11_10>(u));
    let u = _mm512_add_ps(u, _mm512_permute_ps::<0b10_11_00_01>(u));
    let idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, u))
}
