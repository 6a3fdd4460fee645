//! An embedding table that is dense or MLX-quantized; the model code does not know which (like
//! [`super::Linear`]).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::cuda_quant::DeviceAffine;
use super::qkernel::AffineWeight;
use super::WeightStore;
use crate::{Error, Result};

/// An embedding table, dense or MLX-quantized; a quantized lookup dequantizes only the rows asked for.
pub enum Embedding {
    Dense(Tensor),
    Quantized {
        table: Arc<AffineWeight>,
        // Boxed: with the cuda feature a Device is ~70 bytes, and BERT holds three tables (clippy's
        // large_enum_variant on model::Model).
        device: Box<Device>,
        dtype: DType,
    },
    /// packed in GPU memory; lookups expand only the rows asked for, on the device
    DeviceQuantized {
        table: Arc<DeviceAffine>,
        dtype: DType,
    },
}

impl Embedding {
    /// `name.weight` [rows, dim]; quantized when `name.scales` exists.
    pub fn load(ws: &WeightStore, name: &str, rows: usize, dim: usize) -> Result<Self> {
        if let Some(q) = ws.quantized(name, rows, dim)? {
            if ws.device.is_cuda() {
                let table = Arc::new(DeviceAffine::load(ws, name, &q)?);
                return Ok(Embedding::DeviceQuantized { table, dtype: ws.dtype });
            }
            return Ok(Embedding::Quantized {
                table: Arc::new(q),
                device: Box::new(ws.device.clone()),
                dtype: ws.dtype,
            });
        }
        Ok(Embedding::Dense(ws.get(&format!("{name}.weight"), &[rows, dim])?))
    }

    pub fn new(table: Tensor) -> Self {
        Embedding::Dense(table)
    }

    pub fn num_rows(&self) -> usize {
        match self {
            Embedding::Dense(t) => t.dims()[0],
            Embedding::Quantized { table, .. } => table.n(),
            Embedding::DeviceQuantized { table, .. } => table.n(),
        }
    }

    pub fn dim(&self) -> usize {
        match self {
            Embedding::Dense(t) => t.dims()[1],
            Embedding::Quantized { table, .. } => table.k(),
            Embedding::DeviceQuantized { table, .. } => table.k(),
        }
    }

    /// Every id must name a row of the table.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let n = self.num_rows();
        match ids.iter().find(|&&i| i as usize >= n) {
            Some(bad) => Err(Error::InvalidInput(format!("token id {bad} is outside the {n}-row embedding table"))),
            None => Ok(()),
        }
    }

    /// Rows `ids` of the table, [ids.len(), dim], in the compute dtype on the compute device.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        self.check_ids(ids)?;
        match self {
            Embedding::Dense(t) => {
                let idx = Tensor::new(ids, t.device())?;
                Ok(t.index_select(&idx, 0)?)
            }
            Embedding::Quantized { table, device, dtype } => {
                let k = table.k();
                let mut out = vec![0f32; ids.len() * k];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(k)) {
                    table.dequantize_rows(id as usize..id as usize + 1, row);
                }
                Ok(Tensor::from_vec(out, (ids.len(), k), device)?.to_dtype(*dtype)?)
            }
            // ids were checked above, so every row is a real one.
            Embedding::DeviceQuantized { table, dtype } => Ok(table.gather(ids, *dtype)?),
        }
    }

    /// CPU f32: `out[i] = table[ids[i]]` (or `+=` when `accumulate`) for every id (rows of `dim`),
    /// in parallel; the packed CPU encoder sums its word, position and type embeddings this way
    /// without a tensor per term. (The first term overwrites: adding onto fresh zeroed memory
    /// would read each page before writing it, a second page fault per page.)
    pub fn rows_f32(&self, ids: &[u32], out: &mut [f32], accumulate: bool) -> Result<()> {
        self.check_ids(ids)?;
        let dim = self.dim();
        let out = &mut out[..ids.len() * dim];
        // Stretches of 256 rows: enough work per task to pay for the split.
        const ROWS: usize = 256;
        match self {
            Embedding::Dense(t) => super::dense_cpu::with_f32(t, |table| {
                out.par_chunks_mut(ROWS * dim).zip(ids.par_chunks(ROWS)).for_each(|(out, ids)| {
                    for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
                        let src = &table[id as usize * dim..(id as usize + 1) * dim];
                        add_or_copy(row, src, accumulate);
                    }
                })
            }),
            Embedding::Quantized { table, .. } => {
                out.par_chunks_mut(ROWS * dim).zip(ids.par_chunks(ROWS)).for_each(|(out, ids)| {
                    let mut tmp = vec![0f32; dim];
                    for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
                        table.dequantize_rows(id as usize..id as usize + 1, &mut tmp);
                        add_or_copy(row, &tmp, accumulate);
                    }
                });
                Ok(())
            }
            Embedding::DeviceQuantized { .. } => {
                Err(candle_core::Error::Msg("a GPU-resident embedding table has no CPU rows".into()).into())
            }
        }
    }

    /// ids [b, l] (u32) -> [b, l, dim]
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let flat = match self {
            Embedding::Dense(t) => t.index_select(&ids.flatten_all()?, 0)?,
            Embedding::Quantized { .. } | Embedding::DeviceQuantized { .. } => {
                self.rows(&ids.flatten_all()?.to_vec1::<u32>()?)?
            }
        };
        Ok(flat.reshape((b, l, self.dim()))?)
    }
}

fn add_or_copy(dst: &mut [f32], src: &[f32], accumulate: bool) {
    if accumulate {
        dst.iter_mut().zip(src).for_each(|(o, s)| *o += s);
    } else {
        dst.copy_from_slice(src);
    }
}
