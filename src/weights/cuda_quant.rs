//! MLX affine-quantized weights kept packed in GPU memory (CUDA): uploaded once at load, expanded
//! per call by a device kernel (kernels/quant.cu) into a compute-dtype scratch matrix that candle's
//! matmul (cuBLAS) then multiplies. For the batch sizes embedding runs at, the expansion costs a small
//! fraction of the GEMM it feeds (it writes the layer once; the GEMM reads it once per row tile).
//!
//! The same op has a CPU implementation mirroring the kernel thread by thread, so the layout and
//! indexing logic is tested on machines without a GPU; CPU models use `qkernel` instead.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor};

use super::qkernel::AffineWeight;
use super::WeightStore;
use crate::{Error, Result};

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/quant.ptx"));

/// One MLX affine-quantized matrix `[n, k]` whose buffers live on a device, as tensors:
/// packed codes `u32 [n * k * bits / 32]`, scales and biases `f32 [n * k / group_size]`.
#[derive(Debug, Clone)]
pub struct DeviceAffine {
    bits: u32,
    group_size: usize,
    n: usize,
    k: usize,
    packed: Tensor,
    scales: Tensor,
    biases: Tensor,
}

impl DeviceAffine {
    /// Upload layer `prefix`, whose loader-checked CPU form is `q` (bits, group size and shape come
    /// from it). The buffers are read again from the file through the raw entries, so this copy does
    /// not depend on how the CPU kernels lay out their own.
    pub fn load(ws: &WeightStore, prefix: &str, q: &AffineWeight) -> Result<Self> {
        let entry = |suffix: &str| {
            let name = format!("{prefix}.{suffix}");
            ws.raw_entry(&name).ok_or_else(|| Error::weights(ws.path(), format!("tensor `{name}` not found")))
        };
        let (weight, scales, biases) = (entry("weight")?, entry("scales")?, entry("biases")?);
        let (packed, scales, biases) = (weight.read_u32()?, scales.read_f32()?, biases.read_f32()?);
        Self::from_parts(q.bits(), q.group_size(), q.n(), q.k(), packed, scales, biases, &ws.device)
            .map_err(|e| Error::weights(&weight.file, format!("quantized layer `{prefix}`: {e}")))
    }

    /// Move host buffers (already in MLX's layout) to `device`, checking their sizes.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        bits: u32,
        group_size: usize,
        n: usize,
        k: usize,
        packed: Vec<u32>,
        scales: Vec<f32>,
        biases: Vec<f32>,
        device: &Device,
    ) -> Result<Self> {
        let bad = |m: String| Err(Error::Quantization(m));
        if !super::qkernel::SUPPORTED_BITS.contains(&bits)
            || !super::qkernel::SUPPORTED_GROUP_SIZES.contains(&group_size)
        {
            return bad(format!("{bits} bits, group size {group_size} is not an MLX affine layout"));
        }
        // The kernel indexes with u32 rows/columns and writes 8 outputs per thread (k % 8 == 0 follows).
        if k == 0 || !k.is_multiple_of(group_size) || n > u32::MAX as usize || k > u32::MAX as usize / 8 {
            return bad(format!("weight shape [{n}, {k}] does not fit group size {group_size}"));
        }
        let (words, groups) = (n * k * bits as usize / 32, n * (k / group_size));
        if packed.len() != words || scales.len() != groups || biases.len() != groups {
            return bad(format!(
                "buffers hold {} words / {} scales / {} biases, expected {words} / {groups} / {groups}",
                packed.len(),
                scales.len(),
                biases.len()
            ));
        }
        let t = |v: Tensor| v.to_device(device);
        Ok(DeviceAffine {
            bits,
            group_size,
            n,
            k,
            packed: t(Tensor::from_vec(packed, words, &Device::Cpu)?)?,
            scales: t(Tensor::from_vec(scales, groups, &Device::Cpu)?)?,
            biases: t(Tensor::from_vec(biases, groups, &Device::Cpu)?)?,
        })
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
    pub fn device(&self) -> &Device {
        self.packed.device()
    }
    /// Device bytes held (codes + scales + biases).
    pub fn memory_bytes(&self) -> usize {
        4 * (self.packed.elem_count() + self.scales.elem_count() + self.biases.elem_count())
    }

    /// The whole matrix `[n, k]` in `dtype` (f32, f16 or bf16) on the weight's device.
    pub fn dequantize(&self, dtype: DType) -> candle_core::Result<Tensor> {
        self.run(None, dtype)
    }

    /// Rows `ids` as `[ids.len(), k]` in `dtype`; the caller checks `ids < n` (a bad id gives a zero row).
    pub fn gather(&self, ids: &[u32], dtype: DType) -> candle_core::Result<Tensor> {
        self.run(Some(ids.to_vec()), dtype)
    }

    fn run(&self, ids: Option<Vec<u32>>, dtype: DType) -> candle_core::Result<Tensor> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            candle_core::bail!("quantized weights expand to f32, f16 or bf16, not {dtype:?}");
        }
        let op = Dequant { ids, dtype, n: self.n, k: self.k, bits: self.bits, group_size: self.group_size };
        self.packed.apply_op3_no_bwd(&self.scales, &self.biases, &op)
    }
}

