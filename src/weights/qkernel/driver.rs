//! The matmul strategy shared by the SIMD paths; each path only supplies a row dequantizer and a
//! dot product.
//!
//! - Few activation rows (m <= `GEMV_MAX_M`, the memory-bound case): dequantize one weight row at a
//!   time into an L1-resident buffer and take its dot product with every activation row. Weights
//!   are read from memory once, as packed codes.
//! - More rows (compute-bound): dequantize a tile of weight rows (sized to stay in L2) and hand it
//!   to the `gemm` crate's f32 kernel, the same one candle's f32 matmul uses, so throughput tracks
//!   the f32 path minus the dequantize cost, which is amortized over the m rows.
//!
//! Both run over output-row tiles in parallel with rayon and keep activations in f32.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{scalar, AffineWeight, KernelPath};

pub(crate) type DequantFn = fn(&AffineWeight, usize, &mut [f32]);
pub(crate) type DotFn = fn(&[f32], &[f32]) -> f32;

/// Up to this many activation rows the fused dequantize-and-dot path is used (chosen by
/// measurement with `examples/qkernel_bench.rs`).
pub(crate) const GEMV_MAX_M: usize = 16;
/// Activation rows per GEMM block, so gemm's packing of `x` stays small next to the tile's work.
const M_BLOCK: usize = 512;
/// Target size of a dequantized weight tile in floats (512 KiB: well inside a per-core L2).
const TILE_FLOATS: usize = 128 * 1024;

#[derive(Clone, Copy)]
pub(crate) struct Ops {
    pub dequant: DequantFn,
    pub dot: DotFn,
}

