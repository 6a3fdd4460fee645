//! Dense f32 linear weights packed once at load for an AVX-512 GEMM with a fused epilogue.
//!
//! Why our own GEMM next to the `gemm` crate: `gemm` packs the weight matrix again on every call
//! and leaves bias, residual and activation to separate passes over the output. Measured on
//! all-MiniLM-L6-v2 (SciFact documents, `EMBEDRANK_PROFILE=1 embedrank bench`), its linear layers
//! ran at 61% of this CPU's FP32 peak inside the model against 80–95% in a warm-cache loop, and
//! the single-threaded GELU and bias/residual fills took another 8% of the pass. Here the weight is
//! stored as column panels `[n/NR][k][NR]` (64-byte aligned), so a call streams it with no packing;
//! activations are read in place (each step broadcasts one input of `MR` rows against `NR`
//! weight columns held in 4 registers), and the first k-chunk starts from bias + residual while
//! the last applies the activation to the tile it just wrote, still in cache.
//!
//! Packing happens only where AVX-512F is present (`available`); other CPUs keep `gemm`.

use rayon::prelude::*;

use super::qkernel::with_local;
use crate::simd::SharedMut;

/// Output columns per panel: four AVX-512 registers of f32.
pub const NR: usize = 64;
/// Rows per register tile (6 × 4 accumulators + 4 weight registers + 1 broadcast of 32).
const MR: usize = 6;
/// Inputs per k-chunk: a 128 × 64 f32 weight panel is 32 KiB and stays in L1 while every row
/// block of a task passes over it.
const KC: usize = 128;
/// Rows per task: their k-chunk of activations (128 KiB) and output rows stay in L2.
const MC: usize = 192;

/// An element-wise function applied to each finished stretch of output (an activation).
pub type Epilogue<'a> = &'a (dyn Fn(&mut [f32]) + Sync);

/// Whether this CPU runs the packed kernel (and so whether `pack` is worth doing).
/// `EMBEDRANK_PACKED_F32=0` keeps dense weights (A/B measurements against `gemm`).
pub fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let cpu = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = false;
        cpu && std::env::var("EMBEDRANK_PACKED_F32").map_or(true, |v| v != "0")
    })
}

/// A weight `W` [n, k] (row-major, as stored in checkpoints) in column panels of `NR`.
#[derive(Debug)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    /// Padding in front of the panels so that they start on a 64-byte boundary.
    offset: usize,
    data: Vec<f32>,
}