/// The expansion op over (packed, scales, biases); `ids` picks rows (embedding lookups), `None` all.
struct Dequant {
    ids: Option<Vec<u32>>,
    dtype: DType,
    n: usize,
    k: usize,
    bits: u32,
    group_size: usize,
}

impl Dequant {
    fn rows(&self) -> usize {
        self.ids.as_ref().map_or(self.n, Vec::len)
    }

    fn out_shape(&self) -> Shape {
        Shape::from((self.rows(), self.k))
    }
}

/// Inputs are the tensors `DeviceAffine` made: contiguous from element 0. Anything else is a bug.
fn check_layout(l: &Layout, what: &str) -> candle_core::Result<()> {
    if !l.is_contiguous() || l.start_offset() != 0 {
        candle_core::bail!("quantized {what}: expected a contiguous buffer from offset 0");
    }
    Ok(())
}

/// Code `j` of a packed row, read as the CPU kernels read it (the device kernel's `code_at` mirrors it).
use super::qkernel::code as code_at;

impl CustomOp3 for Dequant {
    fn name(&self) -> &'static str {
        "affine-dequantize"
    }

    /// The kernel's computation on the host, 8 outputs per step as one GPU thread does them.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        check_layout(l1, "codes")?;
        check_layout(l2, "scales")?;
        check_layout(l3, "biases")?;
        let (CpuStorage::U32(packed), CpuStorage::F32(scales), CpuStorage::F32(biases)) = (s1, s2, s3) else {
            candle_core::bail!("quantized weight buffers must be u32 codes and f32 scales/biases");
        };
        let (k, gs) = (self.k, self.group_size);
        let (wpr, groups) = (k * self.bits as usize / 32, k / gs);
        let mut out = vec![0f32; self.rows() * k];
        for (r, dst) in out.chunks_exact_mut(k).enumerate() {
            let src = self.ids.as_ref().map_or(r, |ids| ids[r] as usize);
            if src >= self.n {
                continue;
            }
            let row = &packed[src * wpr..(src + 1) * wpr];
            for (c8, o) in dst.chunks_exact_mut(8).enumerate() {
                let c = c8 * 8;
                let (s, b) = (scales[src * groups + c / gs], biases[src * groups + c / gs]);
                for (i, v) in o.iter_mut().enumerate() {
                    *v = (code_at(row, c + i, self.bits) as f32).mul_add(s, b);
                }
            }
        }
        let storage = match self.dtype {
            DType::F32 => CpuStorage::F32(out),
            DType::F16 => CpuStorage::F16(out.iter().map(|&v| half::f16::from_f32(v)).collect()),
            DType::BF16 => CpuStorage::BF16(out.iter().map(|&v| half::bf16::from_f32(v)).collect()),
            d => candle_core::bail!("quantized weights expand to f32, f16 or bf16, not {d:?}"),
        };
        Ok((storage, self.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaDType, WrapErr};
        use candle_core::CudaStorage;
        use half::{bf16, f16};

        check_layout(l1, "codes")?;
        check_layout(l2, "scales")?;
        check_layout(l3, "biases")?;
        let dev = &s1.device;
        let (packed, scales, biases) =
            (s1.as_cuda_slice::<u32>()?, s2.as_cuda_slice::<f32>()?, s3.as_cuda_slice::<f32>()?);
        let rows = self.rows();
        let elems = rows * self.k;
        let ids = match &self.ids {
            Some(ids) if !ids.is_empty() => Some(dev.clone_htod(ids.as_slice())?),
            _ => None,
        };
        let (rows32, n32, k32, bits32, gs32) =
            (rows as u32, self.n as u32, self.k as u32, self.bits, self.group_size as u32);
        // One thread per 8 outputs (see the kernel); 256 threads per block.
        let threads = elems / 8;
        let cfg = LaunchConfig {
            grid_dim: (threads.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };

        /// codes, scales, biases, row ids
        type Buffers<'a> = (&'a CudaSlice<u32>, &'a CudaSlice<f32>, &'a CudaSlice<f32>, Option<&'a CudaSlice<u32>>);
        fn launch<T: DeviceRepr + CudaDType>(
            dev: &candle_core::CudaDevice,
            name: &str,
            args: Buffers<'_>,
            dims: [u32; 5],
            elems: usize,
            cfg: LaunchConfig,
        ) -> candle_core::Result<CudaStorage> {
            // SAFETY: every element is written by the kernel before the tensor is read.
            let out = unsafe { dev.alloc::<T>(elems)? };
            if elems == 0 {
                return Ok(T::wrap_cuda_slice(out, dev.clone()));
            }
            let func = dev.get_or_load_custom_func(name, "embedrank_affine_quant", PTX)?;
            let null = 0u64; // no ids: the kernel takes output row r from weight row r
            let mut b = func.builder();
            b.arg(args.0);
            b.arg(args.1);
            b.arg(args.2);
            match args.3 {
                Some(ids) => b.arg(ids),
                None => b.arg(&null),
            };
            b.arg(&out);
            for d in &dims {
                b.arg(d);
            }
            // SAFETY: argument list matches the kernel's signature; sizes were checked by DeviceAffine.
            unsafe { b.launch(cfg) }.w()?;
            Ok(T::wrap_cuda_slice(out, dev.clone()))
        }

        let args = (packed, scales, biases, ids.as_ref());
        let dims = [rows32, n32, k32, bits32, gs32];
        let storage = match self.dtype {
            DType::F32 => launch::<f32>(dev, "affine_dequant_f32", args, dims, elems, cfg)?,
            DType::F16 => launch::<f16>(dev, "affine_dequant_f16", args, dims, elems, cfg)?,
            DType::BF16 => launch::<bf16>(dev, "affine_dequant_bf16", args, dims, elems, cfg)?,
            d => candle_core::bail!("quantized weights expand to f32, f16 or bf16, not {d:?}"),
        };
        Ok((storage, self.out_shape()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::qkernel::{SUPPORTED_BITS, SUPPORTED_GROUP_SIZES};

    /// MLX-layout buffers packed here (LSB-first codes), from a fixed pseudo-random sequence.
    fn parts(n: usize, k: usize, bits: u32, gs: usize) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
        let mut state = 0x2545_f491_u64 + bits as u64 * 31 + gs as u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let wpr = k * bits as usize / 32;
        let mut packed = vec![0u32; n * wpr];
        for r in 0..n {
            for j in 0..k {
                let q = next() & ((1 << bits) - 1);
                let (off, row) = (j * bits as usize, &mut packed[r * wpr..(r + 1) * wpr]);
                let (w, sh) = (off / 32, (off % 32) as u32);
                row[w] |= q << sh;
                if sh + bits > 32 {
                    row[w + 1] |= q >> (32 - sh);
                }
            }
        }
        let groups = n * k / gs;
        let scales = (0..groups).map(|_| (next() % 1000) as f32 * 1e-5 - 0.004).collect();
        let biases = (0..groups).map(|_| (next() % 1000) as f32 * 1e-4 - 0.05).collect();
        (packed, scales, biases)
    }

    /// The device form and the CPU reference (`AffineWeight`, the loader's type) of the same buffers.
    fn both(n: usize, k: usize, bits: u32, gs: usize) -> (DeviceAffine, AffineWeight) {
        let (p, s, b) = parts(n, k, bits, gs);
        let q = AffineWeight::new(bits, gs, n, k, p.clone(), s.clone(), b.clone()).unwrap();
        (DeviceAffine::from_parts(bits, gs, n, k, p, s, b, &Device::Cpu).unwrap(), q)
    }

    fn reference(q: &AffineWeight, rows: &[usize]) -> Vec<f32> {
        let mut out = vec![0f32; rows.len() * q.k()];
        for (&r, o) in rows.iter().zip(out.chunks_exact_mut(q.k())) {
            q.dequantize_rows(r..r + 1, o);
        }
        out
    }

    /// Every MLX layout: the op's whole-matrix expansion equals the CPU reference bit for bit.
    #[test]
    fn dequantize_matches_reference_for_every_layout() {
        for bits in SUPPORTED_BITS {
            for gs in SUPPORTED_GROUP_SIZES {
                let (n, k) = (5, 2 * 128 + gs);
                let (d, q) = both(n, k, bits, gs);
                let got = d.dequantize(DType::F32).unwrap();
                assert_eq!(got.dims(), &[n, k]);
                let want = reference(&q, &(0..n).collect::<Vec<_>>());
                assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want, "{bits} bits, group {gs}");
            }
        }
    }

    #[test]
    fn gather_picks_rows_in_order_and_zeroes_bad_ids() {
        let (d, q) = both(7, 96, 3, 32);
        let got = d.gather(&[6, 0, 6, 3], DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, reference(&q, &[6, 0, 6, 3]));
        let bad = d.gather(&[1, 7], DType::F32).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(bad[0], reference(&q, &[1]));
        assert!(bad[1].iter().all(|&v| v == 0.0));
        assert_eq!(d.gather(&[], DType::F32).unwrap().dims(), &[0, 96]);
    }

    #[test]
    fn half_dtypes_round_the_f32_values() {
        let (d, _) = both(3, 64, 4, 64);
        let f32s = d.dequantize(DType::F32).unwrap();
        for dt in [DType::BF16, DType::F16] {
            let got = d.dequantize(dt).unwrap();
            assert_eq!(got.dtype(), dt);
            let want = f32s.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(got.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(), want);
        }
        assert!(d.dequantize(DType::U32).is_err());
    }

    #[test]
    fn from_parts_rejects_wrong_sizes() {
        let (p, s, b) = parts(2, 64, 4, 32);
        let mut short = p.clone();
        short.pop();
        assert!(DeviceAffine::from_parts(4, 32, 2, 64, short, s.clone(), b.clone(), &Device::Cpu).is_err());
        assert!(DeviceAffine::from_parts(4, 64, 2, 64, p.clone(), s.clone(), b.clone(), &Device::Cpu).is_err());
        assert!(DeviceAffine::from_parts(7, 32, 2, 64, p.clone(), s.clone(), b.clone(), &Device::Cpu).is_err());
        assert!(DeviceAffine::from_parts(4, 32, 2, 64, p, s, b, &Device::Cpu).is_ok());
    }

    /// The kernel against its CPU mirror on a real GPU, every layout and dtype, plus a layer product.
    /// Skipped without a GPU unless EMBEDRANK_TEST_CUDA=1 (bench/gpu_quant.sh sets it on the GPU machine).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_kernel_matches_cpu_mirror() {
        use crate::weights::Linear;
        use candle_core::Module;

        let gpu = match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) if std::env::var_os("EMBEDRANK_TEST_CUDA").is_none() => {
                eprintln!("skipped: no CUDA device ({e})");
                return;
            }
            Err(e) => panic!("EMBEDRANK_TEST_CUDA is set but CUDA is unavailable: {e}"),
        };
        let host = |t: Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for bits in SUPPORTED_BITS {
            for gs in SUPPORTED_GROUP_SIZES {
                let (n, k) = (37, 3 * 128 + gs);
                let (p, s, b) = parts(n, k, bits, gs);
                let cpu =
                    DeviceAffine::from_parts(bits, gs, n, k, p.clone(), s.clone(), b.clone(), &Device::Cpu).unwrap();
                let dev = DeviceAffine::from_parts(bits, gs, n, k, p, s, b, &gpu).unwrap();
                for dt in [DType::F32, DType::BF16, DType::F16] {
                    let (want, got) = (host(cpu.dequantize(dt).unwrap()), host(dev.dequantize(dt).unwrap()));
                    assert_eq!(got, want, "{bits} bits, group {gs}, {dt:?}");
                }
                let ids = [36, 0, 5, 5, 17];
                assert_eq!(host(dev.gather(&ids, DType::BF16).unwrap()), host(cpu.gather(&ids, DType::BF16).unwrap()));
            }
        }
        // A layer product through cuBLAS against the CPU qkernel path of the same weight.
        let (n, k, m) = (96, 256, 33);
        let (p, s, b) = parts(n, k, 4, 64);
        let cpu = Linear::quantized(AffineWeight::new(4, 64, n, k, p.clone(), s.clone(), b.clone()).unwrap(), None);
        let dev = Linear::device_quantized(DeviceAffine::from_parts(4, 64, n, k, p, s, b, &gpu).unwrap(), None);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let xc = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
        let want = host(cpu.forward(&xc).unwrap());
        let got = host(dev.forward(&xc.to_device(&gpu).unwrap()).unwrap());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = want.iter().zip(&got).fold(0f32, |a, (w, g)| a.max((w - g).abs()));
        assert!(err <= 1e-4 * scale, "layer product differs by {err} (scale {scale})");
    }
}
