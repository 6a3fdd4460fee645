//! Integer path for quantized layers on CPUs with AVX-512 VNNI: the activations are quantized to
//! s8 per row in groups of `ACT_GROUP` inputs (one f32 scale each, symmetric, round half to even),
//! and `vpdpbusd` multiplies them with the weight's own unsigned codes, four products per 32-bit
//! lane, 64 per instruction: four times the multiply-adds of an f32 FMA.
//!
//! With `x̂ = sa · qa` per activation group and `w = s · c + b` per weight group,
//! `Σ x̂·w = Σ_groups [ s · Σ_act-groups sa · (Σ qa·c) + b · Σ x̂ ]`: the integer dot products are
//! exact; scales apply once per 32 inputs. The bias term uses the quantized activations' own sum
//! (not the exact one): then the error is `Σ e·w` with `e` the rounding error of the activations,
//! which stays small because `w` is centred, whereas `Σ e·(w − b)` would carry the group's offset.
//!
//! Why this design (measured, docs/models.md): dequantize-then-FMA runs at f32 speed at best, so an
//! 8-bit model could never beat its own f32 model on compute-bound batches; integer dot products
//! do. The cost is the activation rounding: groups of 32 keep MiniLM's embeddings within cosine
//! 0.999 of the float-activation result (per-row scales do not: outlier channels).
//!
//! Layout: per call, the weight is unpacked from MLX's layout into panels of `NB` weight rows
//! (output columns), `[NB/16][k/4][16][4]` bytes each (16 columns × 4 consecutive codes per
//! register), so every bit width works and the packed weight stays as stored.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::cell::RefCell;

use rayon::prelude::*;

use super::driver::with_local;
use super::{scalar, AffineWeight, KernelPanels};
use crate::weights::packed_f32::Epilogue;

/// Inputs sharing one activation scale. Every supported weight group size is a multiple of it.
pub(crate) const ACT_GROUP: usize = 32;
const INV_127: f32 = 1.0 / 127.0;
/// Output columns per task and per microkernel call (two registers of 16 lanes).
const NB: usize = 32;
/// Activation rows per microkernel call.
const MR: usize = 6;

/// Whether this CPU has the instructions (AVX-512 F/BW/VL and VNNI).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("fma")
}

/// `m` activation rows quantized for a weight of group size `gs`.
#[derive(Default)]
pub(crate) struct QuantActs {
    /// `[m, k]` s8 codes
    pub q: Vec<i8>,
    /// `[m, k / ACT_GROUP]` scales
    pub scale: Vec<f32>,
    /// `[m, k / gs]`: Σ scale·q over each weight group (the bias term's input)
    pub gsum: Vec<f32>,
    /// `[m, k / ACT_GROUP]`: scale·Σq per activation group, when a producing layer quantizes its
    /// output in column blocks (`mlp`) and the weight groups are summed afterwards
    part: Vec<f32>,
}

/// The activation quantizer, the definition both implementations follow exactly: per group,
/// `amax = max|x|`, `q = round_half_even(x · (127 / amax))`, `scale = amax / 127` (all zero when
/// `amax` is zero). Returns `scale · Σq`. (`1/127` as a multiplier: one rounding, the same in both.)
fn quantize_group_scalar(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (s, inv) = if amax > 0.0 { (amax * INV_127, 127.0 / amax) } else { (0.0, 0.0) };
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        // Saturating like `vpmovsdb`; |v·inv| ≤ 127 up to rounding anyway.
        let r = ((v * inv).round_ties_even() as i32).clamp(-128, 127);
        *o = r as i8;
        sum += r;
    }
    (s, s * sum as f32)
}

/// One row; `masks[a]` (empty: none) marks channels `a·32 + bit` to quantize as 0 (outliers).
fn quantize_row(x: &[f32], gs: usize, simd: bool, masks: &[u32], q: &mut [i8], scale: &mut [f32], gsum: &mut [f32]) {
    if simd {
        // SAFETY: `simd` is only set when `available()`.
        unsafe { quantize_row_simd(x, gs, masks, q, scale, gsum) }
    } else {
        quantize_row_with(x, gs, masks, q, scale, gsum, quantize_group_scalar)
    }
}

