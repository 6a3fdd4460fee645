//! Retrieval metrics with the semantics of pytrec_eval (the trec_eval code BEIR and MTEB call) and
//! MTEB's own MRR@k, so our numbers can be compared with published tables.
//!
//! What trec_eval does, and so what this does (checked against pytrec_eval 0.5 by
//! tests/eval_metrics.rs with a fixture from scripts/reference/beir_metrics.py):
//! - Ranking: score descending, ties broken by doc id descending as byte strings (trec_eval's
//!   `comp_sim_docno`; MTEB's MRR sorts by `(score, id)` reversed for the same reason).
//! - nDCG@k (`ndcg_cut`): gain = the qrels value (linear, not 2^rel − 1), discount 1/log2(rank + 1)
//!   with rank from 1; the ideal ranking is every judged doc with rel > 0, highest first. 0 when the
//!   query has no doc with rel > 0.
//! - Recall@k, MAP@k (`recall`, `map_cut`), P@k: a doc is relevant when rel ≥ 1; the denominator of
//!   recall and AP is the number of relevant judged docs (not min(k, …)); P@k divides by k.
//! - MRR@k: MTEB's `mrr`: 1/rank of the first doc with rel > 0 in the top k, else 0.
//! - Which queries count: those in both the qrels and the run (pytrec_eval evaluates only those);
//!   a query whose judgments are all 0 counts, with 0 for every metric. A run query with no
//!   retrieved docs is skipped, as trec_eval does.
//! - Negative judgments are "in pool, unjudged" in trec_eval: never relevant, no gain.

use std::collections::BTreeMap;

/// query id → doc id → graded relevance (BEIR qrels).
pub type Qrels = BTreeMap<String, BTreeMap<String, i64>>;
/// query id → retrieved (doc id, score), in any order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    Ndcg,
    Map,
    Recall,
    Precision,
    Mrr,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Ndcg => "ndcg",
            Measure::Map => "map",
            Measure::Recall => "recall",
            Measure::Precision => "precision",
            Measure::Mrr => "mrr",
        }
    }
}

/// A measure at a cutoff, e.g. nDCG@10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric {
    pub measure: Measure,
    pub k: usize,
}

impl Metric {
    pub const fn new(measure: Measure, k: usize) -> Self {
        Metric { measure, k }
    }
    /// `ndcg@10` style name (the JSON key).
    pub fn name(&self) -> String {
        format!("{}@{}", self.measure.as_str(), self.k)
    }
    /// `nDCG@10` style label (the table header).
    pub fn label(&self) -> String {
        let m = match self.measure {
            Measure::Ndcg => "nDCG",
            Measure::Map => "MAP",
            Measure::Recall => "Recall",
            Measure::Precision => "P",
            Measure::Mrr => "MRR",
        };
        format!("{m}@{}", self.k)
    }
}

/// The metrics the issue asks for, in table order.
pub const HEADLINE: [Metric; 4] = [
    Metric::new(Measure::Ndcg, 10),
    Metric::new(Measure::Recall, 100),
    Metric::new(Measure::Mrr, 10),
    Metric::new(Measure::Map, 100),
];

/// Sort retrieved docs as trec_eval does: score descending, then doc id descending.
pub fn rank(docs: &[(String, f64)]) -> Vec<(&str, f64)> {
    let mut v: Vec<(&str, f64)> = docs.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.as_bytes().cmp(a.0.as_bytes())));
    v
}

/// One query's value of `metric`, given its judgments and its ranked list (see [`rank`]).
pub fn query_value(judged: &BTreeMap<String, i64>, ranked: &[(&str, f64)], metric: Metric) -> f64 {
    let k = metric.k;
    let top = &ranked[..ranked.len().min(k)];
    let rel = |d: &str| judged.get(d).copied().unwrap_or(0);
    let num_rel = judged.values().filter(|&&r| r >= 1).count();
    match metric.measure {
        Measure::Ndcg => {
            let dcg: f64 = top
                .iter()
                .enumerate()
                .filter_map(|(i, (d, _))| {
                    let g = rel(d);
                    (g > 0).then(|| g as f64 / ((i + 2) as f64).log2())
                })
                .sum();
            let mut gains: Vec<i64> = judged.values().copied().filter(|&g| g > 0).collect();
            gains.sort_unstable_by(|a, b| b.cmp(a));
            let idcg: f64 = gains.iter().take(k).enumerate().map(|(i, &g)| g as f64 / ((i + 2) as f64).log2()).sum();
            if idcg > 0.0 {
                dcg / idcg
            } else {
                0.0
            }
        }
        Measure::Map => {
            if num_rel == 0 {
                return 0.0;
            }
            let mut found = 0usize;
            let mut sum = 0.0;
            for (i, (d, _)) in top.iter().enumerate() {
                if rel(d) >= 1 {
                    found += 1;
                    sum += found as f64 / (i + 1) as f64;
                }
            }
            sum / num_rel as f64
        }
        Measure::Recall => {
            if num_rel == 0 {
                return 0.0;
            }
            top.iter().filter(|(d, _)| rel(d) >= 1).count() as f64 / num_rel as f64
        }
        Measure::Precision => top.iter().filter(|(d, _)| rel(d) >= 1).count() as f64 / k as f64,
        Measure::Mrr => top.iter().position(|(d, _)| rel(d) > 0).map_or(0.0, |p| 1.0 / (p + 1) as f64),
    }
}

/// Per-query values and their means.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub metrics: Vec<Metric>,
    /// query id → one value per metric, in `metrics` order.
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// Mean over evaluated queries, in `metrics` order.
    pub mean: Vec<f64>,
}

impl Evaluation {
    pub fn queries(&self) -> usize {
        self.per_query.len()
    }
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics.iter().position(|m| *m == metric).map(|i| self.mean[i])
    }
}

/// Evaluate a run against qrels (queries in both, as pytrec_eval does).
pub fn evaluate(qrels: &Qrels, run: &Run, metrics: &[Metric]) -> Evaluation {
    let mut per_query = BTreeMap::new();
    for (qid, docs) in run {
        let Some(judged) = qrels.get(qid) else { continue };
        if docs.is_empty() {
            continue;
        }
        let ranked = rank(docs);
        per_query.insert(qid.clone(), metrics.iter().map(|m| query_value(judged, &ranked, *m)).collect::<Vec<_>>());
    }
    let n = per_query.len().max(1) as f64;
    let mean = (0..metrics.len()).map(|i| per_query.values().map(|v: &Vec<f64>| v[i]).sum::<f64>() / n).collect();
    Evaluation { metrics: metrics.to_vec(), per_query, mean }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    #[test]
    fn rank_breaks_ties_by_doc_id_descending() {
        let docs = vec![("d10".to_string(), 0.5), ("d9".to_string(), 0.5), ("a".to_string(), 0.9)];
        let r: Vec<&str> = rank(&docs).into_iter().map(|(d, _)| d).collect();
        assert_eq!(r, vec!["a", "d9", "d10"]);
    }

    #[test]
    fn ndcg_uses_linear_gain() {
        // Relevant doc of gain 2 at rank 2, gain 1 at rank 1; ideal is 2 then 1.
        let j = judged(&[("a", 1), ("b", 2)]);
        let ranked = vec![("a", 0.9), ("b", 0.8)];
        let v = query_value(&j, &ranked, Metric::new(Measure::Ndcg, 10));
        let want = (1.0 + 2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((v - want).abs() < 1e-12, "{v} vs {want}");
    }
}
