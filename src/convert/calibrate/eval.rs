//! `convert --calibrate --eval DIR --eval-sts FILE`: task quality of the float model and of every
//! candidate quantization on the user's data (a BEIR folder, an STS file), beside the agreement
//! measures. Never used to choose the method (that is the held-apart texts' job), so the data
//! stays a test set.

use serde::Serialize;

use crate::engine::Engine;
use crate::eval::metrics::{Measure, Metric};
use crate::eval::{beir, sts, Progress};
use crate::Result;

/// The data a conversion is evaluated on; either part may be absent.
#[derive(Debug, Clone, Default)]
pub struct EvalData {
    pub beir: Option<beir::BeirSet>,
    pub sts: Option<sts::StsSet>,
}

impl EvalData {
    pub fn is_empty(&self) -> bool {
        self.beir.is_none() && self.sts.is_none()
    }
}

/// One model's scores (fractions, 0…1; Spearman −1…1).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EvalScores {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ndcg_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_at_100: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sts_spearman: Option<f64>,
}

/// Scores of `engine` on `data`.
pub fn measure(engine: &Engine, data: &EvalData, progress: &dyn Progress) -> Result<EvalScores> {
    let mut s = EvalScores::default();
    if let Some(set) = &data.beir {
        let e = crate::eval::retrieval_eval(engine, set, progress)?;
        s.ndcg_at_10 = e.get(Metric::new(Measure::Ndcg, 10));
        s.recall_at_100 = e.get(Metric::new(Measure::Recall, 100));
    }
    if let Some(set) = &data.sts {
        let prompt = engine.spec.prompt_for(None, None, None)?;
        s.sts_spearman = Some(crate::eval::sts_scores(engine, set, &prompt, progress)?.spearman);
    }
    Ok(s)
}

impl EvalScores {
    /// Markdown cells: nDCG@10 | Recall@100 | STS Spearman (percent, as BEIR and MTEB print them).
    pub fn cells(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
        format!("{} | {} | {}", pct(self.ndcg_at_10), pct(self.recall_at_100), pct(self.sts_spearman))
    }
}
