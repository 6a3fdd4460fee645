//! Latency summaries. Percentiles interpolate linearly between order statistics, as numpy's
//! default `percentile` does, so the peer scripts in bench/ compute the same numbers.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The `q`-th percentile (0..=100) of sorted values; None when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = (q.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Median of unsorted values; None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// Summarize request latencies; None when there are none.
pub fn summarize(latencies: &[Duration]) -> Option<Summary> {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(Summary {
        n: ms.len(),
        mean_ms: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        min_ms: *ms.first()?,
        p50_ms: percentile(&ms, 50.0)?,
        p95_ms: percentile(&ms, 95.0)?,
        p99_ms: percentile(&ms, 99.0)?,
        max_ms: *ms.last()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 95, 99]) == [3.0, 8.8, 9.76]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert!((percentile(&v, 95.0).unwrap() - 8.8).abs() < 1e-12);
        assert!((percentile(&v, 99.0).unwrap() - 9.76).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(10.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn median_of_unsorted() {
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_in_milliseconds() {
        let lat: Vec<Duration> = [4u64, 1, 3, 2, 10].iter().map(|&m| Duration::from_millis(m)).collect();
        let s = summarize(&lat).unwrap();
        assert_eq!(s.n, 5);
        assert!((s.mean_ms - 4.0).abs() < 1e-9);
        assert!((s.p50_ms - 3.0).abs() < 1e-9);
        assert!((s.p95_ms - 8.8).abs() < 1e-9);
        assert!((s.min_ms - 1.0).abs() < 1e-9 && (s.max_ms - 10.0).abs() < 1e-9);
        assert!(summarize(&[]).is_none());
    }
}
