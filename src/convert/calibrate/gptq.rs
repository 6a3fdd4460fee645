//! Quantizing one weight matrix W [n, k] to MLX affine codes with knowledge of its inputs: `h` is
//! the mean of xᵀx over the calibration inputs, so (w - ŵ)ᵀ·h·(w - ŵ) is the mean squared error a
//! row's rounding adds to that output. Three methods, each keeping MLX's format (codes in
//! 0..2^bits, one scale and bias per group of inputs):
//! - `rtn`: round to nearest per group, exactly `mx.quantize` (the baseline);
//! - `gptq`: columns in order, each rounding error spread over the columns not yet rounded, in
//!   the proportions that cancel it best on the inputs (Frantar et al., "GPTQ", 2022); a group's
//!   scale and bias are taken from its weights as updated when the group starts;
//! - `refit`: with the codes fixed, every row's scales and biases solved jointly by least squares
//!   weighted by `h` (the layer-wise form of tuning scales and biases against the float model).

use rayon::prelude::*;

use super::solve;
use crate::weights::qkernel::{affine_code, affine_group_params};

/// One quantized matrix before packing: a code per weight, scales and biases per group.
#[derive(Debug, Clone)]
pub struct Codes {
    pub bits: u32,
    pub group_size: usize,
    pub n: usize,
    pub k: usize,
    /// [n, k]
    pub codes: Vec<u8>,
    /// [n, k / group_size]
    pub scales: Vec<f32>,
    pub biases: Vec<f32>,
}

impl Codes {
    /// The dequantized row `r`.
    pub fn row(&self, r: usize) -> Vec<f32> {
        let g = self.k / self.group_size;
        (0..self.k)
            .map(|j| {
                let p = r * g + j / self.group_size;
                self.scales[p] * self.codes[r * self.k + j] as f32 + self.biases[p]
            })
            .collect()
    }
}

/// A layer's input statistics, ready for the methods: `h` damped so it is invertible, and the
/// upper Cholesky factor of its inverse.
pub struct Prepared {
    pub k: usize,
    pub h: Vec<f64>,
    pub u: Vec<f64>,
}

/// Add `damp` × the mean diagonal to the diagonal (inputs never seen get a unit diagonal), as GPTQ
/// does, and factor; None when even the damped matrix is not positive definite.
pub fn prepare(h: &[f64], k: usize, damp: f64) -> Option<Prepared> {
    let mut h = h.to_vec();
    let mean = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let add = (damp * mean).max(1e-12);
    for i in 0..k {
        if h[i * k + i] <= 0.0 {
            h[i * k + i] = 1.0;
        }
        h[i * k + i] += add;
    }
    let u = solve::inverse_upper_factor(&h, k)?;
    Some(Prepared { k, h, u })
}

fn empty(bits: u32, group_size: usize, n: usize, k: usize) -> Codes {
    let g = n * (k / group_size);
    Codes { bits, group_size, n, k, codes: vec![0; n * k], scales: vec![0.0; g], biases: vec![0.0; g] }
}

/// Round to nearest, per group, as `mx.quantize`.
pub fn rtn(w: &[f32], n: usize, k: usize, bits: u32, group_size: usize) -> Codes {
    let mut c = empty(bits, group_size, n, k);
    let n_bins = ((1u32 << bits) - 1) as f32;
    let groups = k / group_size;
    for r in 0..n {
        for g in 0..groups {
            let vals = &w[r * k + g * group_size..r * k + (g + 1) * group_size];
            let (s, b) = affine_group_params(vals, bits);
            c.scales[r * groups + g] = s;
            c.biases[r * groups + g] = b;
            for (i, &v) in vals.iter().enumerate() {
                c.codes[r * k + g * group_size + i] = affine_code(v, s, b, n_bins) as u8;
            }
        }
    }
    c
}