/// The SIMD row quantizer, sixteen groups at a time: their maxima and code sums are reduced
/// together by a shuffle network (about 3 instructions per group instead of 8 for each group's own
/// horizontal reduction), and the scales come from one vector division. Outlier channels are
/// cleared by the masked loads. Same results as `quantize_group_scalar`, bit for bit.
///
/// # Safety
/// AVX-512 F/BW available; `x` and `q` hold `scale.len() · ACT_GROUP` elements, `gsum` `x.len() / gs`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_row_simd(x: &[f32], gs: usize, masks: &[u32], q: &mut [i8], scale: &mut [f32], gsum: &mut [f32]) {
    const { assert!(ACT_GROUP == 32, "two registers per group") };
    let (na, per) = (scale.len(), gs / ACT_GROUP);
    debug_assert!(x.len() >= na * ACT_GROUP && q.len() >= na * ACT_GROUP && gsum.len() * per >= na);
    // Group a's half h, its outlier channels zeroed.
    let load = |a: usize, h: usize| {
        let keep = !(masks.get(a).copied().unwrap_or(0) >> (16 * h)) as __mmask16;
        _mm512_maskz_loadu_ps(keep, x.as_ptr().add(a * ACT_GROUP + 16 * h))
    };
    let mut acc = 0f32;
    for g0 in (0..na).step_by(16) {
        let ng = 16.min(na - g0);
        let lanes = ((1u32 << ng) - 1) as __mmask16;
        let mut m = [_mm512_setzero_ps(); 16];
        for (j, mj) in m.iter_mut().enumerate().take(ng) {
            *mj = _mm512_max_ps(_mm512_abs_ps(load(g0 + j, 0)), _mm512_abs_ps(load(g0 + j, 1)));
        }
        let amax = reduce16(m, |a, b| _mm512_max_ps(a, b));
        let s = _mm512_mul_ps(amax, _mm512_set1_ps(INV_127));
        let nonzero = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(amax, _mm512_setzero_ps());
        let inv = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(127.0), amax);
        _mm512_mask_storeu_ps(scale.as_mut_ptr().add(g0), lanes, s);
        let mut invs = [0f32; 16];
        _mm512_storeu_ps(invs.as_mut_ptr(), inv);
        let mut sums = [_mm512_setzero_ps(); 16];
        for (j, sj) in sums.iter_mut().enumerate().take(ng) {
            let vi = _mm512_set1_ps(invs[j]);
            let mut sum = _mm512_setzero_si512();
            for h in 0..2 {
                // Default MXCSR rounding: to nearest, ties to even, as `round_ties_even`.
                let qc = _mm512_cvtps_epi32(_mm512_mul_ps(load(g0 + j, h), vi));
                let dst = q.as_mut_ptr().add((g0 + j) * ACT_GROUP + 16 * h);
                _mm_storeu_si128(dst as *mut __m128i, _mm512_cvtsepi32_epi8(qc));
                sum = _mm512_add_epi32(sum, qc);
            }
            *sj = _mm512_castsi512_ps(sum);
        }
        // Sums of the saturated codes (equal to the unsaturated ones: |q| ≤ 127), as integers.
        let add = |a: __m512, b: __m512| {
            _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)))
        };
        let total = _mm512_cvtepi32_ps(_mm512_castps_si512(reduce16(sums, add)));
        let mut part = [0f32; 16];
        _mm512_storeu_ps(part.as_mut_ptr(), _mm512_mul_ps(s, total));
        for (j, p) in part.iter().enumerate().take(ng) {
            acc += p;
            if (g0 + j + 1).is_multiple_of(per) {
                gsum[(g0 + j) / per] = acc;
                acc = 0.0;
            }
        }
    }
}

/// Lane j of the result = `op` over the 16 lanes of `v[j]` (a transpose and reduce in one: two
/// shuffles and one `op` per pair at each of four levels, then one permutation).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: [__m512; 16], op: impl Fn(__m512, __m512) -> __m512) -> __m512 {
    // 16 → 8 lanes per group: register i holds groups 2i, 2i+1 (two 128-bit blocks each).
    let r1: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        op(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b))
    });
    // → 4 lanes: register i holds groups 4i..4i+4, one 128-bit block each.
    let r2: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (r1[2 * i], r1[2 * i + 1]);
        op(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b))
    });
    // → 2 lanes: register i, block c holds groups 8i + c and 8i + 4 + c.
    let r3: [__m512; 2] = std::array::from_fn(|i| {
        let (a, b) = (r2[2 * i], r2[2 * i + 1]);
        op(_mm512_shuffle_ps::<0x44>(a, b), _mm512_shuffle_ps::<0xEE>(a, b))
    });
    // → 1 lane: block c holds groups c, 4 + c, 8 + c, 12 + c; lane 4c + j is group c + 4j.
    let r4 = op(_mm512_shuffle_ps::<0x88>(r3[0], r3[1]), _mm512_shuffle_ps::<0xDD>(r3[0], r3[1]));
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(order, r4)
}

#[inline(always)]
fn quantize_row_with(
    x: &[f32],
    gs: usize,
    masks: &[u32],
    q: &mut [i8],
    scale: &mut [f32],
    gsum: &mut [f32],
    group: impl Fn(&[f32], &mut [i8]) -> (f32, f32),
) {
    let per = gs / ACT_GROUP;
    for (g, gsum) in gsum.iter_mut().enumerate() {
        let mut acc = 0f32;
        for (a, sc) in scale.iter_mut().enumerate().skip(g * per).take(per) {
            let r = a * ACT_GROUP..(a + 1) * ACT_GROUP;
            // Outlier bits for this group's channels, 32 per mask word.
            let words = masks.get(a * ACT_GROUP / 32..(a + 1) * ACT_GROUP / 32).unwrap_or(&[]);
            let (s, part) = if words.iter().all(|&w| w == 0) {
                group(&x[r.clone()], &mut q[r])
            } else {
                // A group holding outliers is quantized from a copy with them cleared.
                let mut tmp = [0f32; ACT_GROUP];
                tmp.copy_from_slice(&x[r.clone()]);
                for (i, t) in tmp.iter_mut().enumerate() {
                    if words[i / 32] >> (i % 32) & 1 == 1 {
                        *t = 0.0;
                    }
                }
                group(&tmp, &mut q[r])
            };
            *sc = s;
            acc += part;
        }
        *gsum = acc;
    }
}

