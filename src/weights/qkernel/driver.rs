//! The matmul strategies shared by the SIMD paths; each path supplies a dequantizer and a
//! register-blocked dot-product kernel (`dot4`: up to 4 activation rows × 4 weight rows), and
//! AVX-512 also a kernel that dequantizes in registers (`gemv4`).
//!
//! - `gemv`, for one or two activation rows (`GEMV_MAX_M`) where the path has `gemv4`: the codes go
//!   from memory straight into the FMAs, four weight rows at a time.
//! - `fused`, for few activation rows (single queries, short batches: the memory-bound case; see
//!   `FUSED_MAX_M`): each parallel task owns a panel of weight rows; per k-chunk it dequantizes
//!   the panel once into an L2-resident buffer and multiplies it with every activation row, four at
//!   a time, the four rows' chunk staying in L1 (sixteen accumulators: eight loads per sixteen
//!   FMAs). Weights are read from memory once per call, as packed codes.
//! - `tiled`, for more rows (compute-bound): the weight is dequantized once per call, in tiles of at
//!   most `TILE_FLOATS`, and each tile goes to the `gemm` crate's f32 kernel over all m rows,
//!   parallelized inside gemm as candle's f32 matmul is. Throughput tracks the f32 path minus the
//!   dequantize cost, which is amortized over the m rows.
//!
//! All write straight into the caller's output, with an optional bias added in the same pass, and
//! either overwrite it or (`accumulate`) add to what it holds, e.g. a residual.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::{scalar, AffineWeight, KernelPath};

pub(crate) type DequantFn = fn(&AffineWeight, usize, Range<usize>, &mut [f32]);
pub(crate) type Dot4Fn = fn(&[&[f32]], [&[f32]; 4], &mut [[f32; 4]; 4]);
pub(crate) type Gemv4Fn = fn(&AffineWeight, usize, usize, &[&[f32]], &mut [[f32; 4]; 4]) -> bool;

