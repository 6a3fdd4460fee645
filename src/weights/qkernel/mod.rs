//! CPU kernels for MLX affine-quantized linear layers (`w = scale * q + bias` per group of the input
//! dim, codes packed LSB-first into u32 words; see reference/model-formats.md §1).
//!
//! The weights stay packed in memory; kernels unpack codes on the fly. One scalar path is the
//! reference in tests; SIMD paths are picked at run time (`selected_path`) and can be forced with
//! `EMBEDRANK_QKERNEL=scalar|avx2|avx512|neon`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod driver;
#[cfg(target_arch = "x86_64")]
mod int8;
mod neon;
mod scalar;

pub(crate) use driver::{sgemm_nt, with_local};
pub(crate) use scalar::code;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use half::{bf16, f16};

use crate::{Error, Result};

/// Bit widths MLX's affine mode accepts (mlx/ops.cpp `affine_quantize` rejects 7 and >8).
pub const SUPPORTED_BITS: [u32; 6] = [2, 3, 4, 5, 6, 8];
/// Group sizes MLX's affine mode accepts.
pub const SUPPORTED_GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// Per-group scales or biases in the checkpoint's own float type. MLX checkpoints store them as
/// bf16/f16 next to the codes; widening them to f32 in memory would add a quarter to a 4-bit model's
/// footprint, so kernels convert one value per group as they go.
#[derive(Debug, Clone)]
pub enum GroupParams {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl GroupParams {
    pub fn len(&self) -> usize {
        match self {
            GroupParams::F32(v) => v.len(),
            GroupParams::F16(v) => v.len(),
            GroupParams::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per value (4 or 2).
    pub fn elem_bytes(&self) -> usize {
        match self {
            GroupParams::F32(_) => 4,
            _ => 2,
        }
    }

    /// Name of the float type: "f32", "f16" or "bf16".
    pub fn dtype_name(&self) -> &'static str {
        match self {
            GroupParams::F32(_) => "f32",
            GroupParams::F16(_) => "f16",
            GroupParams::Bf16(_) => "bf16",
        }
    }

    /// All values as f32 (borrowed when already f32).
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            GroupParams::F32(v) => Cow::Borrowed(v),
            GroupParams::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            GroupParams::Bf16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
        }
    }

    fn slice(&self, r: std::ops::Range<usize>) -> ParamRow<'_> {
        match self {
            GroupParams::F32(v) => ParamRow::F32(&v[r]),
            GroupParams::F16(v) => ParamRow::F16(&v[r]),
            GroupParams::Bf16(v) => ParamRow::Bf16(&v[r]),
        }
    }

    /// The values of `parts` one after another; None when their float types differ.
    fn concat<'a>(parts: impl Iterator<Item = &'a GroupParams> + Clone) -> Option<GroupParams> {
        fn all<'a, T: Copy + 'a>(
            parts: impl Iterator<Item = &'a GroupParams>,
            pick: impl Fn(&'a GroupParams) -> Option<&'a Vec<T>>,
        ) -> Option<Vec<T>> {
            let mut out = Vec::new();
            for p in parts {
                out.extend_from_slice(pick(p)?);
            }
            Some(out)
        }
        match parts.clone().next()? {
            GroupParams::F32(_) => {
                all(parts, |p| if let GroupParams::F32(v) = p { Some(v) } else { None }).map(GroupParams::F32)
            }
            GroupParams::F16(_) => {
                all(parts, |p| if let GroupParams::F16(v) = p { Some(v) } else { None }).map(GroupParams::F16)
            }
            GroupParams::Bf16(_) => {
                all(parts, |p| if let GroupParams::Bf16(v) = p { Some(v) } else { None }).map(GroupParams::Bf16)
            }
        }
    }

    fn first_non_finite(&self) -> Option<usize> {
        match self {
            GroupParams::F32(v) => v.iter().position(|x| !x.is_finite()),
            GroupParams::F16(v) => v.iter().position(|x| !x.is_finite()),
            GroupParams::Bf16(v) => v.iter().position(|x| !x.is_finite()),
        }
    }
}