/// GPTQ. With `grid` (scales and biases of every group), codes are chosen on that grid instead of
/// one taken from the weights.
/// `round` gives a scale or bias the value it will be stored as (the checkpoint's float type), so
/// codes are chosen on the grid that is written.
pub fn gptq(
    w: &[f32],
    n: usize,
    bits: u32,
    group_size: usize,
    p: &Prepared,
    grid: Option<&Codes>,
    round: &(dyn Fn(f32) -> f32 + Sync),
) -> Codes {
    let k = p.k;
    let groups = k / group_size;
    let n_bins = ((1u32 << bits) - 1) as f32;
    let mut out = empty(bits, group_size, n, k);
    let rows: Vec<(Vec<u8>, Vec<f32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|r| {
            let mut wr: Vec<f64> = w[r * k..(r + 1) * k].iter().map(|&v| v as f64).collect();
            let mut codes = vec![0u8; k];
            let mut scales = vec![0f32; groups];
            let mut biases = vec![0f32; groups];
            let mut cur = vec![0f32; group_size];
            for i in 0..k {
                let g = i / group_size;
                if i % group_size == 0 {
                    let (s, b) = match grid {
                        Some(c) => (c.scales[r * groups + g], c.biases[r * groups + g]),
                        None => {
                            for (t, v) in cur.iter_mut().enumerate() {
                                *v = wr[i + t] as f32;
                            }
                            let (s, b) = affine_group_params(&cur, bits);
                            (round(s), round(b))
                        }
                    };
                    scales[g] = s;
                    biases[g] = b;
                }
                let (s, b) = (scales[g], biases[g]);
                let q = affine_code(wr[i] as f32, s, b, n_bins);
                codes[i] = q as u8;
                let deq = (s * q as f32 + b) as f64;
                let err = (wr[i] - deq) / p.u[i * k + i];
                let ui = &p.u[i * k..(i + 1) * k];
                for j in i + 1..k {
                    wr[j] -= err * ui[j];
                }
            }
            (codes, scales, biases)
        })
        .collect();
    for (r, (c, s, b)) in rows.into_iter().enumerate() {
        out.codes[r * k..(r + 1) * k].copy_from_slice(&c);
        out.scales[r * groups..(r + 1) * groups].copy_from_slice(&s);
        out.biases[r * groups..(r + 1) * groups].copy_from_slice(&b);
    }
    out
}

/// With the codes fixed, each row's scales and biases minimizing (w - ŵ)ᵀ·h·(w - ŵ): a linear
/// least-squares problem in the 2 × groups parameters. A row whose system is singular (a group with
/// a single code value) keeps its parameters.
pub fn refit(w: &[f32], c: &Codes, p: &Prepared) -> Codes {
    let (k, gs) = (c.k, c.group_size);
    let groups = k / gs;
    let d = 2 * groups;
    let params: Vec<Option<Vec<f64>>> = (0..c.n)
        .into_par_iter()
        .map(|r| {
            let q = &c.codes[r * k..(r + 1) * k];
            // h·A, A's column 2g = the codes of group g (zero elsewhere), column 2g+1 = its indicator.
            let mut ha = vec![0f64; k * d];
            for (j, &qj) in q.iter().enumerate() {
                let g = j / gs;
                let qj = qj as f64;
                let hj = &p.h[j * k..(j + 1) * k];
                for (i, &hij) in hj.iter().enumerate() {
                    ha[i * d + 2 * g] += hij * qj;
                    ha[i * d + 2 * g + 1] += hij;
                }
            }
            let mut m = vec![0f64; d * d];
            let mut rhs = vec![0f64; d];
            let wr = &w[r * k..(r + 1) * k];
            for i in 0..k {
                let (gi, qi) = (i / gs, q[i] as f64);
                let hai = &ha[i * d..(i + 1) * d];
                for col in 0..d {
                    m[2 * gi * d + col] += qi * hai[col];
                    m[(2 * gi + 1) * d + col] += hai[col];
                    rhs[col] += hai[col] * wr[i] as f64;
                }
            }
            // A tiny ridge keeps a nearly collinear group (few distinct codes) solvable.
            let tr = (0..d).map(|i| m[i * d + i]).sum::<f64>() / d as f64;
            for i in 0..d {
                m[i * d + i] += 1e-9 * tr;
            }
            solve::solve_spd(&m, &rhs, d).filter(|x| x.iter().all(|v| v.is_finite()))
        })
        .collect();
    let mut out = c.clone();
    for (r, x) in params.into_iter().enumerate() {
        if let Some(x) = x {
            for g in 0..groups {
                out.scales[r * groups + g] = x[2 * g] as f32;
                out.biases[r * groups + g] = x[2 * g + 1] as f32;
            }
        }
    }
    out
}

