//! Input statistics of linear layers for calibrated quantization (`convert --calibrate`): while a
//! float model runs the calibration texts, every linear layer adds `Xᵀ·X` of its input rows (the
//! Hessian of its squared output error) under its name. Layers load wrapped in
//! `Linear::Recorded` when the weight store has a recorder; nothing else pays for it.

use std::collections::HashMap;
use std::sync::Mutex;

use super::dense_cpu;

/// `Σ xᵀx` over the input rows one layer saw, and how many rows.
#[derive(Debug, Clone)]
pub struct InputStats {
    pub k: usize,
    /// [k, k] row-major, accumulated in f64 so thousands of rows add up without drift.
    pub xtx: Vec<f64>,
    pub rows: usize,
}

impl InputStats {
    /// Mean `xᵀx / rows` as f64 [k, k] (the layer's Hessian up to a factor of 2).
    pub fn hessian(&self) -> Vec<f64> {
        let r = self.rows.max(1) as f64;
        self.xtx.iter().map(|v| v / r).collect()
    }
}

#[derive(Debug, Default)]
pub struct ActivationRecorder {
    layers: Mutex<HashMap<String, InputStats>>,
}

impl ActivationRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the rows of `x` ([m, k] row-major) to layer `name`'s statistics.
    pub fn record(&self, name: &str, x: &[f32], m: usize, k: usize) {
        if m == 0 || k == 0 || x.len() < m * k {
            return;
        }
        // xᵀx as a GEMM of xᵀ [k, m] with itself: out = xᵀ · (xᵀ)ᵀ.
        let mut xt = vec![0f32; k * m];
        for (r, row) in x[..m * k].chunks_exact(k).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                xt[c * m + r] = v;
            }
        }
        let mut g = vec![0f32; k * k];
        dense_cpu::matmul_nt(&xt, &xt, k, k, m, &mut g, false);
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        let s = layers.entry(name.to_string()).or_insert_with(|| InputStats { k, xtx: vec![0.0; k * k], rows: 0 });
        if s.k != k {
            return;
        }
        s.xtx.iter_mut().zip(&g).for_each(|(a, b)| *a += *b as f64);
        s.rows += m;
    }

    /// Everything recorded, by layer name.
    pub fn take(&self) -> HashMap<String, InputStats> {
        std::mem::take(&mut *self.layers.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtx_matches_the_definition_over_calls() {
        let r = ActivationRecorder::new();
        let (k, rows) = (5, 7);
        let x: Vec<f32> = (0..rows * k).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3).collect();
        r.record("l", &x[..3 * k], 3, k);
        r.record("l", &x[3 * k..], rows - 3, k);
        let s = r.take().remove("l").unwrap();
        assert_eq!(s.rows, rows);
        for i in 0..k {
            for j in 0..k {
                let want: f64 = (0..rows).map(|t| x[t * k + i] as f64 * x[t * k + j] as f64).sum();
                assert!((s.xtx[i * k + j] - want).abs() < 1e-4, "{i},{j}");
            }
        }
    }
}