/// Quantize `x` `[m, k]` for a weight of group size `gs` into `a` (reusing its buffers; rows in
/// parallel when there are many). Channels in `zeroed` are quantized as if they were 0 (they are
/// the outliers the caller multiplies in f32; see `matmul`).
pub(crate) fn quantize_acts_into(
    x: &[f32],
    m: usize,
    k: usize,
    gs: usize,
    simd: bool,
    zeroed: &[usize],
    a: &mut QuantActs,
) {
    assert!(k.is_multiple_of(gs) && gs.is_multiple_of(ACT_GROUP) && x.len() >= m * k);
    assert!(zeroed.iter().all(|&c| c < k), "outlier channel past the row");
    let (na, ng) = (k / ACT_GROUP, k / gs);
    // Resized, not re-allocated: every element is overwritten below.
    a.q.resize(m * k, 0);
    a.scale.resize(m * na, 0.0);
    a.gsum.resize(m * ng, 0.0);
    let rows = a.q[..m * k]
        .par_chunks_mut(k)
        .zip(a.scale[..m * na].par_chunks_mut(na))
        .zip(a.gsum[..m * ng].par_chunks_mut(ng));
    // Per activation group, a bit per channel to clear (ACT_GROUP = 32 bits).
    let mut masks = vec![0u32; if zeroed.is_empty() { 0 } else { k / 32 }];
    for &c in zeroed {
        masks[c / 32] |= 1 << (c % 32);
    }
    rows.enumerate()
        .with_min_len(16)
        .for_each(|(i, ((q, s), g))| quantize_row(&x[i * k..(i + 1) * k], gs, simd, &masks, q, s, g));
}

/// `quantize_acts_into` a fresh buffer (the test reference).
#[cfg(test)]
pub(crate) fn quantize_acts(x: &[f32], m: usize, k: usize, gs: usize, simd: bool) -> QuantActs {
    let mut a = QuantActs::default();
    quantize_acts_into(x, m, k, gs, simd, &[], &mut a);
    a
}

thread_local! {
    /// The calling thread's quantized activations, reused across calls (a fresh multi-megabyte
    /// buffer per call would cost its page faults every time).
    static ACTS: RefCell<QuantActs> = RefCell::new(QuantActs::default());
    /// The second layer's activations in `mlp`.
    static ACTS_NEXT: RefCell<QuantActs> = RefCell::new(QuantActs::default());
}

/// The reference: `out[m, n] = x[m, k] · Wᵀ` by the integer formula with plain loops, in the same
/// floating-point order as the SIMD kernel (so the two agree to rounding of the final store).
#[cfg(test)]
pub(crate) fn matmul_reference(w: &AffineWeight, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k, gs, bits) = (w.n(), w.k(), w.group_size(), w.bits());
    let a = quantize_acts(x, m, k, gs, false);
    let (na, ng) = (k / ACT_GROUP, k / gs);
    for j in 0..n {
        let (row, scales, biases) = w.row_parts(j);
        for i in 0..m {
            let mut f = 0f32;
            for ga in 0..na {
                let gw = ga * ACT_GROUP / gs;
                let mut dot = 0i32;
                for l in ga * ACT_GROUP..(ga + 1) * ACT_GROUP {
                    dot += a.q[i * k + l] as i32 * scalar::code(row, l, bits) as i32;
                }
                f = (dot as f32).mul_add(scales.get(gw) * a.scale[i * na + ga], f);
                if ((ga + 1) * ACT_GROUP).is_multiple_of(gs) {
                    f = biases.get(gw).mul_add(a.gsum[i * ng + gw], f);
                }
            }
            out[i * n + j] = f;
        }
    }
}