/// One weight row's scales or biases, read as f32 one group at a time.
#[derive(Clone, Copy)]
pub(crate) enum ParamRow<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl ParamRow<'_> {
    #[inline(always)]
    pub(crate) fn get(&self, g: usize) -> f32 {
        match self {
            ParamRow::F32(v) => v[g],
            ParamRow::F16(v) => v[g].to_f32(),
            ParamRow::Bf16(v) => v[g].to_f32(),
        }
    }
}

/// One MLX affine-quantized weight matrix `[n, k]` (out features × in features), kept packed.
#[derive(Debug, Clone)]
pub struct AffineWeight {
    bits: u32,
    group_size: usize,
    n: usize,
    k: usize,
    /// `[n, k * bits / 32]`, each row an LSB-first bit stream of codes
    packed: Vec<u32>,
    /// `[n, k / group_size]`
    scales: GroupParams,
    /// `[n, k / group_size]`
    biases: GroupParams,
    /// Split outlier input channels off the integer kernel; see `set_split_outliers`.
    split_outliers: bool,
    /// Keep f32 activations (never the integer kernel) for this layer; see `set_float_activations`.
    float_activations: bool,
    /// The integer kernel's unpacked copy, made on its first call where the budget allows
    /// (`int8::panels`); None: unpacked per call.
    panels: OnceLock<Option<std::sync::Arc<KernelPanels>>>,
}

/// A weight unpacked into the integer kernel's layout (codes per panel of output columns, then the
/// panels' scales and biases as f32).
#[derive(Debug)]
pub(crate) struct KernelPanels {
    pub codes: Vec<u8>,
    pub params: Vec<f32>,
}

/// Most bytes of unpacked weights kept at once (`KernelPanels`), over all weights of the process:
/// enough for every layer of small encoders (all-MiniLM-L6-v2 `--dtype int8`: 13 MB), where
/// unpacking on every call was about a third of a single query's time; larger models unpack the
/// rest per call, which their long batches amortize.
const PANEL_CACHE_BYTES: usize = 256 << 20;
static PANEL_CACHE_USED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl KernelPanels {
    /// Zeroed buffers of these sizes, when the budget has room for them (returned on drop).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn reserve(codes: usize, params: usize) -> Option<KernelPanels> {
        let bytes = codes + 4 * params;
        if PANEL_CACHE_USED.fetch_add(bytes, Ordering::Relaxed) + bytes > PANEL_CACHE_BYTES {
            PANEL_CACHE_USED.fetch_sub(bytes, Ordering::Relaxed);
            return None;
        }
        Some(KernelPanels { codes: vec![0; codes], params: vec![0.0; params] })
    }
}

impl Drop for KernelPanels {
    fn drop(&mut self) {
        PANEL_CACHE_USED.fetch_sub(self.codes.len() + 4 * self.params.len(), Ordering::Relaxed);
    }
}

impl AffineWeight {
    /// Check the layout (bits, group size, and that every buffer has exactly the size the shape
    /// implies) so a malformed checkpoint is an error here rather than a panic in a kernel.
    pub fn new(
        bits: u32,
        group_size: usize,
        n: usize,
        k: usize,
        packed: Vec<u32>,
        scales: Vec<f32>,
        biases: Vec<f32>,
    ) -> Result<Self> {
        Self::with_params(bits, group_size, n, k, packed, GroupParams::F32(scales), GroupParams::F32(biases))
    }

    /// `new` with scales and biases kept in their stored float type.
    pub fn with_params(
        bits: u32,
        group_size: usize,
        n: usize,
        k: usize,
        packed: Vec<u32>,
        scales: GroupParams,
        biases: GroupParams,
    ) -> Result<Self> {
        check_params(bits, group_size, n, k)?;
        let words = n * (k * bits as usize / 32);
        let groups = n * (k / group_size);
        let bad = |what: &str, have: usize, want: usize| {
            Err(Error::Quantization(format!(
                "{what} has {have} elements, expected {want} for a [{n}, {k}] weight with {bits} bits, group size {group_size}"
            )))
        };
        if packed.len() != words {
            return bad("packed weight", packed.len(), words);
        }
        if scales.len() != groups {
            return bad("scales", scales.len(), groups);
        }
        if biases.len() != groups {
            return bad("biases", biases.len(), groups);
        }
        for (what, p) in [("scales", &scales), ("biases", &biases)] {
            if let Some(i) = p.first_non_finite() {
                return Err(Error::Quantization(format!("{what} contain a non-finite value (element {i})")));
            }
        }
        Ok(AffineWeight {
            bits,
            group_size,
            n,
            k,
            packed,
            scales,
            biases,
            split_outliers: false,
            float_activations: false,
            panels: OnceLock::new(),
        })
    }

