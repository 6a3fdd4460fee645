//! `embedrank eval`: metric code against pytrec_eval (tests/fixtures/beir_metrics.json, made by
//! scripts/reference/beir_metrics.py) and against hand-computed values; then the CLI end to end on a
//! tiny BEIR folder and STS file made here, with all-MiniLM-L6-v2 and a tiny cross-encoder built
//! from its weights (plumbing, not quality: nobody publishes an offline reranker we could use).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::eval_data::*;
use common::*;
use embedrank::eval::metrics::{self, Measure, Metric, Qrels, Run};

fn qrels_from(v: &serde_json::Value) -> Qrels {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(q, docs)| {
            let m: BTreeMap<String, i64> =
                docs.as_object().unwrap().iter().map(|(d, r)| (d.clone(), r.as_i64().unwrap())).collect();
            (q.clone(), m)
        })
        .collect()
}

fn run_from(v: &serde_json::Value) -> Run {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(q, docs)| {
            let l: Vec<(String, f64)> =
                docs.as_object().unwrap().iter().map(|(d, s)| (d.clone(), s.as_f64().unwrap())).collect();
            (q.clone(), l)
        })
        .collect()
}

#[test]
fn metrics_match_pytrec_eval() {
    let fx = fixture("beir_metrics.json");
    let qrels = qrels_from(&fx["qrels"]);
    let run = run_from(&fx["run"]);
    let ks: Vec<usize> = fx["ks"].as_array().unwrap().iter().map(|k| k.as_u64().unwrap() as usize).collect();
    let mut all = Vec::new();
    for m in [Measure::Ndcg, Measure::Map, Measure::Recall, Measure::Precision, Measure::Mrr] {
        for &k in &ks {
            all.push(Metric::new(m, k));
        }
    }
    let e = metrics::evaluate(&qrels, &run, &all);
    let want_queries = strings(&fx["evaluated_queries"]);
    let got_queries: Vec<String> = e.per_query.keys().cloned().collect();
    assert_eq!(got_queries, want_queries, "evaluated query set (qrels ∩ run)");
    let mut checked = 0;
    for (qid, want) in fx["per_query"].as_object().unwrap() {
        let got = &e.per_query[qid];
        for (i, m) in all.iter().enumerate() {
            let w = want[m.name()].as_f64().unwrap();
            assert!((got[i] - w).abs() < 1e-9, "{qid} {}: ours {} pytrec_eval {w}", m.name(), got[i]);
            checked += 1;
        }
    }
    assert_eq!(checked, want_queries.len() * all.len());
}

#[test]
fn metrics_by_hand_graded_and_no_relevant() {
    let j = |pairs: &[(&str, i64)]| pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect::<BTreeMap<_, _>>();
    let mut qrels = Qrels::new();
    qrels.insert("a".into(), j(&[("d1", 2), ("d2", 1), ("d3", 0)]));
    qrels.insert("b".into(), j(&[("d5", 0)])); // judged, nothing relevant: counts as 0
    qrels.insert("c".into(), j(&[("d1", 1)])); // not in the run: not evaluated
    let mut run = Run::new();
    run.insert("a".into(), vec![("d2".into(), 0.6), ("d3".into(), 0.9), ("d4".into(), 0.7), ("d1".into(), 0.8)]);
    run.insert("b".into(), vec![("d5".into(), 0.9), ("d6".into(), 0.1)]);
    run.insert("z".into(), vec![("d1".into(), 0.9)]); // no qrels: not evaluated
    let ms = [
        Metric::new(Measure::Ndcg, 10),
        Metric::new(Measure::Ndcg, 2),
        Metric::new(Measure::Recall, 2),
        Metric::new(Measure::Recall, 100),
        Metric::new(Measure::Mrr, 10),
        Metric::new(Measure::Mrr, 1),
        Metric::new(Measure::Map, 100),
    ];
    let e = metrics::evaluate(&qrels, &run, &ms);
    assert_eq!(e.queries(), 2);
    // Query a ranks d3 (0), d1 (2), d4 (unjudged), d2 (1).
    let dcg10 = 2.0 / 3f64.log2() + 1.0 / 5f64.log2();
    let idcg = 2.0 + 1.0 / 3f64.log2();
    let dcg2 = 2.0 / 3f64.log2();
    let a = &e.per_query["a"];
    let want_a = [dcg10 / idcg, dcg2 / idcg, 0.5, 1.0, 0.5, 0.0, (1.0 / 2.0 + 2.0 / 4.0) / 2.0];
    for (i, w) in want_a.iter().enumerate() {
        assert!((a[i] - w).abs() < 1e-12, "a {}: {} vs {w}", ms[i].name(), a[i]);
    }
    assert!(e.per_query["b"].iter().all(|&v| v == 0.0));
    for (i, w) in want_a.iter().enumerate() {
        assert!((e.mean[i] - w / 2.0).abs() < 1e-12, "mean {}", ms[i].name());
    }
}

