//! f32 building blocks of the CPU encoder fast path (`bert/cpu.rs`): variable-length attention,
//! layer norm, GELU and softmax (the linear layers are `Linear::forward_f32`, in the weights stage).
//!
//! Why not candle's ops: on the CPU every candle op allocates a fresh output (page faults on each
//! large buffer), GELU and softmax go through scalar libm `erff`/`expf`, and `x.matmul(&w.t())`
//! repacks the weight on every call — together about two thirds of the time of a MiniLM forward
//! pass (perf, SciFact documents). The element-wise loops here are plain Rust compiled a second
//! time with AVX-512/AVX2 enabled and picked at run time, so LLVM vectorizes them; the matmuls use
//! the same `gemm` crate kernels as candle.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::simd::{dot_lanes, multiversion, sum_lanes, SharedMut, LANES};

#[inline(always)]
fn sq_dev_lanes(a: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for l in 0..LANES {
            let d = x[l] - mean;
            acc[l] = d.mul_add(d, acc[l]);
        }
    }
    acc.iter().sum::<f32>() + c.remainder().iter().map(|x| (x - mean) * (x - mean)).sum::<f32>()
}

multiversion!(layer_norm_rows(x: &mut [f32], dim: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        // Two passes (mean, then squared deviations), as PyTorch computes it.
        let mean = sum_lanes(row) / dim as f32;
        let var = sq_dev_lanes(row, mean) / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = ((*v - mean) * inv).mul_add(*g, *b);
        }
    }
});

/// e^x for f32 in a form LLVM vectorizes: 2^n · p(r) with x = n ln2 + r, |r| <= ln2/2, degree-6
/// polynomial (relative error about 2e-7 over the range; the result saturates below -87.3).
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 * 2^23 rounds x·log2(e) to the nearest integer n and leaves n in the low mantissa
    // bits, so 2^n is built with integer ops only (a float-to-int `as` cast would not vectorize).
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x.mul_add(LOG2E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    let p = p.mul_add(r, 1.0 / 24.0);
    let p = p.mul_add(r, 1.0 / 6.0);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    let scale = f32::from_bits(t.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23);
    p * scale
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), branch-free.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let y = 1.061_405_4f32.mul_add(t, -1.453_152_1);
    let y = y.mul_add(t, 1.421_413_8);
    let y = y.mul_add(t, -0.284_496_74);
    let y = y.mul_add(t, 0.254_829_6);
    let r = 1.0 - y * t * exp_approx(-a * a);
    r.copysign(x)
}

multiversion!(gelu_erf_portable(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf_approx(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
});

/// GELU, erf form, in place (the AVX-512 version where the CPU has it).
pub fn gelu_erf(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512_math::available() {
        // SAFETY: the CPU has AVX-512 F.
        return unsafe { super::avx512_math::gelu_erf(x) };
    }
    gelu_erf_portable(x)
}

multiversion!(gelu_tanh(x: &mut [f32]) {
    // tanh(u) = 1 - 2 / (e^{2u} + 1)
    for v in x.iter_mut() {
        let u = 0.797_884_6 * (0.044_715 * *v * *v * *v + *v);
        let t = 1.0 - 2.0 / (exp_approx(2.0 * u) + 1.0);
        *v = 0.5 * *v * (1.0 + t);
    }
});

multiversion!(relu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.max(0.0);
    }
});

multiversion!(silu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + exp_approx(-*v);
    }
});