    /// `out[m, n] = x[m, k] · Wᵀ` (row-major) on the selected kernel path.
    ///
    /// # Panics
    /// If `x.len() != m * k` or `out.len() != m * n` (a caller bug, not a property of user input).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_on(selected_path(), x, m, out, None, false)
    }

    /// `matmul` plus `bias` (length n) added to every output row in the same pass.
    ///
    /// # Panics
    /// As `matmul`, and if `bias.len() != n`.
    pub fn matmul_bias(&self, x: &[f32], m: usize, out: &mut [f32], bias: Option<&[f32]>) {
        self.matmul_on(selected_path(), x, m, out, bias, false)
    }

    /// `out[m, n] += x[m, k] · Wᵀ`: adds onto what `out` holds (say a bias and a residual written
    /// first), in the pass that computes the product.
    ///
    /// # Panics
    /// As `matmul`.
    pub fn matmul_acc(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_on(selected_path(), x, m, out, None, true)
    }

    /// Whether a call of `m` rows runs on the integer kernel (the selected path's `int` strategy).
    #[cfg(target_arch = "x86_64")]
    fn int_kernel_applies(&self, m: usize) -> bool {
        driver::Ops::for_path(selected_path()).is_some_and(|ops| driver::int_applies(self, ops, m))
    }

    /// `out[m, n] = act(x · Wᵀ + bias + residual)`: on the integer kernel in one pass (the
    /// additions and the activation run on each block of output while it is in cache), elsewhere
    /// as separate passes.
    pub fn matmul_finish(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        act: Option<crate::weights::packed_f32::Epilogue>,
    ) {
        let out = &mut out[..m * self.n];
        #[cfg(target_arch = "x86_64")]
        if self.int_kernel_applies(m) {
            self.check_sizes(x, m, out, bias);
            return int8::matmul(self, x, m, out, int8::Finish { bias, residual, act, ..Default::default() });
        }
        crate::weights::dense_cpu::separate_passes(out, self.n, bias, residual, act, |out| self.matmul_acc(x, m, out));
    }

    /// `matmul` on a chosen path; an error when this CPU cannot run it.
    pub fn matmul_with(&self, path: KernelPath, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        if !path.is_available() {
            return Err(Error::Quantization(format!("kernel path `{}` is not available on this CPU", path.name())));
        }
        self.matmul_on(path, x, m, out, None, false);
        Ok(())
    }

    /// `matmul_with` forcing one of the two strategies (for benchmarks that pick the crossover).
    #[doc(hidden)]
    pub fn matmul_strategy(
        &self,
        path: KernelPath,
        strategy: Strategy,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let Some(ops) = driver::Ops::for_path(path) else {
            return self.matmul_with(path, x, m, out);
        };
        self.check_sizes(x, m, out, None);
        match strategy {
            Strategy::Auto => driver::matmul(self, ops, x, m, out, None, false),
            Strategy::Gemv => {
                if !driver::gemv(self, ops, x, m, out, None, false) {
                    driver::fused(self, ops, x, m, out, None, false)
                }
            }
            Strategy::Fused => driver::fused(self, ops, x, m, out, None, false),
            Strategy::Tiled => driver::tiled(self, ops, x, m, out, None, false),
            Strategy::Int => {
                if !driver::int(self, ops, x, m, out, None, false) {
                    driver::matmul(self, ops, x, m, out, None, false)
                }
            }
        }
        Ok(())
    }

    fn check_sizes(&self, x: &[f32], m: usize, out: &[f32], bias: Option<&[f32]>) {
        assert_eq!(x.len(), m * self.k, "qkernel matmul: x has {} elements, expected {m}×{}", x.len(), self.k);
        assert_eq!(out.len(), m * self.n, "qkernel matmul: out has {} elements, expected {m}×{}", out.len(), self.n);
        if let Some(b) = bias {
            assert_eq!(b.len(), self.n, "qkernel matmul: bias has {} elements, expected {}", b.len(), self.n);
        }
    }

    fn matmul_on(&self, path: KernelPath, x: &[f32], m: usize, out: &mut [f32], bias: Option<&[f32]>, acc: bool) {
        self.check_sizes(x, m, out, bias);
        if m == 0 || self.n == 0 {
            return;
        }
        if let Some(ops) = driver::Ops::for_path(path) {
            return driver::matmul(self, ops, x, m, out, bias, acc);
        }
        let mut y = vec![0f32; m * self.n];
        scalar::matmul(self, x, m, &mut y);
        for (orow, yrow) in out.chunks_exact_mut(self.n).zip(y.chunks_exact(self.n)) {
            for (j, (o, v)) in orow.iter_mut().zip(yrow).enumerate() {
                let v = v + bias.map_or(0.0, |b| b[j]);
                *o = if acc { *o + v } else { v };
            }
        }
    }

    /// `out = second(act(first(x) + bias₁)) + bias₂ + residual` (a feed-forward block) for CPU f32
    /// buffers; `mid` is grown to `[m, first.n()]` for the intermediate activations. On the
    /// integer kernel the first layer quantizes its output for the second as it finishes each
    /// block (`int8::mlp`); elsewhere two `matmul_finish` calls.
    #[allow(clippy::too_many_arguments)]
    pub fn mlp_finish(
        (first, second): (&AffineWeight, &AffineWeight),
        x: &[f32],
        m: usize,
        mid: &mut Vec<f32>,
        out: &mut [f32],
        (bias1, bias2): (Option<&[f32]>, Option<&[f32]>),
        residual: Option<&[f32]>,
        act: Option<crate::weights::packed_f32::Epilogue>,
    ) {
        mid.resize(m * first.n, 0.0);
        #[cfg(target_arch = "x86_64")]
        if first.int_kernel_applies(m) && second.int_kernel_applies(m) {
            first.check_sizes(x, m, mid, bias1);
            second.check_sizes(mid, m, out, bias2);
            let fin1 = int8::Finish { bias: bias1, act, ..Default::default() };
            let fin2 = int8::Finish { bias: bias2, residual, ..Default::default() };
            if int8::mlp((first, second), x, m, mid, out, (fin1, fin2)) {
                return;
            }
        }
        first.matmul_finish(x, m, mid, bias1, None, act);
        second.matmul_finish(mid, m, out, bias2, residual, None);
    }

    /// Rows `rows` of the weight as f32, `[rows.len(), k]` row-major.
    ///
    /// # Panics
    /// If `rows.end > n` or `out.len() != rows.len() * k`.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        assert!(rows.start <= rows.end && rows.end <= self.n, "qkernel: rows {rows:?} out of 0..{}", self.n);
        assert_eq!(out.len(), rows.len() * self.k, "qkernel dequantize_rows: wrong output size");
        let dequant = driver::Ops::for_path(selected_path())
            .map_or(scalar::dequantize_groups as driver::DequantFn, |o| o.dequant);
        let groups = self.k / self.group_size;
        for (i, r) in rows.enumerate() {
            dequant(self, r, 0..groups, &mut out[i * self.k..(i + 1) * self.k]);
        }
    }

    /// On the integer kernel, multiply this layer's outlier input channels in f32 (LLM.int8()
    /// decomposition, `int8::matmul`): for layers whose input has a few huge channels that would
    /// otherwise set whole groups' scales (a normalized hidden state). Batched, it takes the
    /// MLX-made 4-bit MiniLM from min cosine 0.99941 to 0.99976 against MLX (docs/models.md).
    /// Models declare such layers with `WeightStore::linear_outlier_split`.
    /// The weights of `parts` stacked along the output dimension (one GEMM instead of several over
    /// the same input, e.g. attention's q/k/v); None when their layouts or settings differ.
    pub fn concat_rows(parts: &[&AffineWeight]) -> Option<AffineWeight> {
        let first = parts.first()?;
        let same = |w: &&AffineWeight| {
            (w.bits, w.group_size, w.k, w.split_outliers, w.float_activations)
                == (first.bits, first.group_size, first.k, first.split_outliers, first.float_activations)
        };
        if !parts.iter().all(same) {
            return None;
        }
        Some(AffineWeight {
            bits: first.bits,
            group_size: first.group_size,
            n: parts.iter().map(|w| w.n).sum(),
            k: first.k,
            packed: parts.iter().flat_map(|w| w.packed.iter().copied()).collect(),
            scales: GroupParams::concat(parts.iter().map(|w| &w.scales))?,
            biases: GroupParams::concat(parts.iter().map(|w| &w.biases))?,
            split_outliers: first.split_outliers,
            float_activations: first.float_activations,
            panels: OnceLock::new(),
        })
    }

    pub fn set_split_outliers(&mut self, on: bool) {
        self.split_outliers = on;
    }

    pub fn split_outliers(&self) -> bool {
        self.split_outliers
    }

    /// Keep this layer's activations in f32 (no integer kernel) even where `int_activations()` is
    /// on: attention's q/k/v projections, whose errors pass the softmax (on Qwen3 after q/k RMS norms
    /// and rotary). Integer q/k/v, even with the outlier split, take `--dtype int8` MiniLM from min
    /// cosine 0.99928 to 0.99894 and move the tiny mlx-lm Qwen3 reranker's scores by 9.4e-3 against
    /// 3.7e-3 (docs/models.md). Models declare such layers with `WeightStore::linear_float_activations`.
    pub fn set_float_activations(&mut self, on: bool) {
        self.float_activations = on;
    }

    pub fn float_activations(&self) -> bool {
        self.float_activations
    }

    pub(crate) fn panels_cell(&self) -> &OnceLock<Option<std::sync::Arc<KernelPanels>>> {
        &self.panels
    }

    pub fn n(&self) -> usize {
        self.n
    }
    pub fn k(&self) -> usize {
        self.k
    }
    pub fn bits(&self) -> u32 {
        self.bits
    }
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    pub fn packed(&self) -> &[u32] {
        &self.packed
    }
    /// Scales `[n, k / group_size]` as f32 (converted when stored as 16-bit).
    pub fn scales(&self) -> Cow<'_, [f32]> {
        self.scales.to_f32()
    }
    /// Biases `[n, k / group_size]` as f32 (converted when stored as 16-bit).
    pub fn biases(&self) -> Cow<'_, [f32]> {
        self.biases.to_f32()
    }
    /// Scales as stored.
    pub fn scale_params(&self) -> &GroupParams {
        &self.scales
    }
    /// Biases as stored.
    pub fn bias_params(&self) -> &GroupParams {
        &self.biases
    }
    /// Bytes held in memory (codes + scales + biases).
    pub fn memory_bytes(&self) -> usize {
        4 * self.packed.len()
            + self.scales.len() * self.scales.elem_bytes()
            + self.biases.len() * self.biases.elem_bytes()
    }

    fn words_per_row(&self) -> usize {
        self.k * self.bits as usize / 32
    }

    /// Packed words, scales and biases of row `r`.
    pub(crate) fn row_parts(&self, r: usize) -> (&[u32], ParamRow<'_>, ParamRow<'_>) {
        let (wpr, g) = (self.words_per_row(), self.k / self.group_size);
        (
            &self.packed[r * wpr..(r + 1) * wpr],
            self.scales.slice(r * g..(r + 1) * g),
            self.biases.slice(r * g..(r + 1) * g),
        )
    }
}

