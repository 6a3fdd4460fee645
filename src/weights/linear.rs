//! A linear layer whose storage the model code does not see: a dense float matrix, or an MLX
//! affine-quantized one kept packed and multiplied by `weights::qkernel`.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Storage, Tensor};

use super::cuda_quant::DeviceAffine;
use super::dense_cpu::{self, with_f32};
use super::packed_f32::{self, Epilogue, PackedF32};
use super::qkernel::AffineWeight;
use super::recorder::ActivationRecorder;

#[derive(Debug, Clone)]
pub enum Linear {
    /// weight [out, in], optional bias [out]
    Dense { weight: Tensor, bias: Option<Tensor> },
    /// f32 weight [out, in] in column panels for the CPU's packed GEMM (`packed_f32`), bias f32
    Packed { weight: Arc<PackedF32>, bias: Option<Tensor> },
    /// packed weight [out, in] (CPU memory), optional bias [out] (compute device and dtype)
    Quantized { weight: Arc<AffineWeight>, bias: Option<Tensor> },
    /// packed weight [out, in] in GPU memory, expanded per call by a device kernel; bias as above
    DeviceQuantized { weight: Arc<DeviceAffine>, bias: Option<Tensor> },
    /// A float layer that adds its inputs to a calibration recorder before computing (see
    /// `weights::recorder`); never concatenated with others, so each layer keeps its own inputs.
    Recorded { inner: Box<Linear>, name: Arc<str>, recorder: Arc<ActivationRecorder> },
}

