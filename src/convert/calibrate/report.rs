//! The quality report of a calibrated conversion: how closely each candidate quantization follows
//! the float model on the texts it was fitted on and on texts held apart, as JSON and as a README
//! section.

use std::collections::BTreeMap;

use serde::Serialize;

use super::eval::EvalScores;
use crate::spec::Task;
use crate::{Error, Result};

/// Agreement of a quantized model with the float one on a set of texts. Embedders: cosine of each
/// text's vectors. Rerankers: absolute score differences, and how often a query's documents come
/// out in the same order (`same_order`) and with the same best document (`same_top`).
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub texts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_min: Option<f64>,
    /// The 1st percentile of the cosines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_p1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_diff_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_diff_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_order: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_top: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    pub method: String,
    pub fit: Agreement,
    pub held: Agreement,
    pub bytes: u64,
    pub seconds: f64,
    /// Scores on the --eval data, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalScores>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub task: String,
    pub bits: u32,
    pub group_size: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub layer_bits: BTreeMap<String, u32>,
    /// The method written (the best candidate on the held-apart texts).
    pub method: String,
    pub texts: String,
    pub texts_digest: String,
    pub fit_texts: usize,
    pub held_texts: usize,
    pub candidates: Vec<CandidateReport>,
    /// The float model's scores on the --eval data, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub float_eval: Option<EvalScores>,
    pub record_seconds: f64,
    pub total_seconds: f64,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

fn order(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx
}

/// Agreement of `quant` with `float` (one row per text: a vector, or a query's scores).
pub fn agreement(task: Task, float: &[Vec<f32>], quant: &[Vec<f32>]) -> Agreement {
    let n = float.len().min(quant.len());
    let mut a = Agreement {
        texts: n,
        cosine_mean: None,
        cosine_min: None,
        cosine_p1: None,
        score_diff_mean: None,
        score_diff_max: None,
        same_order: None,
        same_top: None,
    };
    if n == 0 {
        return a;
    }
    match task {
        Task::Embed => {
            let mut c: Vec<f64> = (0..n).map(|i| cosine(&float[i], &quant[i])).collect();
            c.sort_by(f64::total_cmp);
            a.cosine_mean = Some(c.iter().sum::<f64>() / n as f64);
            a.cosine_min = c.first().copied();
            a.cosine_p1 = Some(c[((n - 1) as f64 * 0.01).round() as usize]);
        }
        Task::Rerank => {
            let diffs: Vec<f64> = (0..n)
                .flat_map(|i| float[i].iter().zip(&quant[i]).map(|(x, y)| (*x as f64 - *y as f64).abs()))
                .collect();
            a.score_diff_mean = Some(diffs.iter().sum::<f64>() / diffs.len().max(1) as f64);
            a.score_diff_max = Some(diffs.iter().copied().fold(0.0, f64::max));
            let same = (0..n).filter(|&i| order(&float[i]) == order(&quant[i])).count();
            let top = (0..n).filter(|&i| order(&float[i]).first() == order(&quant[i]).first()).count();
            a.same_order = Some(same as f64 / n as f64);
            a.same_top = Some(top as f64 / n as f64);
        }
    }
    a
}

/// The candidate closest to the float model on the held-apart texts: highest mean cosine
/// (embedders) or lowest mean score difference (rerankers); the first on ties, so round to nearest
/// (listed first) wins unless a method measurably beats it.
pub fn best(c: &[CandidateReport]) -> Option<usize> {
    let key = |r: &CandidateReport| match (r.held.cosine_mean, r.held.score_diff_mean) {
        (Some(cos), _) => -cos,
        (None, Some(d)) => d,
        _ => f64::INFINITY,
    };
    (0..c.len()).min_by(|&a, &b| key(&c[a]).total_cmp(&key(&c[b])))
}

impl Agreement {
    fn cells(&self) -> String {
        match (self.cosine_mean, self.score_diff_mean) {
            (Some(mean), _) => format!(
                "{:.4} | {:.4} | {:.4}",
                mean,
                self.cosine_min.unwrap_or(f64::NAN),
                self.cosine_p1.unwrap_or(f64::NAN)
            ),
            (None, Some(d)) => format!(
                "{:.4} | {:.4} | {:.0}% / {:.0}%",
                d,
                self.score_diff_max.unwrap_or(f64::NAN),
                100.0 * self.same_order.unwrap_or(0.0),
                100.0 * self.same_top.unwrap_or(0.0)
            ),
            _ => "- | - | -".into(),
        }
    }
}

impl Report {
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Quantization(format!("report: {e}")))
    }

    /// A README section: what was done and the measured agreement of every candidate.
    pub fn to_markdown(&self) -> String {
        let embed = self.candidates.iter().any(|c| c.held.cosine_mean.is_some());
        let head = if embed { "cosine mean | min | 1st pct" } else { "score diff mean | max | same order / top" };
        let mut s = format!(
            "\n\n## Quantization (embedrank convert --calibrate)\n\n{}-bit MLX affine, group size {}, from `{}`, \
             method `{}` (chosen by agreement with the float model on the held-apart texts). Calibrated on {} \
             texts of `{}` (sha256 {}…), measured on those and on {} texts held apart.\n\n\
             | method | size | fit: {head} | held apart: {head} |\n|---|---|---|---|---|---|---|---|\n",
            self.bits,
            self.group_size,
            self.source,
            self.method,
            self.fit_texts,
            self.texts,
            self.texts_digest,
            self.held_texts,
        );
        for c in &self.candidates {
            s.push_str(&format!(
                "| {} | {:.1} MB | {} | {} |\n",
                c.method,
                c.bytes as f64 / 1e6,
                c.fit.cells(),
                c.held.cells()
            ));
        }
        if let Some(f) = &self.float_eval {
            s.push_str(
                "\nOn the evaluation data (nDCG@10 and Recall@100 on the BEIR folder, Spearman on the STS file; \
                 percent):\n\n| model | size | nDCG@10 | Recall@100 | STS Spearman |\n|---|---|---|---|---|\n",
            );
            s.push_str(&format!("| float (source) | - | {} |\n", f.cells()));
            for c in &self.candidates {
                if let Some(e) = &c.eval {
                    s.push_str(&format!("| {} | {:.1} MB | {} |\n", c.method, c.bytes as f64 / 1e6, e.cells()));
                }
            }
        }
        if !self.layer_bits.is_empty() {
            s.push_str(&format!("\nLayers at other widths: {:?}.\n", self.layer_bits));
        }
        s
    }
}
