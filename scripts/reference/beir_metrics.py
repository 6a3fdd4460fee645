#!/usr/bin/env python3
"""Reference retrieval metrics for the Rust metric code (tests/eval_metrics.rs), written to
tests/fixtures/beir_metrics.json.

A small synthetic run and qrels (graded relevance 0-3, a negative judgment, queries with no relevant
document, a qrels query missing from the run, a run query missing from the qrels, tied scores whose
order depends on the doc-id tie-break, runs shorter than the cutoffs) scored by pytrec_eval (the
trec_eval code BEIR and MTEB call) for ndcg_cut, map_cut, recall and P, and by MTEB's own MRR@k
(mteb._evaluators.retrieval_metrics.mrr, which ties by doc id as trec_eval does).

Needs: pip install pytrec-eval-terrier mteb (mteb only for its mrr function; --no-deps is enough if
pandas, scikit-learn are present — otherwise the copy of its loop below is used and said so).
"""
import json
import os
import random

import pytrec_eval

KS = [1, 3, 5, 10, 100]


def mteb_mrr(qrels, results, k_values):
    """MTEB 2.x mrr(): rank by (score, doc id) descending, first doc with rel > 0."""
    out = {f"MRR@{k}": [] for k in k_values}
    k_max = max(k_values)
    for qid, doc_scores in results.items():
        top = sorted(doc_scores.items(), key=lambda it: (it[1], it[0]), reverse=True)[:k_max]
        relevant = {d for d, r in qrels[qid].items() if r > 0}
        for k in k_values:
            rr = 0.0
            for rank, (doc, _) in enumerate(top[:k]):
                if doc in relevant:
                    rr = 1.0 / (rank + 1)
                    break
            out[f"MRR@{k}"].append(rr)
    return out


try:
    from mteb._evaluators.retrieval_metrics import mrr as mrr_impl

    mrr_source = "mteb._evaluators.retrieval_metrics.mrr"
except Exception:  # pragma: no cover - mteb's import pulls heavy deps
    mrr_impl = mteb_mrr
    mrr_source = "copy of MTEB 2.x mrr() in this script"

rng = random.Random(7)
docs = [f"d{i}" for i in range(40)]
qrels = {}
results = {}
for q in range(16):
    qid = f"q{q}"
    judged = rng.sample(docs, rng.randint(1, 8))
    qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
    n = rng.choice([3, 8, 15, 40])
    ret = rng.sample(docs, n)
    # Scores rounded to one decimal so ties are common and the doc-id tie-break decides order.
    results[qid] = {d: round(rng.random(), 1) for d in ret}
# Queries whose judgments are all non-relevant (and one negative judgment, which trec_eval treats
# as "in pool, unjudged").
qrels["q_zero"] = {"d1": 0, "d2": 0}
results["q_zero"] = {"d1": 0.9, "d2": 0.8, "d3": 0.7}
qrels["q_neg"] = {"d1": -1, "d2": 2, "d10": 1}
results["q_neg"] = {"d1": 0.9, "d10": 0.5, "d2": 0.5, "d3": 0.5}
# All tied: order is doc id descending as strings ("d9" > "d30" > "d3" > "d10").
qrels["q_tie"] = {"d10": 1, "d3": 2}
results["q_tie"] = {"d10": 0.5, "d3": 0.5, "d30": 0.5, "d9": 0.5}
# In qrels but not in the run (not evaluated by pytrec_eval), and the reverse.
qrels["q_norun"] = {"d1": 1}
results["q_noqrels"] = {"d1": 1.0}

measures = {
    "ndcg_cut." + ",".join(map(str, KS)),
    "map_cut." + ",".join(map(str, KS)),
    "recall." + ",".join(map(str, KS)),
    "P." + ",".join(map(str, KS)),
}
scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(results)
mrr_results = {q: r for q, r in results.items() if q in qrels}
mrr = mrr_impl(qrels, mrr_results, KS)
per_query = {}
for i, qid in enumerate(mrr_results):
    row = {}
    for k in KS:
        row[f"ndcg@{k}"] = scores[qid][f"ndcg_cut_{k}"]
        row[f"map@{k}"] = scores[qid][f"map_cut_{k}"]
        row[f"recall@{k}"] = scores[qid][f"recall_{k}"]
        row[f"precision@{k}"] = scores[qid][f"P_{k}"]
        row[f"mrr@{k}"] = mrr[f"MRR@{k}"][i]
    per_query[qid] = row
out = {
    "source": f"pytrec_eval {getattr(pytrec_eval, '__version__', '?')} (trec_eval), MRR from {mrr_source}",
    "ks": KS,
    "qrels": qrels,
    "run": results,
    "evaluated_queries": sorted(scores),
    "per_query": per_query,
}
root = os.path.join(os.path.dirname(__file__), "..", "..")
path = os.path.join(root, "tests", "fixtures", "beir_metrics.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
print(f"wrote {path}: {len(per_query)} evaluated queries ({mrr_source})")
