//! Sentence-similarity sets (STS-B layout) and the correlations MTEB reports for them: Spearman and
//! Pearson between cosine(emb1, emb2) and the gold score.
//!
//! STS-B files are TAB-separated: genre, file, year, id, score, sentence1, sentence2, and on some
//! lines two more source fields. Sentences contain double quotes, so no CSV quoting is applied
//! (a quoting reader merges lines). A plain `sentence1 <TAB> sentence2 <TAB> score` file is read too.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct StsSet {
    pub path: PathBuf,
    pub pairs: Vec<(String, String)>,
    pub scores: Vec<f64>,
}

pub fn load(path: &Path) -> Result<StsSet> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let err =
        |line: usize, m: String| Error::EvalData { path: path.to_path_buf(), message: format!("line {line}: {m}") };
    let mut pairs = Vec::new();
    let mut scores = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = raw.split('\t').collect();
        let (score, s1, s2) = match cols.len() {
            n if n >= 7 => (cols[4], cols[5], cols[6]),
            3 => (cols[2], cols[0], cols[1]),
            n => {
                let want = "the STS-B layout (7+ tab-separated fields) or `s1<TAB>s2<TAB>score`";
                return Err(err(line, format!("expected {want}, found {n} fields")));
            }
        };
        let score: f64 = match score.trim().parse() {
            Ok(s) => s,
            Err(_) if line == 1 && cols.len() == 3 => continue, // a header line
            Err(_) => return Err(err(line, format!("score `{score}` is not a number"))),
        };
        if !score.is_finite() {
            return Err(err(line, format!("score `{score}` is not finite")));
        }
        pairs.push((s1.to_string(), s2.to_string()));
        scores.push(score);
    }
    if pairs.len() < 2 {
        return Err(Error::EvalData { path: path.to_path_buf(), message: "fewer than 2 sentence pairs".into() });
    }
    Ok(StsSet { path: path.to_path_buf(), pairs, scores })
}

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// Ranks from 1, ties given their average rank (scipy.stats.rankdata's default).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            out[o] = avg;
        }
        i = j + 1;
    }
    out
}

/// Spearman rank correlation (Pearson of average ranks, as scipy.stats.spearmanr).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

pub use crate::engine::pool::cosine;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
    }

    #[test]
    fn spearman_and_pearson_by_hand() {
        // scipy: spearmanr([1,2,3,4,5],[5,6,7,8,7]) = 0.8207826816681233
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [5.0, 6.0, 7.0, 8.0, 7.0];
        assert!((spearman(&x, &y) - 0.8207826816681233).abs() < 1e-12);
        // pearsonr(x, y) = 0.8320502943378436
        assert!((pearson(&x, &y) - 0.8320502943378436).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0; 5]), 0.0);
    }
}