// ---- CLI end to end ----

fn minilm_dir() -> std::path::PathBuf {
    let repo = test_hub().join("models--sentence-transformers--all-MiniLM-L6-v2");
    let commit = std::fs::read_to_string(repo.join("refs/main")).unwrap();
    repo.join("snapshots").join(commit.trim())
}

/// A BertForSequenceClassification folder: MiniLM's encoder and pooler, plus a fixed one-label
/// classifier in a second shard.
fn tiny_cross_encoder(dir: &Path) {
    use candle_core::{Device, Tensor};
    let src = minilm_dir();
    std::fs::create_dir_all(dir).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["num_labels"] = serde_json::json!(1);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    config["label2id"] = serde_json::json!({"LABEL_0": 0});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("encoder.safetensors")).unwrap();
    let h = 384usize;
    let w: Vec<f32> = (0..h).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect();
    let mut head = std::collections::HashMap::new();
    head.insert("classifier.weight".to_string(), Tensor::from_vec(w, (1, h), &Device::Cpu).unwrap());
    head.insert("classifier.bias".to_string(), Tensor::from_vec(vec![0.1f32], 1, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&head, dir.join("head.safetensors")).unwrap();
    let bytes = std::fs::read(dir.join("encoder.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map = serde_json::Map::new();
    for name in st.names() {
        map.insert(name.to_string(), serde_json::json!("encoder.safetensors"));
    }
    for name in head.keys() {
        map.insert(name.clone(), serde_json::json!("head.safetensors"));
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn eval_cmd(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embedrank"));
    c.arg("eval").arg("--cache-dir").arg(test_hub()).arg("--eval-cache").arg(cache).env("HF_HUB_OFFLINE", "1");
    c
}

fn run_json(c: &mut Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(out.status.success(), "eval failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn cli_eval_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tiny");
    let cache = tmp.path().join("cache");
    tiny_beir(&data);
    let sts = tmp.path().join("sts.csv");
    tiny_sts(&sts);

    let first =
        run_json(eval_cmd(&cache).args(["--model", MINILM, "--json", "--data"]).arg(&data).arg("--sts").arg(&sts));
    let r = &first["retrieval"];
    assert_eq!(r["queries"], 4, "test split has 4 judged queries");
    assert_eq!(r["documents"], 8);
    let row = &r["rows"][0];
    assert_eq!(row["corpus_cache"], "stored");
    assert_eq!(row["queries"], 4);
    let ndcg = row["metrics"]["ndcg@10"].as_f64().unwrap();
    let recall = row["metrics"]["recall@100"].as_f64().unwrap();
    assert!(ndcg > 0.9, "easy paraphrase queries should find their document: nDCG@10 {ndcg}");
    assert_eq!(recall, 1.0, "8 documents, depth 100: everything is retrieved");
    let sp = first["sts"]["rows"][0]["spearman"].as_f64().unwrap();
    assert!(sp > 0.8, "clearly graded STS pairs: Spearman {sp}");
    assert_eq!(first["sts"]["pairs"], 6);

    // Second run: corpus from the cache, same numbers.
    let second = run_json(eval_cmd(&cache).args(["--model", MINILM, "--json", "--data"]).arg(&data));
    let row2 = &second["retrieval"]["rows"][0];
    assert_eq!(row2["corpus_cache"], "hit");
    assert_eq!(row2["corpus_tokens"], 0);
    assert_eq!(row2["metrics"], row["metrics"]);
    // A different document prompt is a different cache entry.
    let third = run_json(
        eval_cmd(&cache).args(["--model", MINILM, "--json", "--document-prompt", "passage: ", "--data"]).arg(&data),
    );
    assert_eq!(third["retrieval"]["rows"][0]["corpus_cache"], "stored");

    // Reranked with a tiny cross-encoder, compared against the same model: both rows each, zero
    // differences.
    let ce = tmp.path().join("tiny-ce");
    tiny_cross_encoder(&ce);
    let v = run_json(
        eval_cmd(&cache)
            .args(["--model", MINILM, "--compare", MINILM, "--json", "--rerank-top", "3", "--reranker"])
            .arg(&ce)
            .arg("--data")
            .arg(&data),
    );
    let rows = v["retrieval"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows[0]["reranker"].is_null());
    assert_eq!(rows[1]["reranker"], "tiny-ce");
    assert_eq!(rows[1]["rerank_top"], 3);
    assert_eq!(rows[1]["queries"], 4);
    // Reranking only reorders the top 3: recall@3 cannot change, recall@5 is capped by it.
    assert_eq!(rows[1]["metrics"]["recall@3"], rows[0]["metrics"]["recall@3"]);
    assert_eq!(rows[1]["metrics"]["recall@5"], rows[0]["metrics"]["recall@3"]);
    for d in v["retrieval"]["differences"].as_array().unwrap() {
        for (_, x) in d["metrics"].as_object().unwrap() {
            assert_eq!(x.as_f64().unwrap(), 0.0);
        }
    }
}

#[test]
fn cli_eval_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tiny");
    tiny_beir(&data);
    let cache = tmp.path().join("cache");
    let fail = |c: &mut Command| -> String {
        let out = c.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    let e = fail(eval_cmd(&cache).args(["--model", MINILM, "--split", "dev", "--data"]).arg(&data));
    assert!(e.contains("splits here: test, train"), "{e}");
    let e = fail(eval_cmd(&cache).args(["--model", MINILM]));
    assert!(e.contains("--data"), "{e}");
    write(&data.join("qrels/bad.tsv"), "q1\tdoc-cat\t1\nq2\tdoc-rust\tyes\n");
    let e = fail(eval_cmd(&cache).args(["--model", MINILM, "--split", "bad", "--data"]).arg(&data));
    assert!(e.contains("line 2") && e.contains("not an integer"), "{e}");
    write(&data.join("qrels/unknown.tsv"), "q9\tdoc-cat\t1\n");
    let e = fail(eval_cmd(&cache).args(["--model", MINILM, "--split", "unknown", "--data"]).arg(&data));
    assert!(e.contains("q9") && e.contains("queries.jsonl"), "{e}");
    // An embedding model is not a reranker.
    let e = fail(eval_cmd(&cache).args(["--model", MINILM, "--reranker", MINILM, "--data"]).arg(&data));
    assert!(e.contains("not a reranker"), "{e}");
}

#[test]
fn cli_eval_subset_progress_lines_and_cache_key_with_kernel_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tiny");
    let cache = tmp.path().join("cache");
    tiny_beir(&data);
    // Two queries (q1, q2 by id) and three documents: the two judged ones and the corpus's first other.
    let out = eval_cmd(&cache)
        .args(["--model", MINILM, "--json", "--max-queries", "2", "--max-docs", "3", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["retrieval"]["queries"], 2, "{v}");
    assert_eq!(v["retrieval"]["documents"], 3, "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("subset"));
    // Off a terminal and without --json, progress is printed as lines (never silent).
    let out = eval_cmd(&cache).args(["--model", MINILM, "--no-cache", "--data"]).arg(&data).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("tokens"), "{err}");
    // The same model under another compute path does not reuse the cached vectors.
    let first = run_json(eval_cmd(&cache).args(["--model", MINILM, "--json", "--data"]).arg(&data));
    assert_eq!(first["retrieval"]["rows"][0]["corpus_cache"], "stored");
    let other = run_json(
        eval_cmd(&cache).env("EMBEDRANK_CPU_FAST", "0").args(["--model", MINILM, "--json", "--data"]).arg(&data),
    );
    assert_eq!(other["retrieval"]["rows"][0]["corpus_cache"], "stored", "vectors of the other path were reused");
    let again = run_json(eval_cmd(&cache).args(["--model", MINILM, "--json", "--data"]).arg(&data));
    assert_eq!(again["retrieval"]["rows"][0]["corpus_cache"], "hit");
}