fn check_params(bits: u32, group_size: usize, n: usize, k: usize) -> Result<()> {
    if !SUPPORTED_BITS.contains(&bits) {
        return Err(Error::Quantization(format!("{bits} bits is not supported (supported: 2, 3, 4, 5, 6, 8)")));
    }
    if !SUPPORTED_GROUP_SIZES.contains(&group_size) {
        return Err(Error::Quantization(format!("group size {group_size} is not supported (supported: 32, 64, 128)")));
    }
    if k == 0 || !k.is_multiple_of(group_size) {
        return Err(Error::Quantization(format!(
            "input dim {k} is not a positive multiple of group size {group_size}"
        )));
    }
    if n.checked_mul(k).is_none_or(|nk| nk > isize::MAX as usize / 4) {
        return Err(Error::Quantization(format!("weight shape [{n}, {k}] is too large")));
    }
    Ok(())
}

/// MLX's affine quantization of `w` `[n, k]` (mlx/ops.cpp `affine_quantize`): per group of
/// `group_size` inputs, `scale = (max - min) / (2^bits - 1)` with its sign chosen so the edge with the
/// larger magnitude is represented exactly, `bias = edge`, codes `round((w - bias) / scale)` clipped to
/// `[0, 2^bits - 1]`, rounding half to even as MLX does.
pub fn quantize(w: &[f32], n: usize, k: usize, bits: u32, group_size: usize) -> Result<AffineWeight> {
    check_params(bits, group_size, n, k)?;
    if w.len() != n * k {
        return Err(Error::Quantization(format!("weight has {} elements, expected {n}×{k}", w.len())));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::Quantization(format!("weight element {i} is not finite; cannot quantize")));
    }
    let groups = k / group_size;
    let wpr = k * bits as usize / 32;
    let mut packed = vec![0u32; n * wpr];
    let mut scales = vec![0f32; n * groups];
    let mut biases = vec![0f32; n * groups];
    let n_bins = ((1u32 << bits) - 1) as f32;
    for r in 0..n {
        let row_words = &mut packed[r * wpr..(r + 1) * wpr];
        for g in 0..groups {
            let vals = &w[r * k + g * group_size..r * k + (g + 1) * group_size];
            let (scale, bias) = affine_group_params(vals, bits);
            scales[r * groups + g] = scale;
            biases[r * groups + g] = bias;
            for (i, &v) in vals.iter().enumerate() {
                put_code(row_words, g * group_size + i, bits, affine_code(v, scale, bias, n_bins));
            }
        }
    }
    AffineWeight::new(bits, group_size, n, k, packed, scales, biases)
}