thread_local! {
    /// The calling thread's packed weight (codes, then scales and biases), reused across calls.
    static PACKED: RefCell<(Vec<u8>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Unpack codes of weight rows `c0..c0 + nc` (≤ NB), all `k` inputs, into `buf`
/// (`[NB/16][k/4][16][4]`), and their scales and biases into `params` (`[2][k/gs][NB]`); rows past
/// `nc` are zero, so they contribute nothing.
fn pack_panel(w: &AffineWeight, c0: usize, nc: usize, buf: &mut [u8], params: &mut [f32]) {
    let (bits, gs, k) = (w.bits(), w.group_size(), w.k());
    let blk = k * 16;
    let groups = k / gs;
    let gathered = matches!(bits, 4 | 8);
    if gathered {
        // Codes by gathers (16 weight rows per instruction), scales and biases below.
        let row_bytes = k * bits as usize / 8;
        let bytes: &[u8] = bytemuck::cast_slice(w.packed());
        for b in 0..NB / 16 {
            let r0 = c0 + 16 * b;
            let rows = nc.saturating_sub(16 * b).min(16);
            let dst = &mut buf[b * blk..(b + 1) * blk];
            if rows == 0 {
                dst.fill(0);
                continue;
            }
            // SAFETY: `available()` holds (checked by `matmul`); rows r0..r0+rows exist, each
            // `row_bytes` long, and the gathers read only inside them (see `gather_block`); `dst`
            // holds k·16 bytes.
            unsafe { gather_block(&bytes[r0 * row_bytes..(r0 + rows) * row_bytes], row_bytes, rows, k, bits, dst) };
        }
    }
    for j in 0..NB {
        let (b, lane) = (j / 16, j % 16);
        let quad = |l: usize| b * blk + (l / 4) * 64 + lane * 4 + l % 4;
        if j >= nc {
            for l in (0..k).filter(|_| !gathered) {
                buf[quad(l)] = 0;
            }
            for g in 0..groups {
                params[g * NB + j] = 0.0;
                params[(groups + g) * NB + j] = 0.0;
            }
            continue;
        }
        let (row, scales, biases) = w.row_parts(c0 + j);
        for g in 0..groups {
            params[g * NB + j] = scales.get(g);
            params[(groups + g) * NB + j] = biases.get(g);
        }
        // Other bit widths (rare in published checkpoints): codes one by one.
        for l in (0..k).filter(|_| !gathered) {
            buf[quad(l)] = scalar::code(row, l, bits) as u8;
        }
    }
}

/// The codes of `rows` (≤ 16) consecutive weight rows (`src`, `row_bytes` each, MLX layout),
/// all `k` inputs, into one `[k/4][16][4]` block: one masked gather per 16-lane vector, rows
/// past `rows` zero. 8-bit: each lane reads its row's four codes; 4-bit: each lane reads the aligned
/// 32-bit word holding eight codes and spreads its nibbles into two vectors of bytes.
///
/// # Safety
/// AVX-512 F available; `src` holds `rows · row_bytes` bytes, `k` a multiple of 32; `dst` holds
/// `k · 16` bytes.
#[target_feature(enable = "avx512f")]
unsafe fn gather_block(src: &[u8], row_bytes: usize, rows: usize, k: usize, bits: u32, dst: &mut [u8]) {
    debug_assert!(rows <= 16 && src.len() >= rows * row_bytes && dst.len() >= k * 16);
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(row_bytes as i32));
    let mask: __mmask16 = if rows >= 16 { 0xffff } else { ((1u32 << rows) - 1) as __mmask16 };
    let zero = _mm512_setzero_si512();
    let out = dst.as_mut_ptr() as *mut __m512i;
    if bits == 8 {
        for t in 0..k / 4 {
            let v = _mm512_mask_i32gather_epi32::<1>(zero, mask, offsets, src.as_ptr().add(4 * t) as _);
            _mm512_storeu_si512(out.add(t), v);
        }
        return;
    }
    // 4-bit: word u holds codes 8u..8u+8 (nibbles, lowest first): quads 2u and 2u+1.
    let nib = _mm512_set1_epi32(0xf);
    let spread = |x: __m512i| {
        // n0 | n1<<4 | n2<<8 | n3<<12 (low 16 bits)  ->  n0 | n1<<8 | n2<<16 | n3<<24
        let n = |v: __m512i| _mm512_and_si512(v, nib);
        let a = n(x);
        let b = _mm512_slli_epi32::<8>(n(_mm512_srli_epi32::<4>(x)));
        let c = _mm512_slli_epi32::<16>(n(_mm512_srli_epi32::<8>(x)));
        let d = _mm512_slli_epi32::<24>(n(_mm512_srli_epi32::<12>(x)));
        _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d))
    };
    for u in 0..k / 8 {
        let v = _mm512_mask_i32gather_epi32::<1>(zero, mask, offsets, src.as_ptr().add(4 * u) as _);
        _mm512_storeu_si512(out.add(2 * u), spread(v));
        _mm512_storeu_si512(out.add(2 * u + 1), spread(_mm512_srli_epi32::<16>(v)));
    }
}

/// What the kernel does with its output besides writing the product.
#[derive(Clone, Copy, Default)]
pub(crate) struct Finish<'a> {
    /// `[n]`, added to every row
    pub bias: Option<&'a [f32]>,
    /// `[m, n]`, added (a layer's residual input)
    pub residual: Option<&'a [f32]>,
    /// run on the finished rows (after bias, residual and outliers): the layer's activation
    pub act: Option<Epilogue<'a>>,
    /// add onto what the output holds
    pub acc: bool,
    /// also quantize the finished output (the next layer's input; set by `mlp`)
    pub quant: Option<QuantOut>,
}

/// Where a finish writes the quantized output: `QuantActs` buffers for `[m, n]` (q, scale, part).
#[derive(Clone, Copy)]
pub(crate) struct QuantOut {
    q: *mut i8,
    scale: *mut f32,
    part: *mut f32,
}
// SAFETY: tasks write the rows and column blocks of the output they own (disjoint), and the
// buffers outlive the parallel section.
unsafe impl Send for QuantOut {}
unsafe impl Sync for QuantOut {}

