//! Fused bf16 CUDA kernels for the Qwen3 forward pass (`kernels/qwen3.cu`, compiled to PTX by build.rs):
//! causal + padding softmax computed from row lengths (no bias tensor, in place), q/k RMS norm + rotary +
//! transpose in one pass, the v / context transposes, SwiGLU, and residual add + RMS norm. Each replaces
//! several generic candle passes (candle's strided copies compute 64-bit indices per element and upload
//! their layout each time).

#[cfg(feature = "cuda")]
pub use imp::*;
#[cfg(not(feature = "cuda"))]
pub use stub::*;

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorage, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CustomOp1, CustomOp2, CustomOp3, InplaceOp2, Layout, Shape, Tensor};
    use half::bf16;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/qwen3.ptx"));
    const MODULE: &str = "embedrank_qwen3";
    /// Rows (warps) per block of the row-wise kernels.
    const WARPS: u32 = 8;
    /// Blocks of the grid-stride kernels: enough to fill an H100/H200 (132 SMs) many times over.
    const MAX_BLOCKS: u64 = 132 * 16;

    fn row_launch(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((rows as u32).div_ceil(WARPS), 1, 1),
            block_dim: (32 * WARPS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn elem_launch(n: usize) -> LaunchConfig {
        let blocks = (n as u64).div_ceil(256).clamp(1, MAX_BLOCKS) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
    }

    /// A contiguous layout's element range, or an error naming the op.
    fn range(l: &Layout, op: &str) -> candle_core::Result<std::ops::Range<usize>> {
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(a..b),
            None => candle_core::bail!("{op}: input must be contiguous"),
        }
    }

    /// A 2-d view whose rows are contiguous (a column slice of a matrix, or the whole of it):
    /// (start offset, rows, columns, row stride).
    fn rows_view(l: &Layout, op: &str) -> candle_core::Result<(usize, usize, usize, usize)> {
        let (rows, cols) = l.shape().dims2()?;
        let st = l.stride();
        if st[1] != 1 && cols > 1 {
            candle_core::bail!("{op}: rows must be contiguous, got strides {st:?}");
        }
        let row_stride = if rows > 1 { st[0] } else { cols };
        if row_stride < cols {
            candle_core::bail!("{op}: rows overlap (stride {row_stride} < {cols} columns)");
        }
        Ok((l.start_offset(), rows, cols, row_stride))
    }

    /// Elements `start..` of a storage's bf16 buffer; the view covers what a rows view reads.
    fn check_end(
        start: usize,
        rows: usize,
        cols: usize,
        stride: usize,
        len: usize,
        op: &str,
    ) -> candle_core::Result<()> {
        if rows > 0 && start + (rows - 1) * stride + cols > len {
            candle_core::bail!("{op}: view runs past its buffer");
        }
        Ok(())
    }

    fn no_cpu<T>(op: &str) -> candle_core::Result<T> {
        candle_core::bail!("{op} is a CUDA kernel; the CPU path uses generic ops")
    }

    fn u32_of(n: usize, what: &str) -> candle_core::Result<u32> {
        u32::try_from(n).or_else(|_| candle_core::bail!("{what} {n} is too large for the CUDA kernels"))
    }

    /// In-place masked softmax of scores [b, .., l] (any grouping of rows per batch row).
    struct CausalSoftmax {
        l: usize,
        left: bool,
        scale: f32,
    }

    impl InplaceOp2 for CausalSoftmax {
        fn name(&self) -> &'static str {
            "causal-softmax"
        }

        fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<()> {
            no_cpu(self.name())
        }

        fn cuda_fwd(
            &self,
            s: &mut CudaStorage,
            sl: &Layout,
            len: &CudaStorage,
            ll: &Layout,
        ) -> candle_core::Result<()> {
            let sr = range(sl, self.name())?;
            let lr = range(ll, self.name())?;
            let b = lr.len();
            let rows = sr.len() / self.l.max(1);
            if b == 0 || self.l == 0 || sr.len() != rows * self.l || !rows.is_multiple_of(b) {
                candle_core::bail!(
                    "causal-softmax: {} scores do not split into {b} batch rows of length {}",
                    sr.len(),
                    self.l
                );
            }
            let dev = s.device.clone();
            let f = dev.get_or_load_custom_func("causal_softmax_bf16", MODULE, PTX)?;
            let lengths = len.as_cuda_slice::<u32>()?.slice(lr);
            let mut scores = s.as_cuda_slice_mut::<bf16>()?.slice_mut(sr);
            let (rows_u, per_b) = (u32_of(rows, "score rows")?, u32_of(rows / b, "score rows")?);
            let (l, left) = (self.l as i32, self.left as i32);
            let mut a = f.builder();
            a.arg(&mut scores).arg(&lengths).arg(&rows_u).arg(&per_b).arg(&l).arg(&left).arg(&self.scale);
            // SAFETY: argument types and count match the kernel; every index stays inside `rows * l`.
            unsafe { a.launch(row_launch(rows)) }.w()?;
            Ok(())
        }
    }

    /// Softmax over the last dim of bf16 scores [b, .., l] in place, with the causal mask and each batch
    /// row's padding taken from `lengths` (u32 [b] on the device), after multiplying by `scale`.
    pub fn causal_softmax_(
        scores: &Tensor,
        lengths: &Tensor,
        left_padded: bool,
        scale: f32,
    ) -> candle_core::Result<()> {
        let l = scores.dim(candle_core::D::Minus1)?;
        scores.inplace_op2(lengths, &CausalSoftmax { l, left: left_padded, scale })
    }

    struct RmsNormRope {
        heads: usize,
        l: usize,
        eps: f32,
    }

    impl CustomOp3 for RmsNormRope {
        fn name(&self) -> &'static str {
            "rmsnorm-rope"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            no_cpu(self.name())
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            w: &CudaStorage,
            wl: &Layout,
            cs: &CudaStorage,
            csl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (start, t, cols, stride) = rows_view(xl, self.name())?;
            let heads = self.heads;
            let hd = cols / heads.max(1);
            if !rope_supports(hd)
                || hd * heads != cols
                || wl.shape().elem_count() != hd
                || csl.dims().get(1) != Some(&hd)
            {
                candle_core::bail!("rmsnorm-rope: unsupported head dim {hd} ({cols} columns, {heads} heads)");
            }
            if self.l == 0 || !t.is_multiple_of(self.l) || csl.dims()[0] < self.l {
                candle_core::bail!("rmsnorm-rope: {t} tokens do not split into rows of {}", self.l);
            }
            let dev: &CudaDevice = &x.device;
            let f = dev.get_or_load_custom_func("rmsnorm_rope_bf16", MODULE, PTX)?;
            let xs = x.as_cuda_slice::<bf16>()?;
            check_end(start, t, cols, stride, xs.len(), self.name())?;
            let xs = xs.slice(start..);
            let ws = w.as_cuda_slice::<bf16>()?.slice(range(wl, self.name())?);
            let css = cs.as_cuda_slice::<f32>()?.slice(range(csl, self.name())?);
            // SAFETY: every element is written by the kernel before it is read.
            let out = unsafe { dev.alloc::<bf16>(t * cols)? };
            let rows = u32_of(t * heads, "rows")?;
            let (heads_i, l, hd_i, stride_i) = (heads as i32, self.l as i32, hd as i32, stride as i64);
            let mut a = f.builder();
            a.arg(&xs).arg(&ws).arg(&css).arg(&out).arg(&rows).arg(&heads_i).arg(&l).arg(&hd_i).arg(&stride_i);
            a.arg(&self.eps);
            // SAFETY: argument types and count match the kernel; reads stay in the checked view, writes in `out`.
            unsafe { a.launch(row_launch(t * heads)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((t / self.l, heads, self.l, hd))))
        }
    }

    /// x [b * l, heads * hd] (a q or k projection; rows may be a column slice) -> RMS norm over hd with
    /// `weight`, rotary embedding at positions 0..l of each row (`cos_sin` [positions, hd] f32: cos | sin),
    /// as [b, heads, l, hd].
    pub fn rmsnorm_rope(
        x: &Tensor,
        heads: usize,
        weight: &Tensor,
        cos_sin: &Tensor,
        l: usize,
        eps: f32,
    ) -> candle_core::Result<Tensor> {
        x.apply_op3_no_bwd(weight, cos_sin, &RmsNormRope { heads, l, eps })
    }

    /// Whether [`rmsnorm_rope`] handles this head dim.
    pub fn rope_supports(head_dim: usize) -> bool {
        matches!(head_dim, 64 | 128 | 256)
    }

    struct SwapHeads {
        heads: usize,
        l: usize,
        to_heads: bool,
    }

    impl CustomOp1 for SwapHeads {
        fn name(&self) -> &'static str {
            "swap-heads"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            no_cpu(self.name())
        }

        fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (start, t, cols, stride, shape) = if self.to_heads {
                let (start, t, cols, stride) = rows_view(xl, self.name())?;
                let hd = cols / self.heads.max(1);
                (start, t, cols, stride, Shape::from((t / self.l.max(1), self.heads, self.l, hd)))
            } else {
                let (b, heads, l, hd) = xl.shape().dims4()?;
                let r = range(xl, self.name())?;
                (r.start, b * l, heads * hd, heads * hd, Shape::from((b * l, heads * hd)))
            };
            let hd = cols / self.heads.max(1);
            // 16-byte pieces: every row start must be a multiple of 8 elements.
            if hd * self.heads != cols
                || !hd.is_multiple_of(8)
                || !stride.is_multiple_of(8)
                || !start.is_multiple_of(8)
                || self.l == 0
                || !t.is_multiple_of(self.l)
            {
                candle_core::bail!("swap-heads: unsupported layout ({t} x {cols}, stride {stride}, offset {start})");
            }
            let dev: &CudaDevice = &x.device;
            let f = dev.get_or_load_custom_func("swap_heads_bf16", MODULE, PTX)?;
            let xs = x.as_cuda_slice::<bf16>()?;
            check_end(start, t, cols, stride, xs.len(), self.name())?;
            let xs = xs.slice(start..);
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(t * cols)? };
            u32_of(t * cols / 8, "elements")?;
            let (tu, heads_i, l, hd_i) = (t as u32, self.heads as i32, self.l as i32, hd as i32);
            let (stride_i, to) = (stride as i64, self.to_heads as i32);
            let mut a = f.builder();
            a.arg(&xs).arg(&out).arg(&tu).arg(&heads_i).arg(&l).arg(&hd_i).arg(&stride_i).arg(&to);
            // SAFETY: argument types and count match the kernel; reads stay in the checked view, writes in `out`.
            unsafe { a.launch(elem_launch(t * cols / 8)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
        }
    }

    /// [b * l, heads * hd] (rows may be a column slice) -> [b, heads, l, hd].
    pub fn to_heads(x: &Tensor, heads: usize, l: usize) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(&SwapHeads { heads, l, to_heads: true })
    }

    /// [b, heads, l, hd] -> [b * l, heads * hd].
    pub fn from_heads(x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, heads, l, _) = x.dims4()?;
        x.contiguous()?.apply_op1_no_bwd(&SwapHeads { heads, l, to_heads: false })
    }

    struct SiluMul;

    impl CustomOp2 for SiluMul {
        fn name(&self) -> &'static str {
            "silu-mul"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            no_cpu(self.name())
        }

        fn cuda_fwd(
            &self,
            g: &CudaStorage,
            gl: &Layout,
            u: &CudaStorage,
            ul: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (gs, rows, cols, g_stride) = rows_view(gl, self.name())?;
            let (us, u_rows, u_cols, u_stride) = rows_view(ul, self.name())?;
            // Pairs of bf16 are read as one 4-byte word: even columns, strides and offsets.
            if (rows, cols) != (u_rows, u_cols)
                || [cols, g_stride, u_stride, gs, us].iter().any(|v| !v.is_multiple_of(2))
            {
                candle_core::bail!(
                    "silu-mul: shapes {:?} and {:?} or their strides not supported",
                    gl.shape(),
                    ul.shape()
                );
            }
            let dev: &CudaDevice = &g.device;
            let f = dev.get_or_load_custom_func("silu_mul_bf16", MODULE, PTX)?;
            let (gb, ub) = (g.as_cuda_slice::<bf16>()?, u.as_cuda_slice::<bf16>()?);
            check_end(gs, rows, cols, g_stride, gb.len(), self.name())?;
            check_end(us, rows, cols, u_stride, ub.len(), self.name())?;
            let (gv, uv) = (gb.slice(gs..), ub.slice(us..));
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(rows * cols)? };
            u32_of(rows * cols, "elements")?;
            let (ru, cu, gsi, usi) = (rows as u32, cols as u32, g_stride as i64, u_stride as i64);
            let mut a = f.builder();
            a.arg(&gv).arg(&uv).arg(&out).arg(&ru).arg(&cu).arg(&gsi).arg(&usi);
            // SAFETY: argument types and count match the kernel; reads stay in the checked views.
            unsafe { a.launch(elem_launch(rows * cols / 2)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((rows, cols))))
        }
    }

    /// silu(gate) * up for bf16 [rows, cols] (rows may be column slices, e.g. of a fused gate|up output).
    pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
        gate.apply_op2_no_bwd(up, &SiluMul)
    }

    struct AddRmsNorm {
        eps: f32,
        has_b: bool,
    }

    impl AddRmsNorm {
        fn run(
            &self,
            a: &CudaStorage,
            al: &Layout,
            b: Option<(&CudaStorage, &Layout)>,
            w: &CudaStorage,
            wl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let name = "add-rmsnorm";
            let (rows, n) = al.shape().dims2()?;
            let ar = range(al, name)?;
            let wr = range(wl, name)?;
            let br = match b {
                Some((_, bl)) if bl.shape() != al.shape() => candle_core::bail!("{name}: shapes differ"),
                Some((_, bl)) => range(bl, name)?,
                None => ar.clone(),
            };
            if !n.is_multiple_of(8)
                || wr.len() != n
                || ![ar.start, br.start, wr.start].iter().all(|o| o.is_multiple_of(8))
            {
                candle_core::bail!("{name}: rows of {n} or offsets not supported");
            }
            let dev: &CudaDevice = &a.device;
            let f = dev.get_or_load_custom_func("add_rmsnorm_bf16", MODULE, PTX)?;
            let av = a.as_cuda_slice::<bf16>()?.slice(ar);
            let bv = match b {
                Some((bs, _)) => bs.as_cuda_slice::<bf16>()?.slice(br),
                None => a.as_cuda_slice::<bf16>()?.slice(br),
            };
            let wv = w.as_cuda_slice::<bf16>()?.slice(wr);
            // With b: [2, rows, n] = (a + b, its norm); without: the norm alone.
            let planes = if self.has_b { 2 } else { 1 };
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<bf16>(planes * rows * n)? };
            let (sum, normed) = if self.has_b {
                (out.slice(..rows * n), out.slice(rows * n..))
            } else {
                (out.slice(..), out.slice(..))
            };
            let (ru, ni, hb) = (u32_of(rows, "rows")?, n as i32, self.has_b as i32);
            let mut args = f.builder();
            args.arg(&av).arg(&bv).arg(&wv).arg(&sum).arg(&normed).arg(&ru).arg(&ni).arg(&hb).arg(&self.eps);
            // SAFETY: argument types and count match the kernel; `sum` is written only with has_b, when it is
            // the first plane of `out`.
            unsafe { args.launch(row_launch(rows)) }.w()?;
            let shape = if self.has_b { Shape::from((2, rows, n)) } else { Shape::from((rows, n)) };
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
        }
    }

    impl CustomOp2 for AddRmsNorm {
        fn name(&self) -> &'static str {
            "rmsnorm"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            no_cpu(CustomOp2::name(self))
        }

        fn cuda_fwd(
            &self,
            a: &CudaStorage,
            al: &Layout,
            w: &CudaStorage,
            wl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            self.run(a, al, None, w, wl)
        }
    }

    impl CustomOp3 for AddRmsNorm {
        fn name(&self) -> &'static str {
            "add-rmsnorm"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            no_cpu(CustomOp3::name(self))
        }

        fn cuda_fwd(
            &self,
            a: &CudaStorage,
            al: &Layout,
            b: &CudaStorage,
            bl: &Layout,
            w: &CudaStorage,
            wl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            self.run(a, al, Some((b, bl)), w, wl)
        }
    }

    /// RMS norm of bf16 rows [rows, n] with `weight`.
    pub fn rmsnorm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op2_no_bwd(weight, &AddRmsNorm { eps, has_b: false })
    }

    /// Residual add then RMS norm: (a + b rounded to bf16, its RMS norm with `weight`), both [rows, n].
    pub fn add_rmsnorm(a: &Tensor, b: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<(Tensor, Tensor)> {
        let both = a.contiguous()?.apply_op3_no_bwd(&b.contiguous()?, weight, &AddRmsNorm { eps, has_b: true })?;
        Ok((both.get(0)?, both.get(1)?))
    }
}