impl Linear {
    /// A float layer; f32 weights on a CPU with AVX-512 are packed for `packed_f32` (the dense copy
    /// is dropped), everything else stays a tensor for candle's matmul.
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        let packable = weight.device().is_cpu()
            && weight.dtype() == DType::F32
            && weight.rank() == 2
            && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32)
            && packed_f32::available();
        if packable {
            let (n, k) = (weight.dims()[0], weight.dims()[1]);
            if let Ok(packed) = with_f32(&weight, |w| PackedF32::pack(w, n, k)) {
                return Linear::Packed { weight: Arc::new(packed), bias };
            }
        }
        Linear::Dense { weight, bias }
    }

    /// The float weight [out, in] as a tensor (packed layers unpacked), or None when quantized.
    pub fn float_weight(&self) -> candle_core::Result<Option<Tensor>> {
        match self {
            Linear::Dense { weight, .. } => Ok(Some(weight.clone())),
            Linear::Packed { weight, .. } => {
                Ok(Some(Tensor::from_vec(weight.unpack(), (weight.n(), weight.k()), &Device::Cpu)?))
            }
            Linear::Quantized { .. } | Linear::DeviceQuantized { .. } => Ok(None),
            Linear::Recorded { inner, .. } => inner.float_weight(),
        }
    }

    /// `parts` (same input width) stacked along the output dimension, so one GEMM replaces several
    /// over the same input (q/k/v, gate/up): float layers as one dense layer, CPU-quantized ones
    /// as one quantized layer (same bits, group size and settings). `Err(parts)`, unchanged, when
    /// they cannot be joined (GPU-quantized, mixed kinds, biases on some parts only).
    pub fn concat(parts: Vec<Linear>) -> crate::Result<Result<Linear, Vec<Linear>>> {
        if parts.iter().any(|p| matches!(p, Linear::Recorded { .. })) {
            return Ok(Err(parts));
        }
        let biases: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias()).collect();
        let bias = match biases.len() {
            0 => None,
            n if n == parts.len() => Some(Tensor::cat(&biases, 0)?),
            _ => return Ok(Err(parts)),
        };
        let quantized: Vec<&AffineWeight> = parts
            .iter()
            .filter_map(|p| if let Linear::Quantized { weight, .. } = p { Some(&**weight) } else { None })
            .collect();
        if !quantized.is_empty() {
            return Ok(
                match (quantized.len() == parts.len()).then(|| AffineWeight::concat_rows(&quantized)).flatten() {
                    Some(w) => Ok(Linear::quantized(w, bias)),
                    None => Err(parts),
                },
            );
        }
        let mut weights = Vec::with_capacity(parts.len());
        for p in &parts {
            let Some(w) = p.float_weight()? else { return Ok(Err(parts)) };
            weights.push(w);
        }
        Ok(Ok(Linear::dense(Tensor::cat(&weights, 0)?, bias)))
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense { bias, .. }
            | Linear::Packed { bias, .. }
            | Linear::Quantized { bias, .. }
            | Linear::DeviceQuantized { bias, .. } => bias.as_ref(),
            Linear::Recorded { inner, .. } => inner.bias(),
        }
    }

    pub fn quantized(weight: AffineWeight, bias: Option<Tensor>) -> Self {
        Linear::Quantized { weight: Arc::new(weight), bias }
    }

    pub fn device_quantized(weight: DeviceAffine, bias: Option<Tensor>) -> Self {
        Linear::DeviceQuantized { weight: Arc::new(weight), bias }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.dims()[0],
            Linear::Packed { weight, .. } => weight.n(),
            Linear::Quantized { weight, .. } => weight.n(),
            Linear::DeviceQuantized { weight, .. } => weight.n(),
            Linear::Recorded { inner, .. } => inner.out_dim(),
        }
    }

    pub fn in_dim(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.dims()[1],
            Linear::Packed { weight, .. } => weight.k(),
            Linear::Quantized { weight, .. } => weight.k(),
            Linear::DeviceQuantized { weight, .. } => weight.k(),
            Linear::Recorded { inner, .. } => inner.in_dim(),
        }
    }

    /// f32 CPU buffers: `out[m, n] = act(x[m, k] · Wᵀ + bias (+ residual))`, any CPU layer alike.
    /// Packed layers fuse bias, residual and `act` into the GEMM; the others put bias and residual
    /// into `out` first, accumulate onto them, then apply `act` in parallel.
    pub fn forward_f32(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        act: Option<Epilogue>,
    ) -> crate::Result<()> {
        if let Linear::Recorded { inner, name, recorder } = self {
            let k = inner.in_dim();
            recorder.record(name, &x[..m * k], m, k);
            return inner.forward_f32(x, m, out, residual, act);
        }
        let n = self.out_dim();
        let out = &mut out[..m * n];
        if let Linear::Packed { weight, bias } = self {
            return with_bias(bias.as_ref(), |b| weight.matmul(x, m, out, b, residual, act));
        }
        match self {
            Linear::Dense { weight, bias } => {
                let k = weight.dims()[1];
                with_f32(weight, |w| {
                    with_bias(bias.as_ref(), |b| {
                        dense_cpu::separate_passes(out, n, b, residual, act, |out| {
                            dense_cpu::matmul_nt(x, w, m, n, k, out, true)
                        })
                    })
                })??;
            }
            Linear::Quantized { weight, bias } => {
                with_bias(bias.as_ref(), |b| weight.matmul_finish(&x[..m * weight.k()], m, out, b, residual, act))?
            }
            Linear::Packed { .. } | Linear::Recorded { .. } => unreachable!("handled above"),
            Linear::DeviceQuantized { .. } => {
                return Err(candle_core::Error::Msg("a GPU-resident quantized layer has no CPU buffers".into()).into())
            }
        }
        Ok(())
    }

    /// f32 CPU buffers: a two-layer MLP `out = second(act(first(x))) + residual`. Two packed
    /// layers run fused per block of rows (`PackedF32::mlp`); anything else goes through `mid`
    /// (grown to m × first's width as needed).
    #[allow(clippy::too_many_arguments)]
    pub fn mlp_f32(
        first: &Linear,
        second: &Linear,
        x: &[f32],
        m: usize,
        mid: &mut Vec<f32>,
        out: &mut [f32],
        residual: Option<&[f32]>,
        act: Option<Epilogue>,
    ) -> crate::Result<()> {
        if let (Linear::Packed { weight: w1, bias: b1 }, Linear::Packed { weight: w2, bias: b2 }) = (first, second) {
            return with_bias(b1.as_ref(), |b1| {
                with_bias(b2.as_ref(), |b2| PackedF32::mlp(w1, w2, x, m, mid, out, (b1, b2), residual, act))
            })?;
        }
        if let (Linear::Quantized { weight: w1, bias: b1 }, Linear::Quantized { weight: w2, bias: b2 }) =
            (first, second)
        {
            let x = &x[..m * w1.k()];
            return with_bias(b1.as_ref(), |b1| {
                with_bias(b2.as_ref(), |b2| AffineWeight::mlp_finish((w1, w2), x, m, mid, out, (b1, b2), residual, act))
            })?;
        }
        mid.resize(m * first.out_dim(), 0.0);
        first.forward_f32(x, m, mid, None, act)?;
        second.forward_f32(mid, m, out, residual, None)
    }

    pub fn is_quantized(&self) -> bool {
        if let Linear::Recorded { inner, .. } = self {
            return inner.is_quantized();
        }
        matches!(self, Linear::Quantized { .. } | Linear::DeviceQuantized { .. })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Flatten leading dims so one GEMM covers the whole batch.
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        if let Linear::Recorded { inner, name, recorder } = self {
            let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            recorder.record(name, &xs, rows, k);
            return inner.forward(x);
        }
        let (y, bias, n) = match self {
            Linear::Dense { weight, bias } => (x.reshape((rows, k))?.matmul(&weight.t()?)?, bias, weight.dims()[0]),
            Linear::Packed { weight, bias } => {
                if k != weight.k() {
                    return Err(candle_core::Error::Msg(format!(
                        "linear layer expects inputs of width {}, got {k}",
                        weight.k()
                    )));
                }
                let bias = bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
                let y = cpu_matmul(x, rows, weight.n(), |xs, out| {
                    weight.matmul(xs, rows, out, bias.as_deref(), None, None)
                })?;
                (y, &None, weight.n())
            }
            // The CPU kernel adds the bias itself, in the pass that writes the output.
            Linear::Quantized { weight, bias } if x.device().is_cpu() => {
                (quantized_matmul_cpu(weight, x, rows, k, bias.as_ref())?, &None, weight.n())
            }
            Linear::Quantized { weight, bias } => (quantized_matmul(weight, x, rows, k)?, bias, weight.n()),
            Linear::DeviceQuantized { weight, bias } => {
                (device_quantized_matmul(weight, x, rows, k)?, bias, weight.n())
            }
            Linear::Recorded { .. } => unreachable!("handled above"),
        };
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = n;
        y.reshape(out)
    }
}

