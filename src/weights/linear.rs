//! A linear layer whose storage the model code does not see: a dense float matrix, or an MLX
//! affine-quantized one kept packed and multiplied by `weights::qkernel`.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Storage, Tensor};

use super::cuda_quant::DeviceAffine;
use super::dense_cpu::{self, with_f32};
use super::qkernel::AffineWeight;

#[derive(Debug, Clone)]
pub enum Linear {
    /// weight [out, in], optional bias [out]
    Dense { weight: Tensor, bias: Option<Tensor> },
    /// packed weight [out, in] (CPU memory), optional bias [out] (compute device and dtype)
    Quantized { weight: Arc<AffineWeight>, bias: Option<Tensor> },
    /// packed weight [out, in] in GPU memory, expanded per call by a device kernel; bias as above
    DeviceQuantized { weight: Arc<DeviceAffine>, bias: Option<Tensor> },
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense { weight, bias }
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
            Linear::Quantized { weight, .. } => weight.n(),
            Linear::DeviceQuantized { weight, .. } => weight.n(),
        }
    }

    /// f32 CPU buffers: `out[m, n] = x[m, k] · Wᵀ + bias (+ residual)`, dense or quantized alike.
    /// Bias and residual go into `out` first; the matmul accumulates onto them.
    pub fn forward_f32(&self, x: &[f32], m: usize, out: &mut [f32], residual: Option<&[f32]>) -> crate::Result<()> {
        let n = self.out_dim();
        let out = &mut out[..m * n];
        let bias = match self {
            Linear::Dense { bias, .. } | Linear::Quantized { bias, .. } | Linear::DeviceQuantized { bias, .. } => bias,
        };
        match bias {
            Some(b) => with_f32(b, |b| dense_cpu::fill_rows(out, Some(b), residual))?,
            None => dense_cpu::fill_rows(out, None, residual),
        }
        match self {
            Linear::Dense { weight, .. } => {
                let k = weight.dims()[1];
                with_f32(weight, |w| dense_cpu::matmul_nt(x, w, m, n, k, out, true))?;
            }
            Linear::Quantized { weight, .. } => weight.matmul_acc(&x[..m * weight.k()], m, out),
            Linear::DeviceQuantized { .. } => {
                return Err(candle_core::Error::Msg("a GPU-resident quantized layer has no CPU buffers".into()).into())
            }
        }
        Ok(())
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self, Linear::Quantized { .. } | Linear::DeviceQuantized { .. })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Flatten leading dims so one GEMM covers the whole batch.
        let dims = x.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let (y, bias, n) = match self {
            Linear::Dense { weight, bias } => (x.reshape((rows, k))?.matmul(&weight.t()?)?, bias, weight.dims()[0]),
            // The CPU kernel adds the bias itself, in the pass that writes the output.
            Linear::Quantized { weight, bias } if x.device().is_cpu() => {
                (quantized_matmul_cpu(weight, x, rows, k, bias.as_ref())?, &None, weight.n())
            }
            Linear::Quantized { weight, bias } => (quantized_matmul(weight, x, rows, k)?, bias, weight.n()),
            Linear::DeviceQuantized { weight, bias } => {
                (device_quantized_matmul(weight, x, rows, k)?, bias, weight.n())
            }
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
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?.contiguous()?;
    let bias = bias.map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
    let mut out = vec![0f32; rows * w.n()];
    {
        let (storage, layout) = xf.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(candle_core::Error::Msg("quantized linear: CPU tensor without CPU storage".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("quantized linear: activations not contiguous".into()))?;
        let xs = &cpu.as_slice::<f32>()?[start..end];
        w.matmul_bias(xs, rows, &mut out, bias.as_deref());
    }
    Tensor::from_vec(out, (rows, w.n()), &Device::Cpu)?.to_dtype(dtype)
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