/// MLX's `affine_quantize` scale and bias of one group: the range over `2^bits - 1` steps, signed
/// so that the edge of larger magnitude is exactly representable, and a zero bias when that edge
/// rounds to code 0.
pub fn affine_group_params(vals: &[f32], bits: u32) -> (f32, f32) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let mask = lo.abs() > hi.abs();
    let mut scale = ((hi - lo) / n_bins).max(1e-7);
    scale = if mask { scale } else { -scale };
    let edge = if mask { lo } else { hi };
    let q0 = (edge / scale).round_ties_even();
    if q0 != 0.0 {
        scale = edge / q0;
    }
    let bias = if q0 == 0.0 { 0.0 } else { edge };
    (scale, bias)
}

/// The code of `v` on the grid `scale · q + bias`, q in 0..=n_bins (round half to even, as MLX).
#[inline]
pub fn affine_code(v: f32, scale: f32, bias: f32, n_bins: f32) -> u32 {
    ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u32
}

/// Write code `q` of column `col` into a row's packed words (little-endian bit order, codes may
/// straddle two words at 3, 5 and 6 bits). The words must start zeroed.
#[inline]
pub fn put_code(row_words: &mut [u32], col: usize, bits: u32, q: u32) {
    let off = col * bits as usize;
    let (wi, sh) = (off / 32, (off % 32) as u32);
    row_words[wi] |= q << sh;
    if sh + bits > 32 {
        row_words[wi + 1] |= q >> (32 - sh);
    }
}

