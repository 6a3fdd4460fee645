//! Dense f32 linear layers on the CPU over raw buffers: `out = x · Wᵀ` written into a caller-owned
//! buffer, accumulating onto a bias/residual put there first. Few rows take register-blocked dot
//! products straight off the weight rows (memory-bound; nothing is packed); more rows go through the
//! same `gemm` call as the quantized kernels' tiles (`qkernel::sgemm_nt`).

use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

use crate::simd::{dot4x4, multiversion, SharedMut};
use crate::Result;

/// Borrow a contiguous f32 CPU tensor as a slice for the duration of `f`.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        _ => Err(candle_core::Error::Msg("CPU fast path needs contiguous f32 weights".into()).into()),
    }
}

multiversion!(
    /// `out[i * out_stride + j] = x_i · w_j` for the `m` rows of `x` and the weight rows `rows`.
    gemv_block(x: &[f32], m: usize, w: &[f32], k: usize, rows: std::ops::Range<usize>, out: SharedMut, out_stride: usize,
        accumulate: bool) {
        let out = out.get();
        let put = |i: usize, j: usize, v: f32| {
            // SAFETY: the caller guarantees `out` holds m rows of `out_stride` and that no other
            // thread writes the columns in `rows`.
            unsafe {
                let o = out.add(i * out_stride + j);
                *o = if accumulate { *o + v } else { v };
            }
        };
        // Partial blocks at the edges repeat their last row (computed, not stored), so every
        // product goes through the 4×4 kernel.
        let xr = |i: usize| &x[i.min(m - 1) * k..(i.min(m - 1) + 1) * k];
        let wr = |j: usize| &w[j.min(rows.end - 1) * k..(j.min(rows.end - 1) + 1) * k];
        let mut j = rows.start;
        while j < rows.end {
            let ws = [wr(j), wr(j + 1), wr(j + 2), wr(j + 3)];
            let mut i = 0;
            while i < m {
                let r = dot4x4([xr(i), xr(i + 1), xr(i + 2), xr(i + 3)], ws);
                for (a, ra) in r.iter().enumerate().take(m - i) {
                    for (b, v) in ra.iter().enumerate().take(rows.end - j) {
                        put(i + a, j + b, *v);
                    }
                }
                i += 4;
            }
            j += 4;
        }
    }
);

multiversion!(
    /// Fill each row of `out` (width `bias.len()`) with `bias`, plus the same row of `residual`.
    fill_rows(out: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>) {
        match (bias, residual) {
            (Some(b), Some(r)) => {
                for (row, rr) in out.chunks_exact_mut(b.len()).zip(r.chunks_exact(b.len())) {
                    for ((v, x), y) in row.iter_mut().zip(b).zip(rr) {
                        *v = *x + *y;
                    }
                }
            }
            (Some(b), None) => {
                for row in out.chunks_exact_mut(b.len()) {
                    row.copy_from_slice(b);
                }
            }
            (None, Some(r)) => out.copy_from_slice(&r[..out.len()]),
            (None, None) => out.fill(0.0),
        }
    }
);

/// Apply `f` to `out` (rows of `width`) in parallel, in stretches of at least `min_rows` whole
/// rows (a few rows are not worth a thread hand-off).
pub fn par_rows(out: &mut [f32], width: usize, min_rows: usize, f: &(dyn Fn(&mut [f32]) + Sync)) {
    let rows = out.len() / width.max(1);
    let per_task = rows.div_ceil(4 * rayon::current_num_threads().max(1)).max(min_rows.max(1));
    out.par_chunks_mut(per_task * width.max(1)).for_each(f);
}

/// `out = act(product + bias + residual)` in separate passes (for kernels without a fused finish):
/// the additions fill `out`, `product` adds onto it, the activation runs on rows in parallel.
pub fn separate_passes(
    out: &mut [f32],
    width: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Option<super::packed_f32::Epilogue>,
    product: impl FnOnce(&mut [f32]),
) {
    fill_rows(out, bias, residual);
    product(out);
    if let Some(f) = act {
        par_rows(out, width, 1, f);
    }
}

/// Rows of activations up to which a linear layer takes dot products straight off the weight rows
/// (memory-bound; nothing is packed) instead of a GEMM, whose packing would cost more than the
/// arithmetic (measured: a 12-token MiniLM query spent half its time in gemm's packing).
pub const GEMV_MAX_ROWS: usize = 48;

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` (row-major), plus `out`'s previous values when `accumulate`
/// (so a bias and a residual can be put there first and cost no extra pass), on the rayon pool.
pub fn matmul_nt(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32], accumulate: bool) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "matmul_nt: buffer sizes");
    if m == 0 || n == 0 {
        return;
    }
    if m <= GEMV_MAX_ROWS {
        // Columns in blocks of output features; each block reads its weight rows once.
        let cols = (16 * 1024 / k.max(1)).clamp(8, 256) / 4 * 4;
        let out_ptr = SharedMut(out.as_mut_ptr());
        // Each task owns the output columns of its block of weight rows; `out` holds m × n.
        (0..n).into_par_iter().step_by(cols).for_each(|j0| {
            gemv_block(x, m, w, k, j0..(j0 + cols).min(n), out_ptr, n, accumulate);
        });
        return;
    }
    crate::weights::qkernel::sgemm_nt(m, n, k, x, w, out, n, accumulate);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::test_seq as seq;

    fn naive_nt(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn matmul_nt_both_paths_match_naive() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 33),
            (5, 384, 384),
            (16, 17, 100),
            (17, 33, 65),
            (47, 21, 50),
            (48, 9, 16),
            (70, 40, 384),
        ] {
            let x = seq(m * k, 1);
            let w = seq(n * k, 2);
            let r = naive_nt(&x, &w, m, n, k);
            let mut out = vec![f32::NAN; m * n];
            matmul_nt(&x, &w, m, n, k, &mut out, false);
            for (a, b) in out.iter().zip(&r) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "m={m} n={n} k={k}: {a} vs {b}");
            }
            let bias = seq(n, 3);
            let mut acc = vec![0f32; m * n];
            fill_rows(&mut acc, Some(&bias), Some(&r));
            matmul_nt(&x, &w, m, n, k, &mut acc, true);
            for (i, a) in acc.iter().enumerate() {
                let want = 2.0 * r[i] + bias[i % n];
                assert!((a - want).abs() <= 2e-4 * (1.0 + want.abs()), "accumulate m={m} n={n} k={k}");
            }
        }
    }
}