impl Ops {
    /// The kernels of a SIMD path; `None` for `Scalar` (and for a path this CPU lacks).
    pub(crate) fn for_path(path: KernelPath) -> Option<Ops> {
        if !path.is_available() {
            return None;
        }
        match path {
            KernelPath::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => Some(Ops { dequant: super::avx512::dequantize_row, dot: super::avx512::dot }),
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => Some(Ops { dequant: super::avx2::dequantize_row, dot: super::avx2::dot }),
            KernelPath::Neon => Some(Ops::portable()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The portable kernels behind the Neon path (usable on any CPU, for tests).
    pub(crate) fn portable() -> Ops {
        Ops { dequant: super::neon::dequantize_row, dot: super::neon::dot }
    }
}

pub(crate) fn matmul(w: &AffineWeight, ops: Ops, x: &[f32], m: usize, out: &mut [f32]) {
    if m <= GEMV_MAX_M {
        gemv(w, ops, x, m, out)
    } else {
        tiled(w, ops, x, m, out)
    }
}

thread_local! {
    /// Per-thread dequantize buffer, reused across calls so large tiles are not re-allocated.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// Start rows of tiles of `rows` rows over `0..n`.
fn tiles(n: usize, rows: usize) -> Vec<usize> {
    (0..n).step_by(rows.max(1)).collect()
}

pub(crate) fn gemv(w: &AffineWeight, ops: Ops, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.n(), w.k());
    // ~32K weights per task: big enough to hide rayon's overhead, small enough to balance 2+ cores.
    let rows = (32 * 1024 / k).clamp(1, 256);
    let parts: Vec<(usize, Vec<f32>)> = tiles(n, rows)
        .into_par_iter()
        .map(|r0| {
            let r1 = (r0 + rows).min(n);
            let mut local = vec![0f32; (r1 - r0) * m];
            with_scratch(k, |row| {
                for r in r0..r1 {
                    (ops.dequant)(w, r, row);
                    for i in 0..m {
                        local[(r - r0) * m + i] = (ops.dot)(&x[i * k..(i + 1) * k], row);
                    }
                }
            });
            (r0, local)
        })
        .collect();
    for (r0, local) in parts {
        for (j, vals) in local.chunks_exact(m).enumerate() {
            for (i, v) in vals.iter().enumerate() {
                out[i * n + r0 + j] = *v;
            }
        }
    }
}

/// Rows of a dequantized tile: fill `TILE_FLOATS`, a multiple of 16 (gemm's register width), and
/// leave at least two tiles per thread so rayon can balance.
fn tile_rows(n: usize, k: usize) -> usize {
    let by_cache = (TILE_FLOATS / k).max(16) / 16 * 16;
    let threads = rayon::current_num_threads().max(1);
    let by_balance = n.div_ceil(2 * threads).div_ceil(16) * 16;
    by_cache.min(by_balance).max(16)
}

pub(crate) fn tiled(w: &AffineWeight, ops: Ops, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.n(), w.k());
    let rows = tile_rows(n, k);
    for m0 in (0..m).step_by(M_BLOCK) {
        let mb = M_BLOCK.min(m - m0);
        let xb = &x[m0 * k..(m0 + mb) * k];
        let parts: Vec<(usize, usize, Vec<f32>)> = tiles(n, rows)
            .into_par_iter()
            .map(|r0| {
                let r1 = (r0 + rows).min(n);
                let nt = r1 - r0;
                let mut local = vec![0f32; mb * nt];
                with_scratch(nt * k, |tile| {
                    for (r, dst) in (r0..r1).zip(tile.chunks_exact_mut(k)) {
                        (ops.dequant)(w, r, dst);
                    }
                    sgemm_nt(mb, nt, k, xb, tile, &mut local, ops);
                });
                (r0, nt, local)
            })
            .collect();
        for (r0, nt, local) in parts {
            for (i, vals) in local.chunks_exact(nt).enumerate() {
                out[(m0 + i) * n + r0..(m0 + i) * n + r0 + nt].copy_from_slice(vals);
            }
        }
    }
}

/// `out[m, nt] = x[m, k] · tile[nt, k]ᵀ`, single-threaded (the caller parallelizes over tiles).
#[cfg(target_arch = "x86_64")]
fn sgemm_nt(m: usize, nt: usize, k: usize, x: &[f32], tile: &[f32], out: &mut [f32], _ops: Ops) {
    assert!(x.len() >= m * k && tile.len() >= nt * k && out.len() >= m * nt);
    // SAFETY: the strides describe exactly the three row-major buffers whose sizes are asserted
    // above; `out` is exclusively borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            nt,
            k,
            out.as_mut_ptr(),
            1,
            nt as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            tile.as_ptr(),
            k as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Off x86-64 the `gemm` crate is not a direct dependency; candle's CPU matmul (which runs gemm
/// underneath) does the tile, with the dot-product kernel as the fallback should it fail.
#[cfg(not(target_arch = "x86_64"))]
fn sgemm_nt(m: usize, nt: usize, k: usize, x: &[f32], tile: &[f32], out: &mut [f32], ops: Ops) {
    use candle_core::{Device, Tensor};
    let run = || -> candle_core::Result<Vec<f32>> {
        let a = Tensor::from_slice(&x[..m * k], (m, k), &Device::Cpu)?;
        let b = Tensor::from_slice(&tile[..nt * k], (nt, k), &Device::Cpu)?;
        a.matmul(&b.t()?)?.flatten_all()?.to_vec1::<f32>()
    };
    match run() {
        Ok(v) => out[..m * nt].copy_from_slice(&v),
        Err(e) => {
            tracing::warn!("qkernel: candle matmul failed ({e}); using dot products");
            for i in 0..m {
                for j in 0..nt {
                    out[i * nt + j] = (ops.dot)(&x[i * k..(i + 1) * k], &tile[j * k..(j + 1) * k]);
                }
            }
        }
    }
}

/// The scalar reference for tests that exercise a kernel set directly.
#[allow(dead_code)]
pub(crate) fn scalar_ops() -> Ops {
    Ops { dequant: scalar::dequantize_row, dot: |a, b| a.iter().zip(b).map(|(x, y)| x * y).sum() }
}