fn check_width(w: &AffineWeight, k: usize) -> candle_core::Result<()> {
    if k != w.k() {
        return Err(candle_core::Error::Msg(format!("quantized linear expects inputs of width {}, got {k}", w.k())));
    }
    Ok(())
}

/// CPU: x [.., k] as [rows, k] times Wᵀ (+ bias) -> [rows, n] in x's dtype. The kernel reads the
/// activations in place from the tensor's storage (f32, contiguous: the common case costs no copy)
/// and writes into the buffer that becomes the result tensor.
fn quantized_matmul_cpu(
    w: &AffineWeight,
    x: &Tensor,
    rows: usize,
    k: usize,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    check_width(w, k)?;
    let bias = bias.map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
    cpu_matmul(x, rows, w.n(), |xs, out| w.matmul_bias(xs, rows, out, bias.as_deref()))
}

/// `f` with the bias borrowed as an f32 slice (CPU f32 tensors; an error otherwise), or None.
fn with_bias<R>(bias: Option<&Tensor>, f: impl FnOnce(Option<&[f32]>) -> R) -> crate::Result<R> {
    match bias {
        Some(b) => with_f32(b, |b| f(Some(b))),
        None => Ok(f(None)),
    }
}

/// Run `f(activations [rows, k], out [rows, n])` on x's f32 CPU storage in place; the result is
/// the tensor [rows, n] in x's dtype.
fn cpu_matmul(x: &Tensor, rows: usize, n: usize, f: impl FnOnce(&[f32], &mut [f32])) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    let mut out = vec![0f32; rows * n];
    {
        let (storage, layout) = xf.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(candle_core::Error::Msg("CPU linear layer: tensor without CPU storage".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("CPU linear layer: activations not contiguous".into()))?;
        f(&cpu.as_slice::<f32>()?[start..end], &mut out);
    }
    Tensor::from_vec(out, (rows, n), &Device::Cpu)?.to_dtype(dtype)
}

/// x [.., k] as [rows, k] times Wᵀ -> [rows, n] in x's dtype on x's device.
fn quantized_matmul(w: &AffineWeight, x: &Tensor, rows: usize, k: usize) -> candle_core::Result<Tensor> {
    check_width(w, k)?;
    let dtype = x.dtype();
    let device = x.device();
    // GPU devices: dequantize this layer on the CPU for this call and multiply there on the device;
    // correct first, a device kernel later. Only one layer is ever expanded at a time.
    let mut dense = vec![0f32; w.n() * k];
    w.dequantize_rows(0..w.n(), &mut dense);
    let wt = Tensor::from_vec(dense, (w.n(), k), device)?.to_dtype(dtype)?;
    x.reshape((rows, k))?.matmul(&wt.t()?)
}

/// x [.., k] as [rows, k] times Wᵀ on the weight's device: the layer is expanded into a scratch
/// matrix in x's dtype (freed after the call), then multiplied by the device's GEMM.
fn device_quantized_matmul(w: &DeviceAffine, x: &Tensor, rows: usize, k: usize) -> candle_core::Result<Tensor> {
    if k != w.k() {
        return Err(candle_core::Error::Msg(format!("quantized linear expects inputs of width {}, got {k}", w.k())));
    }
    let wt = w.dequantize(x.dtype())?;
    x.reshape((rows, k))?.matmul(&wt.t()?)
}
