//! Length-sorted batching under a padded-token budget, and padding into tensors.

use candle_core::{DType, Device, Tensor};

use super::tokenize::Tokens;
use crate::model::Batch;
use crate::spec::{ModelSpec, PaddingSide};
use crate::Result;

/// Group input indices into batches: longest first, so rows of a batch have similar lengths; each
/// batch holds at most `max_rows` rows and at most `max_tokens` padded tokens.
pub fn plan(toks: &[Tokens], max_rows: Option<usize>, max_tokens: usize) -> Vec<Vec<usize>> {
    plan_with(toks, max_rows, max_tokens, usize::MAX)
}

/// [`plan`], but a row shorter than `1 / max_pad` of its batch's longest row starts a new batch, and
/// the batches come shortest first: the server's order, where a short request waiting beside a
/// long one should neither be padded to the long one's width nor wait for its pass.
pub fn plan_shortest_first(toks: &[Tokens], max_tokens: usize, max_pad: usize) -> Vec<Vec<usize>> {
    let mut out = plan_with(toks, None, max_tokens, max_pad.max(1));
    out.reverse();
    out
}

fn plan_with(toks: &[Tokens], max_rows: Option<usize>, max_tokens: usize, max_pad: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..toks.len()).collect();
    order.sort_by(|&a, &b| toks[b].len().cmp(&toks[a].len()).then(a.cmp(&b)));
    let max_rows = max_rows.unwrap_or(usize::MAX).max(1);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut cur_len = 0usize;
    for idx in order {
        let len = toks[idx].len().max(1);
        let width = cur_len.max(len);
        let too_short = len.saturating_mul(max_pad) < width;
        if !cur.is_empty() && (cur.len() + 1 > max_rows || width * (cur.len() + 1) > max_tokens || too_short) {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        cur_len = cur_len.max(len);
        cur.push(idx);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Pad the chosen rows into a [`Batch`] on `device`.
pub fn build(toks: &[Tokens], rows: &[usize], spec: &ModelSpec, device: &Device, dtype: DType) -> Result<Batch> {
    let pad_id = pad_id(spec);
    let longest = rows.iter().map(|&i| toks[i].len()).max().unwrap_or(1).max(1);
    // On CUDA a multiple of 8 keeps every row of the [.., l, l] attention matrices 16-byte aligned, which
    // cuBLAS's fastest bf16 kernels need; the extra pad tokens are masked like any other.
    let l = match longest.next_multiple_of(8) {
        l8 if device.is_cuda() && l8 <= spec.max_length => l8,
        _ => longest,
    };
    let b = rows.len();
    let left = spec.padding_side == PaddingSide::Left;
    let mut ids = vec![pad_id; b * l];
    let mut types = vec![0u32; b * l];
    let mut mask = vec![0f32; b * l];
    let mut lengths = Vec::with_capacity(b);
    for (r, &i) in rows.iter().enumerate() {
        let t = &toks[i];
        let n = t.len();
        let start = if left { l - n } else { 0 };
        let base = r * l + start;
        ids[base..base + n].copy_from_slice(&t.ids);
        types[base..base + n].copy_from_slice(&t.type_ids);
        mask[base..base + n].iter_mut().for_each(|m| *m = 1.0);
        lengths.push(n);
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, l), device)?,
        type_ids: Tensor::from_vec(types, (b, l), device)?,
        mask: Tensor::from_vec(mask, (b, l), device)?.to_dtype(dtype)?,
        lengths,
        left_padded: left,
    })
}

fn pad_id(spec: &ModelSpec) -> u32 {
    match &spec.arch {
        crate::spec::Arch::Bert(c) => c.pad_token_id as u32,
        crate::spec::Arch::Qwen3(c) => c.pad_token_id.or(spec.append_eos).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: usize) -> Tokens {
        Tokens { ids: vec![1; n], type_ids: vec![0; n] }
    }

    #[test]
    fn plan_sorts_and_respects_budgets() {
        let toks = vec![t(3), t(10), t(5), t(10), t(1)];
        let p = plan(&toks, Some(2), 1000);
        assert_eq!(p, vec![vec![1, 3], vec![2, 0], vec![4]]);
        // token budget 20: two rows of 10 fit, a third would need 30
        let p = plan(&toks, None, 20);
        assert_eq!(p, vec![vec![1, 3], vec![2, 0, 4]]);
        // every index appears exactly once even with a tiny budget
        let p = plan(&toks, None, 1);
        let mut all: Vec<usize> = p.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn shortest_first_keeps_short_rows_out_of_long_batches() {
        // One 512-token row beside short ones: the short rows go first, in their own batch.
        let toks = vec![t(512), t(10), t(12), t(200), t(512)];
        assert_eq!(plan_shortest_first(&toks, 1024, 4), vec![vec![2, 1], vec![3], vec![0, 4]]);
        // Rows within the ratio stay together, as `plan` has them, shortest batch first.
        let toks = vec![t(100), t(90), t(30), t(80)];
        assert_eq!(plan_shortest_first(&toks, 1000, 4), vec![vec![0, 1, 3, 2]]);
        assert_eq!(plan(&toks, None, 1000), vec![vec![0, 1, 3, 2]]);
        let toks = vec![t(100), t(20), t(30), t(80)];
        assert_eq!(plan_shortest_first(&toks, 1000, 4), vec![vec![1], vec![0, 3, 2]]);
    }
}