/// The fused path is used up to `FUSED_MAX_M` activation rows, or up to `FUSED_MAX_M_LARGE` for
/// weights of at least `LARGE_WEIGHT` elements, the tiled one beyond. Measured with
/// `examples/qkernel_bench.rs --mode stack --strategy fused|tiled` on one AVX-512 core: the fused
/// path wins up to about 32 rows on MiniLM's small layers (which f32 GEMM reads from cache) and up to
/// about 80 on Qwen3-0.6B's (which it streams from memory).
pub(crate) const FUSED_MAX_M: usize = 32;
/// Up to this many activation rows, a path with a register-dequantizing kernel (`Ops::gemv4`)
/// uses it: with so few rows the panel buffer of `fused` costs more than the FMAs (measured with
/// `--mode stack --strategy gemv|fused`: gemv is 1.5× faster at m = 2, fused 1.2× at m = 3).
pub(crate) const GEMV_MAX_M: usize = 2;
pub(crate) const FUSED_MAX_M_LARGE: usize = 80;
/// From this many activation rows, the integer kernel (where the CPU has it and it is on) takes
/// over from `fused`/`tiled`.
pub(crate) const INT_MIN_M: usize = 3;
const LARGE_WEIGHT: usize = 1 << 20;
/// Inputs per k-chunk of the fused path: four activation rows of it (16 KiB) stay in L1 and a
/// panel of `PANEL_ROWS` weight rows (128 KiB) in L2.
const KC: usize = 1024;
/// Weight rows per fused task (fewer when that leaves too few tasks to balance the threads).
const PANEL_ROWS: usize = 32;
/// Most floats of one dequantized weight tile in the tiled path (16 MiB). Large tiles keep gemm's
/// own blocking intact (every tile re-packs the activations); small enough not to matter next to
/// a model's activations.
const TILE_FLOATS: usize = 4 << 20;
#[derive(Clone, Copy)]
pub(crate) struct Ops {
    pub dequant: DequantFn,
    pub dot4: Dot4Fn,
    /// Whole-row dots of one or two activation rows with four weight rows dequantized in
    /// registers (`gemv` strategy); None where the path has no such kernel.
    pub gemv4: Option<Gemv4Fn>,
    /// Whether the integer (VNNI) kernel of `int8` runs here; see `use_int`.
    pub int8: bool,
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
            KernelPath::Avx512 => Some(Ops {
                dequant: super::avx512::dequantize_groups,
                dot4: super::avx512::dot4,
                gemv4: Some(super::avx512::gemv4),
                int8: super::int8::available(),
            }),
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => {
                Some(Ops { dequant: super::avx2::dequantize_groups, dot4: super::avx2::dot4, gemv4: None, int8: false })
            }
            KernelPath::Neon => Some(Ops::portable()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The portable kernels behind the Neon path (usable on any CPU, for tests).
    pub(crate) fn portable() -> Ops {
        Ops { dequant: super::neon::dequantize_groups, dot4: super::neon::dot4, gemv4: None, int8: false }
    }

    fn dequant_row(&self, w: &AffineWeight, r: usize, out: &mut [f32]) {
        (self.dequant)(w, r, 0..w.k() / w.group_size(), out)
    }
}

/// `out[m, n] (+)= x[m, k] · Wᵀ (+ bias)` by the strategy that suits m.
pub(crate) fn matmul(
    w: &AffineWeight,
    ops: Ops,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    bias: Option<&[f32]>,
    acc: bool,
) {
    if m <= GEMV_MAX_M && gemv(w, ops, x, m, out, bias, acc) {
        return;
    }
    if int(w, ops, x, m, out, bias, acc) {
        return;
    }
    if m <= FUSED_MAX_M || (m <= FUSED_MAX_M_LARGE && w.n() * w.k() >= LARGE_WEIGHT) {
        fused(w, ops, x, m, out, bias, acc)
    } else {
        tiled(w, ops, x, m, out, bias, acc)
    }
}

/// The output matrix shared by parallel tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: tasks write only their own columns (disjoint element sets), and the owning `&mut [f32]`
// outlives the parallel section that uses this copy of its pointer.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        SharedOut { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// Pointer to element `i` (checked against the length), for a kernel that writes a block.
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        assert!(i < self.len, "qkernel: output index {i} out of {}", self.len);
        // SAFETY: in bounds, checked above.
        unsafe { self.ptr.add(i) }
    }

    /// Set element `i` to `v`, or add `v` to it.
    ///
    /// # Safety
    /// No other task may access element `i` during the parallel section.
    pub(crate) unsafe fn put(self, i: usize, v: f32, add: bool) {
        assert!(i < self.len, "qkernel: output index {i} out of {}", self.len);
        let p = self.ptr.add(i);
        *p = if add { *p + v } else { v };
    }
}

