//! A linear layer whose storage the model code does not see.

use candle_core::{Module, Tensor};

#[derive(Debug, Clone)]
pub enum Linear {
    /// weight [out, in], optional bias [out]
    Dense { weight: Tensor, bias: Option<Tensor> },
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense { weight, bias }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            Linear::Dense { weight, .. } => weight.dims()[0],
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Dense { weight, bias } => {
                // Flatten leading dims so one GEMM covers the whole batch.
                let dims = x.dims().to_vec();
                let k = dims[dims.len() - 1];
                let rows: usize = dims[..dims.len() - 1].iter().product();
                let y = x.reshape((rows, k))?.matmul(&weight.t()?)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                let mut out = dims;
                let last = out.len() - 1;
                out[last] = weight.dims()[0];
                y.reshape(out)
            }
        }
    }
}