/// One activation block's inputs to the microkernel.
struct Rows<'a> {
    q: [&'a [i8]; MR],
    scale: [&'a [f32]; MR],
    gsum: [&'a [f32]; MR],
    /// the f32 input rows (read for the outlier channels only)
    x: [&'a [f32]; MR],
}

/// Where the microkernel writes: `R` rows of the output from column `c0`, `nc` (≤ NB) columns.
struct Dest<'a> {
    /// `out[i0 * ldo + c0]`
    ptr: *mut f32,
    ldo: usize,
    nc: usize,
    /// the layer bias at `c0`; null for none
    bias: *const f32,
    /// `residual[i0 * ldo + c0]`; null for none
    residual: *const f32,
    /// add onto what the output holds
    add: bool,
    /// outlier input channels, and the panel's weights for them `[outliers][NB]`
    outliers: &'a [usize],
    outlier_w: *const f32,
}

/// `out[r][j] (+)= Σ over all k (+ bias, residual, outlier channels)` for `R` activation rows and
/// the panel's columns.
///
/// # Safety
/// AVX-512 F/BW + VNNI available; `rows.q[r]` holds `k` codes, `rows.scale[r]` `k / ACT_GROUP`
/// scales, `rows.gsum[r]` `k / gs` sums, `rows.x[r]` `k` floats; `buf` holds `NB * k` bytes and
/// `params` `2 * NB * k / gs` floats; `dest` addresses `R` rows of `nc` writable floats `ldo` apart
/// (and `nc` bias floats, `R` residual rows, `outliers.len()` rows of NB outlier weights, where set),
/// touched by no other thread during the call.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
// Indices spell out the register tile (row r, half h); iterator chains obscure which register is which.
#[allow(clippy::needless_range_loop)]
unsafe fn microkernel<const R: usize>(rows: &Rows<'_>, buf: &[u8], params: &[f32], k: usize, gs: usize, dest: &Dest) {
    let blk = k * 16;
    let groups = k / gs;
    let (wp, pp) = (buf.as_ptr(), params.as_ptr());
    let mut f = [[_mm512_setzero_ps(); 2]; R];
    for gw in 0..groups {
        let s0 = _mm512_loadu_ps(pp.add(gw * NB));
        let s1 = _mm512_loadu_ps(pp.add(gw * NB + 16));
        for ga in gw * gs / ACT_GROUP..(gw + 1) * gs / ACT_GROUP {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            for qd in 0..ACT_GROUP / 4 {
                let l = ga * ACT_GROUP + qd * 4;
                let w0 = _mm512_loadu_si512(wp.add(l * 16) as *const __m512i);
                let w1 = _mm512_loadu_si512(wp.add(blk + l * 16) as *const __m512i);
                for r in 0..R {
                    let a = _mm512_set1_epi32((rows.q[r].as_ptr().add(l) as *const i32).read_unaligned());
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, a);
                    acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, a);
                }
            }
            for r in 0..R {
                let sa = _mm512_set1_ps(*rows.scale[r].get_unchecked(ga));
                f[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][0]), _mm512_mul_ps(s0, sa), f[r][0]);
                f[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][1]), _mm512_mul_ps(s1, sa), f[r][1]);
            }
        }
        let b0 = _mm512_loadu_ps(pp.add((groups + gw) * NB));
        let b1 = _mm512_loadu_ps(pp.add((groups + gw) * NB + 16));
        for r in 0..R {
            let g = _mm512_set1_ps(*rows.gsum[r].get_unchecked(gw));
            f[r][0] = _mm512_fmadd_ps(b0, g, f[r][0]);
            f[r][1] = _mm512_fmadd_ps(b1, g, f[r][1]);
        }
    }
    let keep = |cols: usize| if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as __mmask16 };
    let masks = [keep(dest.nc), keep(dest.nc.saturating_sub(16))];
    for (r, fr) in f.iter().enumerate() {
        let o = dest.ptr.add(r * dest.ldo);
        for (h, (&mask, &v)) in masks.iter().zip(fr).enumerate() {
            let mut v = v;
            if !dest.bias.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dest.bias.add(16 * h)));
            }
            if dest.add {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, o.add(16 * h)));
            }
            if !dest.residual.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dest.residual.add(r * dest.ldo + 16 * h)));
            }
            for (i, &c) in dest.outliers.iter().enumerate() {
                let wo = _mm512_maskz_loadu_ps(mask, dest.outlier_w.add(i * NB + 16 * h));
                v = _mm512_fmadd_ps(_mm512_set1_ps(*rows.x[r].get_unchecked(c)), wo, v);
            }
            _mm512_mask_storeu_ps(o.add(16 * h), mask, v);
        }
    }
}

/// An input channel is an outlier when its largest |x| over the call's rows passes this many times
/// the mean over channels of that largest |x|. Measured on all-MiniLM-L6-v2 `--dtype int8`
/// (`golden_minilm`, 67 texts, min cosine to sentence-transformers) with the split on every layer:
/// no split 0.99842, ratio 8: 0.99868, 6: 0.99869, 4: 0.99927, 3: 0.99938, 2: 0.99941. The q/k/v
/// inputs have 1 to 4 such channels (LayerNorm's few huge ones).
const OUTLIER_RATIO: f32 = 3.0;

/// `out[m, n] (+)= x[m, k] · Wᵀ (+ bias, residual; then the activation)` on the integer path; for
/// layers that ask for it (`AffineWeight::set_split_outliers`), LLM.int8()-style outlier
/// decomposition: channels whose magnitude would set a whole
/// group's scale (`OUTLIER_RATIO`, at most k/32 of them) are left out of the integer product and
/// multiplied in f32 instead, in the same pass.
///
/// # Panics
/// If this CPU lacks the instructions (`available()`), or on size mismatches (caller bugs).
pub(crate) fn matmul(w: &AffineWeight, x: &[f32], m: usize, out: &mut [f32], fin: Finish<'_>) {
    assert!(available(), "int8 kernel called on a CPU without AVX-512 VNNI");
    let (n, k) = (w.n(), w.k());
    assert!(x.len() >= m * k && out.len() >= m * n && fin.bias.is_none_or(|b| b.len() == n));
    assert!(fin.residual.is_none_or(|r| r.len() >= m * n));
    if m == 0 || n == 0 {
        return;
    }
    with_local(&ACTS, |a| {
        let outliers = quantize_input(w, x, m, a);
        multiply(w, a, x, m, out, fin, &outliers)
    });
}