thread_local! {
    /// Per-thread dequantize buffers, reused across calls so they are not re-allocated.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on this thread's buffer in `key`, or on a fresh one when it is busy: a rayon worker
/// waiting inside a kernel that holds its buffer across a parallel section (`tiled`, the integer
/// kernel) may pick up another call's task.
pub(crate) fn with_local<T: Default + 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(&mut v),
        Err(_) => f(&mut T::default()),
    })
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_local(&SCRATCH, |s| {
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// The register-dequantizing strategy: per four weight rows, whole-row dots with the activation
/// rows two at a time (the rows' codes stay in L1 between the pairs). False, computing nothing,
/// when the path has no such kernel or the bit width is not 4 or 8.
pub(crate) fn gemv(
    w: &AffineWeight,
    ops: Ops,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    bias: Option<&[f32]>,
    acc: bool,
) -> bool {
    let Some(kernel) = ops.gemv4 else { return false };
    let (n, k) = (w.n(), w.k());
    if !matches!(w.bits(), 4 | 8) {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    let rows = panel_rows(n);
    let shared = SharedOut::new(out);
    let tasks: Vec<usize> = (0..n).step_by(rows).collect();
    tasks.into_par_iter().for_each(|r0| {
        let r1 = (r0 + rows).min(n);
        for rb in (r0..r1).step_by(4) {
            let nr = (r1 - rb).min(4);
            for i0 in (0..m).step_by(2) {
                let mr = (m - i0).min(2);
                let xrow = |i: usize| &x[i * k..(i + 1) * k];
                let xs = [xrow(i0), xrow(i0 + mr - 1)];
                let mut sums = [[0f32; 4]; 4];
                let done = kernel(w, rb, nr, &xs[..mr], &mut sums);
                debug_assert!(done, "gemv4 refused bits {}", w.bits());
                for (t, a) in sums.iter().enumerate().take(mr) {
                    for (j, &v) in a.iter().enumerate().take(nr) {
                        let c = rb + j;
                        let v = v + bias.map_or(0.0, |b| b[c]);
                        // SAFETY: this task is the only one touching columns r0..r1.
                        unsafe { shared.put((i0 + t) * n + c, v, acc) };
                    }
                }
            }
        }
    });
    true
}

/// Whether a call of `m` rows takes the integer strategy (`int8`): the path has the kernel and it
/// is on (`super::int_activations`), the layer allows integer activations, and the call has at
/// least `INT_MIN_M` rows.
#[cfg(target_arch = "x86_64")]
pub(crate) fn int_applies(w: &AffineWeight, ops: Ops, m: usize) -> bool {
    m >= INT_MIN_M && ops.int8 && !w.float_activations() && super::int_activations()
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn int_applies(_: &AffineWeight, _: Ops, _: usize) -> bool {
    false
}

/// The integer strategy: false, computing nothing, when it does not apply (`int_applies`).
pub(crate) fn int(
    w: &AffineWeight,
    ops: Ops,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    bias: Option<&[f32]>,
    acc: bool,
) -> bool {
    if !int_applies(w, ops, m) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    super::int8::matmul(w, x, m, out, super::int8::Finish { bias, acc, ..Default::default() });
    true
}

/// Weight rows per fused task: `PANEL_ROWS`, halved (down to 4) until every thread gets several.
fn panel_rows(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let mut rows = PANEL_ROWS;
    while rows > 4 && n.div_ceil(rows) < 4 * threads {
        rows /= 2;
    }
    rows
}

pub(crate) fn fused(w: &AffineWeight, ops: Ops, x: &[f32], m: usize, out: &mut [f32], bias: Option<&[f32]>, acc: bool) {
    let (n, k, gs) = (w.n(), w.k(), w.group_size());
    if m == 0 || n == 0 {
        return;
    }
    // A multiple of every group size, so chunks hold whole groups.
    let kc = KC.min(k);
    let rows = panel_rows(n);
    let shared = SharedOut::new(out);
    let tasks: Vec<usize> = (0..n).step_by(rows).collect();
    tasks.into_par_iter().for_each(|r0| {
        let np = rows.min(n - r0);
        with_scratch(rows * kc, |panel| {
            for c0 in (0..k).step_by(kc) {
                let len = kc.min(k - c0);
                for j in 0..np {
                    (ops.dequant)(w, r0 + j, c0 / gs..(c0 + len) / gs, &mut panel[j * len..(j + 1) * len]);
                }
                for i0 in (0..m).step_by(4) {
                    let mr = (m - i0).min(4);
                    let xrow = |t: usize| &x[(i0 + t) * k + c0..(i0 + t) * k + c0 + len];
                    let xs = [xrow(0), xrow(mr.min(2) - 1), xrow(mr.min(3) - 1), xrow(mr - 1)];
                    for rb in (0..np).step_by(4) {
                        let nr = (np - rb).min(4);
                        // Missing weight rows repeat the last one; their sums are dropped.
                        let wrow = |j: usize| {
                            let j = rb + j.min(nr - 1);
                            &panel[j * len..(j + 1) * len]
                        };
                        let mut sums = [[0f32; 4]; 4];
                        (ops.dot4)(&xs[..mr], [wrow(0), wrow(1), wrow(2), wrow(3)], &mut sums);
                        for (t, a) in sums.iter().enumerate().take(mr) {
                            for (j, &v) in a.iter().enumerate().take(nr) {
                                let (i, c) = ((i0 + t) * n, r0 + rb + j);
                                // The first chunk sets (or adds to) the output with the bias, later
                                // chunks add.
                                let first = c0 == 0;
                                let v = if first { v + bias.map_or(0.0, |b| b[c]) } else { v };
                                // SAFETY: this task is the only one touching columns r0..r0+np.
                                unsafe { shared.put(i + c, v, acc || !first) };
                            }
                        }
                    }
                }
            }
        })
    });
}

/// Rows of one dequantized tile: all of them when the weight fits `TILE_FLOATS`, else as many as
/// fit, a multiple of 16 (gemm's register width).
fn tile_rows(n: usize, k: usize) -> usize {
    if n * k <= TILE_FLOATS {
        n
    } else {
        (TILE_FLOATS / k / 16 * 16).clamp(16, n)
    }
}

pub(crate) fn tiled(w: &AffineWeight, ops: Ops, x: &[f32], m: usize, out: &mut [f32], bias: Option<&[f32]>, acc: bool) {
    let (n, k) = (w.n(), w.k());
    if m == 0 || n == 0 {
        return;
    }
    let rows = tile_rows(n, k);
    // The calling thread's buffer: rayon workers fill disjoint rows of it, then gemm reads it.
    with_scratch(rows * k, |tile| {
        for r0 in (0..n).step_by(rows) {
            let nt = rows.min(n - r0);
            let tile = &mut tile[..nt * k];
            tile.par_chunks_mut(k * 8).enumerate().for_each(|(c, chunk)| {
                for (j, dst) in chunk.chunks_exact_mut(k).enumerate() {
                    ops.dequant_row(w, r0 + c * 8 + j, dst);
                }
            });
            // The bias goes into the output first; gemm then adds the product onto it.
            if let Some(b) = bias {
                for row in out.chunks_exact_mut(n) {
                    let dst = &mut row[r0..r0 + nt];
                    if acc {
                        dst.iter_mut().zip(&b[r0..r0 + nt]).for_each(|(o, b)| *o += b);
                    } else {
                        dst.copy_from_slice(&b[r0..r0 + nt]);
                    }
                }
            }
            sgemm_nt(m, nt, k, x, tile, &mut out[r0..], n, acc || bias.is_some());
        }
    })
}

/// `out[i * ldo + j] (+)= Σ_l x[i * k + l] · tile[j * k + l]` for i < m, j < nt: the tile is
/// [nt, k] row-major, so its transpose is read by strides. `accumulate` keeps what `out` holds.
/// Also the dense GEMM of the f32 CPU fast path (`model::cpu_ops`), so both go through one call.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_nt(
    m: usize,
    nt: usize,
    k: usize,
    x: &[f32],
    tile: &[f32],
    out: &mut [f32],
    ldo: usize,
    accumulate: bool,
) {
    assert!(x.len() >= m * k && tile.len() >= nt * k && nt <= ldo && out.len() >= (m - 1) * ldo + nt);
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the strides describe exactly the three row-major buffers whose extents are asserted
    // above; `out` is exclusively borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            nt,
            k,
            out.as_mut_ptr(),
            1,
            ldo as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            tile.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

/// Off x86-64 the `gemm` crate is not a direct dependency; candle's CPU matmul (which runs gemm
/// underneath) does the tile, with plain dot products as the fallback should it fail.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_nt(
    m: usize,
    nt: usize,
    k: usize,
    x: &[f32],
    tile: &[f32],
    out: &mut [f32],
    ldo: usize,
    accumulate: bool,
) {
    use candle_core::{Device, Tensor};
    let run = || -> candle_core::Result<Vec<f32>> {
        let a = Tensor::from_slice(&x[..m * k], (m, k), &Device::Cpu)?;
        let b = Tensor::from_slice(&tile[..nt * k], (nt, k), &Device::Cpu)?;
        a.matmul(&b.t()?)?.flatten_all()?.to_vec1::<f32>()
    };
    let put = |o: &mut f32, v: f32| *o = if accumulate { *o + v } else { v };
    match run() {
        Ok(v) => {
            for i in 0..m {
                for j in 0..nt {
                    put(&mut out[i * ldo + j], v[i * nt + j]);
                }
            }
        }
        Err(e) => {
            tracing::warn!("qkernel: candle matmul failed ({e}); using dot products");
            for i in 0..m {
                for j in 0..nt {
                    let dot = x[i * k..(i + 1) * k].iter().zip(&tile[j * k..(j + 1) * k]).map(|(a, b)| a * b).sum();
                    put(&mut out[i * ldo + j], dot);
                }
            }
        }
    }
}

/// The scalar reference for tests that exercise a kernel set directly.
#[allow(dead_code)]
pub(crate) fn scalar_ops() -> Ops {
    Ops {
        dequant: scalar::dequantize_groups,
        gemv4: None,
        int8: false,
        dot4: |x, w, acc| {
            for (r, xr) in x.iter().enumerate() {
                for (c, wc) in w.iter().enumerate() {
                    acc[r][c] += xr.iter().zip(*wc).map(|(a, b)| a * b).sum::<f32>();
                }
            }
        },
    }
}