/// How a SIMD path multiplies: codes dequantized in registers straight into the dot products
/// (`Gemv`, one to four activation rows; paths without that kernel, or other bit widths than 4 and
/// 8, fall back to `Fused`), weight panels dequantized per k-chunk into cache and multiplied by a
/// register-blocked dot-product kernel (`Fused`), or dequantized tiles fed to the `gemm` crate's f32
/// kernel (`Tiled`), or activations quantized to 8 bits per group of 32 and multiplied with the codes
/// by integer dot products (`Int`, AVX-512 VNNI; elsewhere, or when switched off, as `Auto`); `Auto`
/// picks by row count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Auto,
    Gemv,
    Fused,
    Tiled,
    Int,
}

/// A kernel implementation. `Scalar` runs everywhere; the others need the CPU feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    Scalar,
    /// x86-64 with AVX2 + FMA
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL (+ VNNI)
    Avx512,
    /// AArch64 (Apple Silicon) NEON
    Neon,
}

impl KernelPath {
    pub const ALL: [KernelPath; 4] = [KernelPath::Scalar, KernelPath::Avx2, KernelPath::Avx512, KernelPath::Neon];

    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
        }
    }

    pub fn parse(s: &str) -> Option<KernelPath> {
        KernelPath::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the path (runtime feature detection).
    pub fn is_available(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest path this CPU has.
    pub fn detect() -> KernelPath {
        [KernelPath::Avx512, KernelPath::Avx2, KernelPath::Neon]
            .into_iter()
            .find(|p| p.is_available())
            .unwrap_or(KernelPath::Scalar)
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU has the integer kernel (x86-64 with AVX-512 VNNI), which the `Avx512` path
/// uses when `int_activations()` is on.
pub fn int_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return int8::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Process-wide override of `int_activations` (0 = none, 1 = off, 2 = on).
static INT_FORCED: AtomicU8 = AtomicU8::new(0);

/// Make `int_activations` return `on` (or, with `None`, go back to the environment), so a test or
/// benchmark can compare both in one process.
#[doc(hidden)]
pub fn force_int_activations(on: Option<bool>) {
    INT_FORCED.store(on.map_or(0, |on| 1 + on as u8), Ordering::Relaxed);
}

/// Whether quantized layers may quantize their activations to 8 bits and use integer dot products
/// (on CPUs with AVX-512 VNNI, from `driver::INT_MIN_M` rows): on unless `EMBEDRANK_QKERNEL_INT=0`
/// (read once per process) or `force_int_activations(Some(false))`. Off, every path computes with
/// f32 activations exactly as MLX does.
pub fn int_activations() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    match INT_FORCED.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => *ENV.get_or_init(|| std::env::var("EMBEDRANK_QKERNEL_INT").map_or(true, |v| v.trim() != "0")),
    }
}

/// Process-wide override set by `force_path` (0 = none, else 1 + index in `KernelPath::ALL`).
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Make `selected_path` return `path` (or, with `None`, go back to the environment/detection),
/// so a test or benchmark can run a whole model on each path in one process. An error when this
/// CPU cannot run the path.
#[doc(hidden)]
pub fn force_path(path: Option<KernelPath>) -> Result<()> {
    let code = match path {
        Some(p) if !p.is_available() => {
            return Err(Error::Quantization(format!("kernel path `{p}` is not available on this CPU")))
        }
        Some(p) => 1 + KernelPath::ALL.iter().position(|&q| q == p).unwrap_or(0) as u8,
        None => 0,
    };
    FORCED.store(code, Ordering::Relaxed);
    Ok(())
}

/// The path `AffineWeight::matmul` uses: `EMBEDRANK_QKERNEL` when set to a path this CPU has,
/// otherwise the fastest detected one (decided once per process), unless `force_path` overrides it.
pub fn selected_path() -> KernelPath {
    static PATH: OnceLock<KernelPath> = OnceLock::new();
    if let Some(&p) = KernelPath::ALL.get((FORCED.load(Ordering::Relaxed) as usize).wrapping_sub(1)) {
        return p;
    }
    *PATH.get_or_init(|| {
        let detected = KernelPath::detect();
        let Ok(want) = std::env::var("EMBEDRANK_QKERNEL") else { return detected };
        match KernelPath::parse(&want) {
            Some(p) if p.is_available() => p,
            Some(p) => {
                tracing::warn!("EMBEDRANK_QKERNEL={want}: path `{p}` is not available on this CPU; using `{detected}`");
                detected
            }
            None => {
                tracing::warn!("EMBEDRANK_QKERNEL={want} is not one of scalar, avx2, avx512, neon; using `{detected}`");
                detected
            }
        }
    })
}