impl PackedF32 {
    /// Pack `w` [n, k]; columns past `n` in the last panel are zero.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed_f32: weight size");
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR + 16];
        let offset = data.as_ptr().align_offset(64).min(15);
        let body = &mut data[offset..offset + panels * k * NR];
        // `max(1)`: a k = 0 weight has no panels to fill (chunks of 0 would panic).
        for (p, panel) in body.chunks_exact_mut((k * NR).max(1)).enumerate() {
            for c in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + c) * k..(p * NR + c + 1) * k];
                for (kk, v) in row.iter().enumerate() {
                    panel[kk * NR + c] = *v;
                }
            }
        }
        PackedF32 { n, k, offset, data }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn panels(&self) -> &[f32] {
        &self.data[self.offset..self.offset + self.n.div_ceil(NR) * self.k * NR]
    }

    /// The weight back in its [n, k] row-major layout (for fusing layers at load).
    pub fn unpack(&self) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut w = vec![0f32; n * k];
        for (p, panel) in self.panels().chunks_exact((k * NR).max(1)).enumerate() {
            for c in 0..NR.min(n - p * NR) {
                for kk in 0..k {
                    w[(p * NR + c) * k + kk] = panel[kk * NR + c];
                }
            }
        }
        w
    }

    /// `out[m, n] = act(x[m, k] · Wᵀ + bias + residual)` on the rayon pool; `residual` has
    /// `out`'s shape. Panics if the buffers are smaller than the shapes say (a caller bug).
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        act: Option<Epilogue>,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() >= m * k && out.len() >= m * n, "packed_f32: buffer sizes");
        assert!(bias.is_none_or(|b| b.len() >= n) && residual.is_none_or(|r| r.len() >= m * n));
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // Nothing to multiply: the result is the epilogue of zero.
            super::dense_cpu::fill_rows(&mut out[..m * n], bias.map(|b| &b[..n]), residual);
            if let Some(f) = act {
                f(&mut out[..m * n]);
            }
            return;
        }
        // Tasks are (row range, panel range) pairs; small batches split the columns too so that
        // every thread has work (a single query reads the weight once, across all threads).
        let threads = rayon::current_num_threads().max(1);
        let panels = n.div_ceil(NR);
        let row_tasks = m.div_ceil(MC);
        let groups = (4 * threads).div_ceil(row_tasks).clamp(1, panels);
        let per_group = panels.div_ceil(groups);
        let groups = panels.div_ceil(per_group);
        let out_ptr = SharedMut(out.as_mut_ptr());
        (0..row_tasks * groups).into_par_iter().for_each(|t| {
            let r0 = (t / groups) * MC;
            let rows = MC.min(m - r0);
            let cols = (t % groups) * per_group..((t % groups + 1) * per_group).min(panels);
            // SAFETY: this task alone writes rows r0..r0+rows × panels `cols` of `out`, which holds
            // m × n (asserted above); every other pointer is a shared read of an asserted extent.
            unsafe {
                self.task(
                    &x[r0 * k..],
                    rows,
                    cols,
                    out_ptr.get().add(r0 * n),
                    bias,
                    residual.map(|r| &r[r0 * n..]),
                    act,
                )
            };
        });
    }

    /// A two-layer MLP, `out = second(act(x · firstᵀ + b1)) + b2 + residual`, per block of rows:
    /// each task's intermediate rows (`MC` × first.n) stay in a per-thread buffer in L2 instead of
    /// going to memory and back (a BERT FFN's intermediate is 4× the hidden width: for a batch of
    /// 5k tokens, 30 MB written and read again per layer). Batches too small to give every
    /// thread a block of rows run as two `matmul` calls through `mid` (m × first.n) instead, so
    /// that the columns are split across threads.
    #[allow(clippy::too_many_arguments)]
    pub fn mlp(
        first: &PackedF32,
        second: &PackedF32,
        x: &[f32],
        m: usize,
        mid: &mut Vec<f32>,
        out: &mut [f32],
        biases: (Option<&[f32]>, Option<&[f32]>),
        residual: Option<&[f32]>,
        act: Option<Epilogue>,
    ) {
        let (k, h, n) = (first.k, first.n, second.n);
        assert!(second.k == h, "packed_f32: MLP widths");
        let threads = rayon::current_num_threads().max(1);
        if m < 2 * threads * MC || k == 0 || h == 0 {
            mid.resize(m * h, 0.0);
            first.matmul(x, m, mid, biases.0, None, act);
            second.matmul(mid, m, out, biases.1, residual, None);
            return;
        }
        assert!(x.len() >= m * k && out.len() >= m * n, "packed_f32: buffer sizes");
        assert!(biases.0.is_none_or(|b| b.len() >= h) && biases.1.is_none_or(|b| b.len() >= n));
        assert!(residual.is_none_or(|r| r.len() >= m * n), "packed_f32: residual size");
        thread_local! {
            static MID: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let out_ptr = SharedMut(out.as_mut_ptr());
        (0..m.div_ceil(MC)).into_par_iter().for_each(|t| {
            let r0 = t * MC;
            let rows = MC.min(m - r0);
            with_local(&MID, |buf| {
                buf.resize(MC * h, 0.0);
                // SAFETY: `buf` holds MC × h; this task alone writes rows r0..r0+rows of `out`
                // (m × n, asserted); the inputs are shared reads of asserted extents.
                unsafe {
                    first.task(&x[r0 * k..], rows, 0..h.div_ceil(NR), buf.as_mut_ptr(), biases.0, None, act);
                    let res = residual.map(|r| &r[r0 * n..]);
                    second.task(buf, rows, 0..n.div_ceil(NR), out_ptr.get().add(r0 * n), biases.1, res, None);
                }
            });
        });
    }

    /// Rows 0..rows of `x` (a block) times the panels `panels` into `out` (row 0 of the block,
    /// stride n), with the epilogue; single-threaded.
    #[allow(clippy::too_many_arguments)]
    unsafe fn task(
        &self,
        x: &[f32],
        rows: usize,
        panels: std::ops::Range<usize>,
        out: *mut f32,
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        act: Option<Epilogue>,
    ) {
        let (n, k) = (self.n, self.k);
        let w = self.panels();
        let chunks = k.div_ceil(KC);
        let kc = k.div_ceil(chunks);
        for c in 0..chunks {
            let k0 = c * kc;
            let len = kc.min(k - k0);
            let (first, last) = (c == 0, c + 1 == chunks);
            for p in panels.clone() {
                let col = p * NR;
                let width = NR.min(n - col);
                let wp = w.as_ptr().add(p * k * NR + k0 * NR);
                let mut i = 0;
                while i < rows {
                    let r = MR.min(rows - i);
                    let init = if first {
                        Init::Fresh {
                            bias: bias.map_or(std::ptr::null(), |b| b.as_ptr().add(col)),
                            residual: residual.map_or(std::ptr::null(), |res| res.as_ptr().add(i * n + col)),
                        }
                    } else {
                        Init::Accumulate
                    };
                    let tile = Tile {
                        x: x.as_ptr().add(i * k + k0),
                        ldx: k,
                        w: wp,
                        kc: len,
                        out: out.add(i * n + col),
                        ldo: n,
                        width,
                        init,
                    };
                    kernel::run(r, &tile);
                    i += r;
                }
                if let (true, Some(f)) = (last, act) {
                    for i in 0..rows {
                        f(std::slice::from_raw_parts_mut(out.add(i * n + col), width));
                    }
                }
            }
        }
    }
}