/// Without the `cuda` feature nothing takes the fused path; these keep the callers compiling.
#[cfg(not(feature = "cuda"))]
mod stub {
    use candle_core::Tensor;

    fn off<T>() -> candle_core::Result<T> {
        candle_core::bail!("built without the `cuda` feature")
    }

    pub fn causal_softmax_(_: &Tensor, _: &Tensor, _: bool, _: f32) -> candle_core::Result<()> {
        off()
    }

    pub fn rmsnorm_rope(_: &Tensor, _: usize, _: &Tensor, _: &Tensor, _: usize, _: f32) -> candle_core::Result<Tensor> {
        off()
    }

    pub fn rope_supports(_: usize) -> bool {
        false
    }

    pub fn to_heads(_: &Tensor, _: usize, _: usize) -> candle_core::Result<Tensor> {
        off()
    }

    pub fn from_heads(_: &Tensor) -> candle_core::Result<Tensor> {
        off()
    }

    pub fn silu_mul(_: &Tensor, _: &Tensor) -> candle_core::Result<Tensor> {
        off()
    }

    pub fn rmsnorm(_: &Tensor, _: &Tensor, _: f32) -> candle_core::Result<Tensor> {
        off()
    }

    pub fn add_rmsnorm(_: &Tensor, _: &Tensor, _: &Tensor, _: f32) -> candle_core::Result<(Tensor, Tensor)> {
        off()
    }
}
