//! AVX-512 forms of `cpu_ops`' element-wise math (e^x, GELU's erf, softmax), written with
//! intrinsics where the portable loops cost too much: LLVM keeps the portable erf's division
//! (`vdivps`, one result per several cycles on one port) and builds 2^n from integer shifts, while
//! `vrcp14ps` plus one Newton step and `vscalefps` do the same in a few cheap instructions.
//! Measured in all-MiniLM-L6-v2's CPU forward pass (perf, SciFact documents): GELU and softmax were
//! 3.5% and 8% of the `--dtype int8` time. Same formulas and polynomials as the portable code
//! (`cpu_ops::exp_approx`, `cpu_ops::erf_approx`); results agree to a few f32 roundings.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Whether this CPU runs these functions.
pub(crate) fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// e^x on 16 lanes: 2^n · p(r) with n = round(x · log2 e), r = x − n ln 2 (two-part ln 2), p the
/// degree-6 Taylor polynomial, 2^n applied by `vscalefps`; inputs clamped to [−87.3, 88.3] (so −∞
/// gives e^−87.3 ≈ 1e−38, as the portable version).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3)), _mm512_set1_ps(88.3));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_fmadd_ps(r, _mm512_set1_ps(1.0 / 720.0), _mm512_set1_ps(1.0 / 120.0));
    for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// x · Φ(x) = 0.5 x (1 + erf(x / √2)) on 16 lanes, erf by Abramowitz & Stegun 7.1.26.
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu16(x: __m512) -> __m512 {
    let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let a = _mm512_abs_ps(z);
    let d = _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), a, _mm512_set1_ps(1.0));
    // 1/d: 14-bit estimate, one Newton step (relative error ~1e-8).
    let t0 = _mm512_rcp14_ps(d);
    let t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(d, t0, _mm512_set1_ps(2.0)));
    let mut y = _mm512_fmadd_ps(_mm512_set1_ps(1.061_405_4), t, _mm512_set1_ps(-1.453_152_1));
    for c in [1.421_413_8, -0.284_496_74, 0.254_829_6] {
        y = _mm512_fmadd_ps(y, t, _mm512_set1_ps(c));
    }
    let e = exp16(_mm512_fnmadd_ps(a, a, _mm512_setzero_ps()));
    let r = _mm512_fnmadd_ps(_mm512_mul_ps(y, t), e, _mm512_set1_ps(1.0));
    // erf has z's sign (r ≥ 0).
    let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
    let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
    let half = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
    _mm512_fmadd_ps(half, erf, half)
}

/// Lanes of the last, partial vector of `len` elements.
fn tail_mask(len: usize) -> __mmask16 {
    ((1u32 << (len % 16)) - 1) as __mmask16
}

/// GELU (erf form) of every element of `x`, in place.
///
/// # Safety
/// AVX-512 F available (`available()`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gelu_erf(x: &mut [f32]) {
    let mut c = x.chunks_exact_mut(16);
    for v in &mut c {
        _mm512_storeu_ps(v.as_mut_ptr(), gelu16(_mm512_loadu_ps(v.as_ptr())));
    }
    let rest = c.into_remainder();
    if !rest.is_empty() {
        let m = tail_mask(rest.len());
        let v = _mm512_maskz_loadu_ps(m, rest.as_ptr());
        _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, gelu16(v));
    }
}

/// Softmax of `row` in place: one pass for the maximum, one for e^(x − max) and its sum, one to
/// scale.
///
/// # Safety
/// AVX-512 F available (`available()`).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn softmax_row(row: &mut [f32]) {
    let (full, len) = (row.len() / 16 * 16, row.len());
    let m = tail_mask(len);
    let p = row.as_mut_ptr();
    let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..full).step_by(16) {
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(p.add(i)));
    }
    if full < len {
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), m, p.add(full)));
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut sum = _mm512_setzero_ps();
    for i in (0..full).step_by(16) {
        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), max));
        _mm512_storeu_ps(p.add(i), e);
        sum = _mm512_add_ps(sum, e);
    }
    if full < len {
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(full)), max));
        _mm512_mask_storeu_ps(p.add(full), m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for i in (0..full).step_by(16) {
        _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
    }
    if full < len {
        _mm512_mask_storeu_ps(p.add(full), m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(full)), inv));
    }
}