#[inline(always)]
fn softmax_one(row: &mut [f32]) {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut c = row.chunks_exact(LANES);
    for v in &mut c {
        for l in 0..LANES {
            m[l] = m[l].max(v[l]);
        }
    }
    let max = c.remainder().iter().fold(m.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)), |a, b| a.max(*b));
    for v in row.iter_mut() {
        *v = exp_approx(*v - max);
    }
    let inv = 1.0 / sum_lanes(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

multiversion!(
    softmax_rows_portable(x: &mut [f32], dim: usize) {
        for row in x.chunks_exact_mut(dim) {
            softmax_one(row);
        }
    }
);

/// Softmax of each row of `x` (`dim` wide) in place (the AVX-512 version where the CPU has it).
pub fn softmax_rows(x: &mut [f32], dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::avx512_math::available() {
        for row in x.chunks_exact_mut(dim) {
            // SAFETY: the CPU has AVX-512 F.
            unsafe { super::avx512_math::softmax_row(row) };
        }
        return;
    }
    softmax_rows_portable(x, dim)
}

thread_local! {
    /// Per-thread attention score buffer, reused so each (sequence, head) task allocates nothing.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Sequences up to this length attend with direct dot products instead of two GEMM calls, whose
/// fixed cost dominates at a few tokens (a short query).
const SMALL_SEQ: usize = 32;

multiversion!(
    /// One head of one short sequence: `out` rows (stride `out_stride`) get columns `col..col+d`.
    attend_small(
        q: &[f32], k: &[f32], v: &[f32], stride: usize, l: usize, col: usize, d: usize, scale: f32, causal: bool,
        out: &mut [f32], out_stride: usize
    ) {
        let mut p = [0f32; SMALL_SEQ];
        for i in 0..l {
            let lim = if causal { i + 1 } else { l };
            let qi = &q[i * stride + col..i * stride + col + d];
            for (j, pj) in p.iter_mut().enumerate().take(lim) {
                *pj = dot_lanes(qi, &k[j * stride + col..j * stride + col + d]) * scale;
            }
            softmax_one(&mut p[..lim]);
            let o = &mut out[i * out_stride + col..i * out_stride + col + d];
            o.fill(0.0);
            for (j, pj) in p.iter().enumerate().take(lim) {
                for (oc, vc) in o.iter_mut().zip(&v[j * stride + col..j * stride + col + d]) {
                    *oc = pj.mul_add(*vc, *oc);
                }
            }
        }
    }
);

/// Bidirectional multi-head attention over variable-length sequences packed without padding.
/// `q`, `k`, `v` are [T, heads * d] (row stride `stride`), `seqs` the (start, len) of each
/// sequence in T; the context is written to `ctx` [T, heads * d]. Causal masking when `causal`.
#[allow(clippy::too_many_arguments)]
pub fn attention_varlen(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    seqs: &[(usize, usize)],
    heads: usize,
    d: usize,
    causal: bool,
    ctx: &mut [f32],
) {
    let width = heads * d;
    let total: usize = seqs.iter().map(|s| s.1).sum();
    assert!(ctx.len() >= total * width && q.len() >= total * stride && width <= stride, "attention: sizes");
    let scale = 1.0 / (d as f32).sqrt();
    let tasks: Vec<(usize, usize, usize)> =
        seqs.iter().flat_map(|&(s, l)| (0..heads).map(move |h| (s, l, h))).filter(|t| t.1 > 0).collect();
    let ctx_ptr = SharedMut(ctx.as_mut_ptr());
    tasks.into_par_iter().for_each(|(s, l, h)| {
        if l <= SMALL_SEQ {
            // SAFETY: this task alone writes rows s..s+l, columns h*d..h*d+d of ctx (see below).
            let out =
                unsafe { std::slice::from_raw_parts_mut(ctx_ptr.get().add(s * width), (l - 1) * width + h * d + d) };
            attend_small(
                &q[s * stride..],
                &k[s * stride..],
                &v[s * stride..],
                stride,
                l,
                h * d,
                d,
                scale,
                causal,
                out,
                width,
            );
            return;
        }
        SCORES.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < l * l {
                buf.resize(l * l, 0.0);
            }
            let scores = &mut buf[..l * l];
            let off = s * stride + h * d;
            // SAFETY: q/k/v rows s..s+l, columns h*d..h*d+d lie inside the buffers (asserted
            // sizes); `scores` is l×l; the context block (rows s..s+l, columns h*d..) belongs to this
            // task alone, since every (sequence, head) pair is one task.
            unsafe {
                gemm::gemm(
                    l,
                    l,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    l as isize,
                    false,
                    q.as_ptr().add(off),
                    1,
                    stride as isize,
                    k.as_ptr().add(off),
                    stride as isize,
                    1,
                    0.0f32,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            if causal {
                for i in 0..l {
                    scores[i * l + i + 1..(i + 1) * l].fill(f32::NEG_INFINITY);
                }
            }
            softmax_rows(scores, l);
            // SAFETY: see above.
            unsafe {
                gemm::gemm(
                    l,
                    d,
                    l,
                    ctx_ptr.get().add(s * width + h * d),
                    1,
                    width as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    l as isize,
                    v.as_ptr().add(off),
                    1,
                    stride as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::test_seq as seq;

    #[test]
    fn exp_and_erf_match_libm() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -20000..=20000 {
            let x = i as f32 * 0.004;
            let e = exp_approx(x) as f64;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            let ef = erf_approx(x) as f64;
            worst_erf = worst_erf.max((ef - libm_erf(x as f64)).abs());
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        // A&S 7.1.26 is 1.5e-7; f32 arithmetic adds the rest.
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
        assert_eq!(exp_approx(-200.0), exp_approx(-87.3));
        assert!(exp_approx(-87.3) >= 0.0);
    }

    /// erf by its series / continued fraction in f64 (reference only).
    fn libm_erf(x: f64) -> f64 {
        // Abramowitz & Stegun 7.1.5 series, enough terms for |x| <= 4, then 1.
        if x.abs() > 4.0 {
            return x.signum();
        }
        let mut sum = 0f64;
        let mut term = x;
        let mut n = 0f64;
        loop {
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// The AVX-512 GELU and softmax follow the portable ones to a few f32 roundings, tails included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_math_matches_portable() {
        if !super::super::avx512_math::available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let x: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.003).chain([1e3, -1e3, 30.0, -30.0]).collect();
        for len in [x.len(), 37, 16, 5] {
            let (mut a, mut b) = (x[..len].to_vec(), x[..len].to_vec());
            gelu_erf(&mut a);
            gelu_erf_portable(&mut b);
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 2e-6 * (1.0 + q.abs()), "gelu len {len} [{i}] {p} vs {q}");
            }
        }
        for dim in [256, 100, 7] {
            let mut scores: Vec<f32> = (0..3 * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.2).collect();
            scores[1] = f32::NEG_INFINITY; // a masked position
            let mut want = scores.clone();
            softmax_rows(&mut scores, dim);
            softmax_rows_portable(&mut want, dim);
            for (i, (p, q)) in scores.iter().zip(&want).enumerate() {
                assert!((p - q).abs() <= 1e-6 * q.abs() + 1e-12, "softmax dim {dim} [{i}] {p} vs {q}");
            }
            assert_eq!(scores[1], 0.0f32.max(scores[1]));
        }
    }

    #[test]
    fn attention_varlen_matches_naive() {
        // Short sequences take the direct path, long ones (> SMALL_SEQ) two GEMMs per head.
        for (heads, d, seqs) in [
            (3usize, 8usize, vec![(0usize, 5usize), (5, 1), (6, 9)]),
            (2, 32, vec![(0, 40), (40, 3), (43, 130)]),
            (2, 48, vec![(0, 77), (77, 33)]),
            (1, 80, vec![(0, 65)]),
        ] {
            let width = heads * d;
            let t: usize = seqs.iter().map(|s| s.1).sum();
            let (q, k, v) = (seq(t * width, 3), seq(t * width, 4), seq(t * width, 5));
            for causal in [false, true] {
                let mut ctx = vec![f32::NAN; t * width];
                attention_varlen(&q, &k, &v, width, &seqs, heads, d, causal, &mut ctx);
                for &(s, l) in &seqs {
                    for h in 0..heads {
                        for i in 0..l {
                            let lim = if causal { i + 1 } else { l };
                            let sc: Vec<f64> = (0..lim)
                                .map(|j| {
                                    (0..d)
                                        .map(|c| {
                                            q[(s + i) * width + h * d + c] as f64
                                                * k[(s + j) * width + h * d + c] as f64
                                        })
                                        .sum::<f64>()
                                        / (d as f64).sqrt()
                                })
                                .collect();
                            let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                            let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                            let z: f64 = e.iter().sum();
                            for c in 0..d {
                                let want: f64 =
                                    (0..lim).map(|j| e[j] / z * v[(s + j) * width + h * d + c] as f64).sum();
                                let got = ctx[(s + i) * width + h * d + c] as f64;
                                assert!(
                                    (got - want).abs() < 2e-5,
                                    "d={d} causal={causal} seq {s} head {h} row {i} col {c}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn layer_norm_softmax_gelu() {
        let mut x = seq(3 * 20, 7);
        let orig = x.clone();
        let g = seq(20, 8);
        let b = seq(20, 9);
        layer_norm_rows(&mut x, 20, &g, &b, 1e-12);
        for r in 0..3 {
            let row = &orig[r * 20..(r + 1) * 20];
            let mean = row.iter().map(|v| *v as f64).sum::<f64>() / 20.0;
            let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / 20.0;
            for c in 0..20 {
                let want = (row[c] as f64 - mean) / (var + 1e-12).sqrt() * g[c] as f64 + b[c] as f64;
                assert!((x[r * 20 + c] as f64 - want).abs() < 1e-5);
            }
        }
        let mut s = vec![1.0, 2.0, 3.0, -1e30, 0.5, 0.5];
        softmax_rows(&mut s, 3);
        let z = 1f32.exp() + 2f32.exp() + 3f32.exp();
        assert!((s[2] - 3f32.exp() / z).abs() < 1e-6);
        assert!(s[3].abs() < 1e-30 && (s[4] - 0.5).abs() < 1e-6);
        let mut gx = vec![-3.0, -0.5, 0.0, 0.7, 2.0];
        let want: Vec<f32> =
            gx.iter().map(|v: &f32| 0.5 * v * (1.0 + libm_erf(*v as f64 / 2f64.sqrt()) as f32)).collect();
        gelu_erf(&mut gx);
        for (a, b) in gx.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