/// Σ over rows of (w - ŵ)ᵀ·h·(w - ŵ), relative to Σ wᵀ·h·w: the share of the layer's output
/// energy its quantization error adds on the calibration inputs.
pub fn relative_error(w: &[f32], c: &Codes, h: &[f64]) -> f64 {
    let k = c.k;
    let (num, den) = (0..c.n)
        .into_par_iter()
        .map(|r| {
            let wr = &w[r * k..(r + 1) * k];
            let e: Vec<f64> = wr.iter().zip(c.row(r)).map(|(&a, b)| a as f64 - b as f64).collect();
            let quad = |v: &dyn Fn(usize) -> f64| -> f64 {
                (0..k).map(|i| v(i) * (0..k).map(|j| h[i * k + j] * v(j)).sum::<f64>()).sum()
            };
            (quad(&|i| e[i]), quad(&|i| wr[i] as f64))
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs with correlated channels (where error compensation pays) and a weight matrix.
    fn case(n: usize, k: usize, rows: usize) -> (Vec<f32>, Vec<f64>) {
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
        };
        let w: Vec<f32> = (0..n * k).map(|_| rnd() as f32 * 0.1).collect();
        let base: Vec<f64> = (0..rows * 4).map(|_| rnd()).collect();
        let x: Vec<f64> = (0..rows * k).map(|i| base[(i / k) * 4 + (i % k) % 4] + 0.3 * rnd()).collect();
        let mut h = vec![0f64; k * k];
        for t in 0..rows {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += x[t * k + i] * x[t * k + j] / rows as f64;
                }
            }
        }
        (w, h)
    }

    #[test]
    fn rtn_is_mlx_quantize() {
        let (w, _) = case(4, 64, 1);
        let c = rtn(&w, 4, 64, 4, 32);
        let q = crate::weights::qkernel::quantize(&w, 4, 64, 4, 32).unwrap();
        let mut deq = vec![0f32; 4 * 64];
        q.dequantize_rows(0..4, &mut deq);
        for r in 0..4 {
            // Same grid and codes (pack_matches_mlx_quantize checks the codes bit for bit); the
            // kernel's dequantization may fuse the multiply-add.
            for (a, b) in c.row(r).iter().zip(&deq[r * 64..(r + 1) * 64]) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn gptq_and_refit_cut_the_output_error() {
        let (n, k) = (16, 128);
        let (w, h) = case(n, k, 400);
        let p = prepare(&h, k, 0.01).unwrap();
        let e_rtn = relative_error(&w, &rtn(&w, n, k, 4, 32), &p.h);
        let g = gptq(&w, n, 4, 32, &p, None, &|v| v);
        let e_gptq = relative_error(&w, &g, &p.h);
        let e_refit = relative_error(&w, &refit(&w, &g, &p), &p.h);
        assert!(e_gptq < 0.8 * e_rtn, "gptq {e_gptq} vs rtn {e_rtn}");
        assert!(e_refit <= e_gptq * 1.0001, "refit {e_refit} vs gptq {e_gptq}");
        assert!(g.codes.iter().all(|&c| c < 16));
    }

    #[test]
    fn gptq_on_identity_inputs_is_round_to_nearest() {
        // With uncorrelated unit inputs no error can be compensated: GPTQ rounds each weight alone.
        let (n, k) = (3, 64);
        let (w, _) = case(n, k, 1);
        let mut h = vec![0f64; k * k];
        (0..k).for_each(|i| h[i * k + i] = 1.0);
        let p = prepare(&h, k, 0.0).unwrap();
        assert_eq!(gptq(&w, n, 4, 32, &p, None, &|v| v).codes, rtn(&w, n, k, 4, 32).codes);
    }
}
