//! Exact dense search: every query against every document (a matrix product in blocks), keeping the
//! top k per query. No index, no approximation: the numbers are the model's, not a search
//! structure's.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::{Error, Result};

/// Documents scored per matrix product (bounds memory at queries × block scores).
const DOC_BLOCK: usize = 16384;
/// Queries per matrix product.
const QUERY_BLOCK: usize = 1024;

/// For each query, the best `k` documents as (index into `doc_ids`, dot product), best first.
/// Order and the cut at k follow trec_eval: score descending, ties by doc id descending, so the
/// kept set is exactly the one pytrec_eval would rank on top. Vectors are expected L2-normalized,
/// making the dot product the cosine.
pub fn top_k(queries: &[Vec<f32>], docs: &[Vec<f32>], doc_ids: &[String], k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    if docs.len() != doc_ids.len() {
        return Err(Error::InvalidInput(format!("{} vectors for {} documents", docs.len(), doc_ids.len())));
    }
    let dim = docs.first().map_or(0, Vec::len);
    if queries.iter().chain(docs).any(|v| v.len() != dim) || dim == 0 {
        return Err(Error::InvalidInput("query and document vectors differ in width".into()));
    }
    let k = k.min(docs.len());
    let better = |a: &(usize, f32), b: &(usize, f32)| {
        b.1.total_cmp(&a.1).then_with(|| doc_ids[b.0].as_bytes().cmp(doc_ids[a.0].as_bytes()))
    };
    let dev = Device::Cpu;
    let mut best: Vec<Vec<(usize, f32)>> = vec![Vec::with_capacity(2 * k); queries.len()];
    for (qb, qchunk) in queries.chunks(QUERY_BLOCK).enumerate() {
        let q = Tensor::from_vec(qchunk.concat(), (qchunk.len(), dim), &dev)?;
        for (db, dchunk) in docs.chunks(DOC_BLOCK).enumerate() {
            let d = Tensor::from_vec(dchunk.concat(), (dchunk.len(), dim), &dev)?;
            let scores: Vec<Vec<f32>> = q.matmul(&d.t()?.contiguous()?)?.to_vec2()?;
            let base = db * DOC_BLOCK;
            best[qb * QUERY_BLOCK..qb * QUERY_BLOCK + qchunk.len()].par_iter_mut().zip(scores).for_each(
                |(kept, row)| {
                    kept.extend(row.into_iter().enumerate().map(|(i, s)| (base + i, s)));
                    if kept.len() > k {
                        kept.select_nth_unstable_by(k, better);
                        kept.truncate(k);
                    }
                },
            );
        }
    }
    best.par_iter_mut().for_each(|kept| kept.sort_by(better));
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_top_k_with_id_tie_break() {
        let docs = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 0.0], vec![0.6, 0.8]];
        let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = vec![vec![1.0, 0.0]];
        let hits = top_k(&q, &docs, &ids, 2).unwrap();
        // a and c tie at 1.0; trec_eval puts the larger id first.
        assert_eq!(hits[0].iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 0]);
        let all = top_k(&q, &docs, &ids, 10).unwrap();
        assert_eq!(all[0].iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 0, 3, 1]);
    }
}