/// `out = second(act(first(x) + bias₁)) + bias₂ + residual` with both layers on the integer path:
/// the first layer's finish quantizes its output block by block while it is in cache (instead of
/// a separate pass over `mid` from memory). `mid` (`[m, first.n()]`) holds the f32 activations.
/// Returns false, computing nothing, when the pair does not fit that scheme (the second layer
/// splits outliers, which needs its whole input first; or widths not in activation groups).
///
/// # Panics
/// As `matmul`.
pub(crate) fn mlp(
    (first, second): (&AffineWeight, &AffineWeight),
    x: &[f32],
    m: usize,
    mid: &mut [f32],
    out: &mut [f32],
    (fin1, fin2): (Finish<'_>, Finish<'_>),
) -> bool {
    let n1 = first.n();
    if second.split_outliers() || second.k() != n1 || !n1.is_multiple_of(ACT_GROUP) || fin1.acc {
        return false;
    }
    assert!(available(), "int8 kernel called on a CPU without AVX-512 VNNI");
    let (k, gs2) = (first.k(), second.group_size());
    assert!(x.len() >= m * k && mid.len() >= m * n1 && out.len() >= m * second.n());
    if m == 0 || n1 == 0 {
        return false;
    }
    with_local(&ACTS, |a| {
        with_local(&ACTS_NEXT, |b| {
            let outliers = quantize_input(first, x, m, a);
            let (na, ng) = (n1 / ACT_GROUP, n1 / gs2);
            // Every element is written by the first layer's finish (rows × all column blocks).
            b.q.resize(m * n1, 0);
            b.scale.resize(m * na, 0.0);
            b.part.resize(m * na, 0.0);
            b.gsum.resize(m * ng, 0.0);
            let quant = QuantOut { q: b.q.as_mut_ptr(), scale: b.scale.as_mut_ptr(), part: b.part.as_mut_ptr() };
            multiply(first, a, x, m, &mut mid[..m * n1], Finish { quant: Some(quant), ..fin1 }, &outliers);
            // Weight-group sums of the second layer, in the order `quantize_row` adds them.
            let per = gs2 / ACT_GROUP;
            for (g, p) in b.gsum[..m * ng].iter_mut().zip(b.part[..m * na].chunks_exact(per)) {
                *g = p.iter().fold(0.0, |acc, v| acc + v);
            }
            multiply(second, b, mid, m, out, fin2, &[]);
        })
    });
    true
}

/// Quantize `w`'s input `x` (`m` rows) into `a`, its outlier channels (returned) cleared where the
/// layer splits them.
fn quantize_input(w: &AffineWeight, x: &[f32], m: usize, a: &mut QuantActs) -> Vec<usize> {
    let k = w.k();
    let outliers = if w.split_outliers() { outlier_channels(&x[..m * k], k) } else { Vec::new() };
    quantize_acts_into(x, m, k, w.group_size(), true, &outliers, a);
    outliers
}

/// The outlier channels of `x` (rows of `k`), largest first.
fn outlier_channels(x: &[f32], k: usize) -> Vec<usize> {
    let rows = x.len() / k;
    // Tasks of at least 64 rows: the per-task maxima are merged by a k-wide pass each.
    let per_task = rows.div_ceil(4 * rayon::current_num_threads().max(1)).max(64);
    let absmax = x
        .par_chunks(per_task * k)
        .map(|block| {
            let mut mx = vec![0f32; k];
            // SAFETY: `available()` holds (checked by the caller).
            unsafe { column_absmax(block, &mut mx) };
            mx
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x = x.max(*y));
            a
        })
        .unwrap_or_default();
    let limit = OUTLIER_RATIO * absmax.iter().sum::<f32>() / k as f32;
    let mut out: Vec<usize> = (0..absmax.len()).filter(|&c| absmax[c] > limit).collect();
    out.sort_by(|a, b| absmax[*b].total_cmp(&absmax[*a]));
    out.truncate(k / 32);
    out
}