/// How a tile's accumulators start.
#[derive(Clone, Copy)]
enum Init {
    /// From bias + residual (either may be null = zero): the first k-chunk.
    Fresh { bias: *const f32, residual: *const f32 },
    /// From the output written by the previous k-chunk.
    Accumulate,
}

/// One register tile: rows of `x` (stride `ldx`) from the chunk start, `kc` steps of the panel
/// `w` (`NR` floats per step), into `out` (stride `ldo`), `width` ≤ NR valid columns.
struct Tile {
    x: *const f32,
    ldx: usize,
    w: *const f32,
    kc: usize,
    out: *mut f32,
    ldo: usize,
    width: usize,
    init: Init,
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{Init, Tile, MR, NR};

    /// Dispatch on the row count (1..=MR) so each tile size is its own fully unrolled kernel.
    ///
    /// # Safety
    /// `tile` describes valid memory for `r` rows; the CPU has AVX-512F (`available`).
    pub(super) unsafe fn run(r: usize, tile: &Tile) {
        match r {
            6 => rows::<6>(tile),
            5 => rows::<5>(tile),
            4 => rows::<4>(tile),
            3 => rows::<3>(tile),
            2 => rows::<2>(tile),
            _ => rows::<1>(tile),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(t: &Tile) {
        const { assert!(R <= MR && NR == 64) };
        let masks: [__mmask16; 4] = std::array::from_fn(|v| {
            let valid = t.width.saturating_sub(16 * v).min(16);
            ((1u32 << valid) - 1) as __mmask16
        });
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        match t.init {
            Init::Fresh { bias, residual } => {
                for v in 0..4 {
                    let b = if bias.is_null() {
                        _mm512_setzero_ps()
                    } else {
                        _mm512_maskz_loadu_ps(masks[v], bias.add(16 * v))
                    };
                    for (r, a) in acc.iter_mut().enumerate() {
                        a[v] = if residual.is_null() {
                            b
                        } else {
                            _mm512_add_ps(b, _mm512_maskz_loadu_ps(masks[v], residual.add(r * t.ldo + 16 * v)))
                        };
                    }
                }
            }
            Init::Accumulate => {
                for (r, a) in acc.iter_mut().enumerate() {
                    for v in 0..4 {
                        a[v] = _mm512_maskz_loadu_ps(masks[v], t.out.add(r * t.ldo + 16 * v));
                    }
                }
            }
        }
        let mut w = t.w;
        for kk in 0..t.kc {
            let wv = [
                _mm512_loadu_ps(w),
                _mm512_loadu_ps(w.add(16)),
                _mm512_loadu_ps(w.add(32)),
                _mm512_loadu_ps(w.add(48)),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let xb = _mm512_set1_ps(*t.x.add(r * t.ldx + kk));
                for v in 0..4 {
                    a[v] = _mm512_fmadd_ps(wv[v], xb, a[v]);
                }
            }
            w = w.add(NR);
        }
        for (r, a) in acc.iter().enumerate() {
            for v in 0..4 {
                _mm512_mask_storeu_ps(t.out.add(r * t.ldo + 16 * v), masks[v], a[v]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::Tile;

    /// Never called: `available` is false off x86-64, so nothing is packed.
    pub(super) unsafe fn run(_r: usize, _tile: &Tile) {
        unreachable!("packed f32 weights exist only on AVX-512 CPUs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::test_seq as seq;

    fn reference(
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
        res: Option<&[f32]>,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s: f64 = (0..k).map(|kk| x[i * k + kk] as f64 * w[j * k + kk] as f64).sum();
                s += bias.map_or(0.0, |b| b[j] as f64) + res.map_or(0.0, |r| r[i * n + j] as f64);
                out[i * n + j] = s;
            }
        }
        out
    }

    #[test]
    fn pack_unpack_round_trip() {
        for (n, k) in [(1, 1), (63, 5), (64, 7), (130, 3)] {
            let w = seq(n * k, 11);
            assert_eq!(PackedF32::pack(&w, n, k).unpack(), w, "n={n} k={k}");
        }
    }

    #[test]
    fn matmul_matches_reference_with_every_epilogue() {
        if !available() {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        // Shapes cover row tails (m % 6), column tails (n % 64, n < 16), several k-chunks with a
        // short last one (k = 300), more rows than one task (m > MC) and a single row.
        for &(m, n, k) in &[(1, 64, 128), (7, 17, 5), (13, 130, 300), (200, 384, 384), (6, 3, 1), (5, 64, 0)] {
            let x = seq(m * k, 1);
            let w = seq(n * k, 2);
            let b = seq(n, 3);
            let res = seq(m * n, 4);
            let p = PackedF32::pack(&w, n, k);
            for (bias, residual) in
                [(None, None), (Some(&b[..]), None), (None, Some(&res[..])), (Some(&b[..]), Some(&res[..]))]
            {
                let mut out = vec![f32::NAN; m * n];
                p.matmul(&x, m, &mut out, bias, residual, None);
                let want = reference(&x, &w, m, n, k, bias, residual);
                for (i, (g, e)) in out.iter().zip(&want).enumerate() {
                    assert!((*g as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()), "m={m} n={n} k={k} at {i}: {g} vs {e}");
                }
                let relu = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = x.max(0.0));
                let mut out = vec![f32::NAN; m * n];
                p.matmul(&x, m, &mut out, bias, residual, Some(&relu));
                for (g, e) in out.iter().zip(&want) {
                    assert!((*g as f64 - e.max(0.0)).abs() <= 1e-4 * (1.0 + e.abs()), "relu m={m} n={n} k={k}");
                }
            }
        }
    }

    #[test]
    fn fused_mlp_matches_two_matmuls() {
        if !available() {
            return;
        }
        // m = 500 runs as two matmuls (fewer rows than 2 × threads × MC on small pools); m = 1700
        // fused on up to 4 threads, with a partial last block of rows.
        let (k, h, n) = (40, 130, 72);
        let (w1, w2) = (seq(h * k, 1), seq(n * h, 2));
        let (b1, b2) = (seq(h, 3), seq(n, 4));
        let (p1, p2) = (PackedF32::pack(&w1, h, k), PackedF32::pack(&w2, n, h));
        let gelu_ish = |v: &mut [f32]| v.iter_mut().for_each(|x| *x = x.max(0.0) + 0.1 * x.sin());
        for m in [500, 1700] {
            let (x, res) = (seq(m * k, 5), seq(m * n, 6));
            let mut mid = vec![0f32; m * h];
            p1.matmul(&x, m, &mut mid, Some(&b1), None, Some(&gelu_ish));
            let mut want = vec![0f32; m * n];
            p2.matmul(&mid, m, &mut want, Some(&b2), Some(&res), None);
            let mut got = vec![f32::NAN; m * n];
            let mut scratch = Vec::new();
            PackedF32::mlp(
                &p1,
                &p2,
                &x,
                m,
                &mut scratch,
                &mut got,
                (Some(&b1), Some(&b2)),
                Some(&res),
                Some(&gelu_ish),
            );
            assert_eq!(got, want, "m={m}: same tiles, same order, same bits");
        }
    }

    #[test]
    fn output_outside_the_shape_is_untouched() {
        if !available() {
            return;
        }
        let (m, n, k) = (3, 20, 9);
        let p = PackedF32::pack(&seq(n * k, 5), n, k);
        let mut out = vec![7.0f32; m * n + 30];
        p.matmul(&seq(m * k, 6), m, &mut out, None, None, None);
        assert!(out[m * n..].iter().all(|v| *v == 7.0));
    }
}