/// `mx[c] = max(mx[c], |x[i, c]|)` over the rows of `x`.
///
/// # Safety
/// AVX-512 F available.
#[target_feature(enable = "avx512f")]
unsafe fn column_absmax(x: &[f32], mx: &mut [f32]) {
    for row in x.chunks_exact(mx.len()) {
        for (m, v) in mx.iter_mut().zip(row) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
}

/// One panel's outlier columns dequantized from its codes and params, `[outliers][NB]` (columns
/// past the weight are zero), so the kernel reads them along its output columns: sixteen columns
/// per step (one code byte out of each lane's quad).
///
/// # Safety
/// AVX-512 F available; `panel` and `pp` are one panel of a `k`-input weight of group size `gs`
/// (`NB · k` bytes, `2 · NB · k / gs` floats); every outlier channel is below k.
#[target_feature(enable = "avx512f")]
unsafe fn panel_outlier_weights(panel: &[u8], pp: &[f32], k: usize, gs: usize, outliers: &[usize], out: &mut Vec<f32>) {
    debug_assert!(panel.len() >= NB * k && pp.len() >= 2 * NB * (k / gs));
    out.resize(outliers.len() * NB, 0.0);
    let groups = k / gs;
    for half in 0..NB / 16 {
        let codes = panel.as_ptr().add(half * k * 16);
        let params = pp.as_ptr().add(half * 16);
        for (o, &c) in outliers.iter().enumerate() {
            // Lane i's quad holds codes c − c%4 .. of column 16·half + i; byte c%4 is this channel's.
            let quads = _mm512_loadu_si512(codes.add(c / 4 * 64) as *const __m512i);
            let byte = _mm512_srl_epi32(quads, _mm_cvtsi32_si128(8 * (c % 4) as i32));
            let code = _mm512_cvtepi32_ps(_mm512_and_si512(byte, _mm512_set1_epi32(0xff)));
            let g = c / gs;
            let (scale, bias) = (_mm512_loadu_ps(params.add(g * NB)), _mm512_loadu_ps(params.add((groups + g) * NB)));
            _mm512_storeu_ps(out.as_mut_ptr().add(o * NB + 16 * half), _mm512_add_ps(_mm512_mul_ps(code, scale), bias));
        }
    }
}

/// Bytes of codes and floats of params in one panel of `w` (see `pack_panel`).
fn panel_sizes(w: &AffineWeight) -> (usize, usize) {
    (NB * w.k(), 2 * NB * (w.k() / w.group_size()))
}

/// `w` unpacked into panels (codes `[panels][NB/16][k/4][16][4]`, params `[panels][2][k/gs][NB]`)
/// and kept, made on first use where the budget allows (8-bit weights only: for 4-bit ones the copy
/// would triple their memory); None: unpack per call.
fn cached_panels(w: &AffineWeight) -> Option<&KernelPanels> {
    let panels = w.n().div_ceil(NB);
    let (pbytes, pparams) = panel_sizes(w);
    w.panels_cell()
        .get_or_init(|| {
            let mut p = (w.bits() == 8).then(|| KernelPanels::reserve(panels * pbytes, panels * pparams)).flatten()?;
            unpack_all(w, &mut p.codes, &mut p.params);
            Some(std::sync::Arc::new(p))
        })
        .as_deref()
}

/// Every panel of `w` into `codes` / `params` (sized for all of them), in parallel.
fn unpack_all(w: &AffineWeight, codes: &mut [u8], params: &mut [f32]) {
    let n = w.n();
    let (pbytes, pparams) = panel_sizes(w);
    codes
        .par_chunks_mut(pbytes)
        .zip(params.par_chunks_mut(pparams))
        .enumerate()
        .for_each(|(p, (b, pr))| pack_panel(w, p * NB, NB.min(n - p * NB), b, pr))
}

thread_local! {
    /// A task's own panel (codes, params) when panels are unpacked per task, and its outlier weights.
    static TASK_PANEL: RefCell<(Vec<u8>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Calls of at most this many row blocks unpack an uncached weight panel by panel inside their
/// tasks (each panel straight from L1 into the kernel; a panel is unpacked once per row block);
/// longer calls unpack it all first, once. Measured on a Qwen3-0.6B-shaped 4-bit model, single
/// query: unpacking everything first (3 MB written, then read back, per gate/up call) took p50 from
/// 132 to 166–180 ms.
const UNPACK_IN_TASK_BLOCKS: usize = 4;

/// Activation rows per task: the block's codes stay in L1 while every panel of the weight passes
/// over it, and its output rows in L2. Measured on MiniLM's 1536×384 layer at 7,680 rows, 2 threads:
/// 12–36 rows 615–650 GFLOP/s, 96 rows and more 290 (the output block stops fitting in L2).
const MB: usize = 24;
const _: () = assert!(MB.is_multiple_of(MR), "row blocks are whole tiles");

/// Tasks of (row block, range of panels) over the weight's panels (kept, unpacked all at once per
/// call, or per panel inside the tasks on short calls; see `UNPACK_IN_TASK_BLOCKS`): row blocks
/// first, so each block's activations are read from memory once per call (not once per panel),
/// panels split further only when there are too few row blocks to keep every thread busy. The
/// activation runs on each task's finished rows while they are in cache.
fn multiply(
    w: &AffineWeight,
    a: &QuantActs,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    fin: Finish<'_>,
    outliers: &[usize],
) {
    let (n, k, gs) = (w.n(), w.k(), w.group_size());
    let (na, ng) = (k / ACT_GROUP, k / gs);
    let panels = n.div_ceil(NB);
    let (pbytes, pparams) = panel_sizes(w);
    let blocks = m.div_ceil(MB);
    let want = 4 * rayon::current_num_threads().max(1);
    let per = panels.div_ceil(want.div_ceil(blocks).min(panels));
    // Recomputed from `per` so that no task starts past the last panel: with many threads
    // (96 panels, 64 wanted tasks → 2 panels each) the first guess leaves tasks with no panels,
    // whose finish pass would address columns past the matrix.
    let split = panels.div_ceil(per);
    let shared = super::driver::SharedOut::new(out);
    let cached = cached_panels(w);
    let unpack_in_task = cached.is_none() && blocks <= UNPACK_IN_TASK_BLOCKS;
    let run = |all: Option<(&[u8], &[f32])>| {
        (0..blocks * split).into_par_iter().for_each(|t| {
            let (ib, ps) = (t / split * MB, t % split * per);
            let (ie, pe) = (m.min(ib + MB), panels.min(ps + per));
            // The block's row tiles, made once for all its panels (rows past the block repeat
            // its last row; the kernel only reads the first `mr`).
            let tiles: [Rows; MB / MR] = std::array::from_fn(|t| {
                let row = |r: usize| (ib + t * MR + r).min(ie - 1);
                Rows {
                    q: std::array::from_fn(|r| &a.q[row(r) * k..][..k]),
                    scale: std::array::from_fn(|r| &a.scale[row(r) * na..][..na]),
                    gsum: std::array::from_fn(|r| &a.gsum[row(r) * ng..][..ng]),
                    x: std::array::from_fn(|r| &x[row(r) * k..][..k]),
                }
            });
            with_local(&TASK_PANEL, |(own_codes, own_params, outlier_w)| {
                for p in ps..pe {
                    let (c0, nc) = (p * NB, NB.min(n - p * NB));
                    let (wb, wp) = match all {
                        Some((codes, params)) => (&codes[p * pbytes..][..pbytes], &params[p * pparams..][..pparams]),
                        None => {
                            own_codes.resize(pbytes, 0);
                            own_params.resize(pparams, 0.0);
                            pack_panel(w, c0, nc, own_codes, own_params);
                            (&own_codes[..], &own_params[..])
                        }
                    };
                    if !outliers.is_empty() {
                        // SAFETY: `available()` asserted by the callers; one panel's buffers.
                        unsafe { panel_outlier_weights(wb, wp, k, gs, outliers, outlier_w) };
                    }
                    for (rows, i0) in tiles.iter().zip((ib..ie).step_by(MR)) {
                        let mr = MR.min(m - i0);
                        let dest = Dest {
                            ptr: shared.at(i0 * n + c0),
                            ldo: n,
                            nc,
                            bias: fin.bias.map_or(std::ptr::null(), |b| b[c0..].as_ptr()),
                            residual: fin.residual.map_or(std::ptr::null(), |r| r[i0 * n + c0..].as_ptr()),
                            add: fin.acc,
                            outliers,
                            outlier_w: outlier_w.as_ptr(),
                        };
                        // SAFETY: `available()` asserted; the slices above have the lengths the
                        // kernel reads (k codes, k/32 scales, k/gs sums, k floats), the panel NB·k
                        // bytes and 2·NB·k/gs floats; bias and residual (asserted to hold m·n) cover
                        // the columns read, the outlier weights `outliers.len()` rows of NB; rows
                        // i0..i0+mr, columns c0..c0+nc of `out` (asserted to hold m·n) belong to
                        // this task alone.
                        unsafe {
                            match mr {
                                1 => microkernel::<1>(rows, wb, wp, k, gs, &dest),
                                2 => microkernel::<2>(rows, wb, wp, k, gs, &dest),
                                3 => microkernel::<3>(rows, wb, wp, k, gs, &dest),
                                4 => microkernel::<4>(rows, wb, wp, k, gs, &dest),
                                5 => microkernel::<5>(rows, wb, wp, k, gs, &dest),
                                _ => microkernel::<6>(rows, wb, wp, k, gs, &dest),
                            }
                        }
                    }
                }
            });
            let (c0, c1) = (ps * NB, n.min(pe * NB));
            for i in (ib..ie).filter(|_| fin.act.is_some() || fin.quant.is_some()) {
                // SAFETY: rows ib..ie, columns c0..c1 of `out` belong to this task alone.
                let row = unsafe { std::slice::from_raw_parts_mut(shared.at(i * n + c0), c1 - c0) };
                if let Some(act) = fin.act {
                    act(row);
                }
                if let Some(qo) = fin.quant {
                    // The next layer's codes for this block, while it is in cache. `mlp` checked
                    // that n is a multiple of ACT_GROUP, so blocks start and end on groups.
                    let (na, a0) = (n / ACT_GROUP, c0 / ACT_GROUP);
                    let groups = (c1 - c0) / ACT_GROUP;
                    // SAFETY: row i, columns c0..c1 (groups a0..a0+groups) of the `[m, n]` buffers
                    // belong to this task alone; `mlp` sized them.
                    let (q, scale, part) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(qo.q.add(i * n + c0), c1 - c0),
                            std::slice::from_raw_parts_mut(qo.scale.add(i * na + a0), groups),
                            std::slice::from_raw_parts_mut(qo.part.add(i * na + a0), groups),
                        )
                    };
                    quantize_row(row, ACT_GROUP, true, &[], q, scale, part);
                }
            }
        })
    };
    match cached {
        Some(p) => run(Some((&p.codes, &p.params))),
        None if unpack_in_task => run(None),
        None => with_local(&PACKED, |(codes, params)| {
            codes.resize(panels * pbytes, 0);
            params.resize(panels * pparams, 0.0);
            unpack_all(w, codes, params);
            run(Some((codes, params)))
        }),
    }
}
