//! `embedrank serve` over real HTTP on loopback: every route, every error code, concurrency,
//! idle unloading, the memory budget, and graceful shutdown. Expected vectors and scores come from
//! the engine in-process (what `embedrank embed` / `rerank` print).

mod serve_common;

use std::time::Duration;

use base64::Engine as _;
use embedrank::engine::{EmbedOptions, Engine, EngineOptions, RerankOptions};
use embedrank::source::{self, CacheRoots, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides};
use serde_json::{json, Value};
use serve_common::*;

/// Within float noise of a different batch shape; vectors are unit length.
const TOL: f32 = 2e-5;

fn engine_for(reference: &str) -> Engine {
    let opts = ResolveOptions { roots: CacheRoots::new(vec![test_hub()]), offline: true };
    let r = source::resolve(reference, &opts).expect("resolve");
    Engine::load(ModelSpec::load(&r, &SpecOverrides::default()).expect("spec"), &EngineOptions::default())
        .expect("load")
}

fn expect_error(code: u16, body: &Value, want_code: u16, want: &str) {
    assert_eq!(code, want_code, "status; body: {body}");
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    assert!(e["type"].is_string(), "type in {body}");
    assert_eq!(e["code"], want, "code in {body}");
}

#[test]
fn openai_and_tei_embeddings_match_the_engine() {
    // A small token budget, so client batches are split into several forward passes.
    let srv = Server::start(&[
        "--model",
        MINILM,
        "--model",
        "mini=sentence-transformers/all-MiniLM-L6-v2",
        "--max-batch-tokens",
        "256",
    ]);
    let engine = engine_for(MINILM);
    let input = texts(5, 1);
    let want = engine.embed(&input, &EmbedOptions::default()).expect("embed");

    // float
    let (code, body) = srv.post("/v1/embeddings", &json!({"model": MINILM, "input": input, "user": "u1"}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MINILM);
    assert!(max_abs_diff(&openai_vectors(&body), &want.vectors) < TOL);
    assert_eq!(body["usage"]["prompt_tokens"].as_u64(), Some(want.tokens as u64));
    assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(want.tokens as u64));

    // base64 = little-endian f32 bytes, through the alias
    let (code, body) =
        srv.post("/v1/embeddings", &json!({"model": "mini", "input": input, "encoding_format": "base64"}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model"], "mini");
    let decoded: Vec<Vec<f32>> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            let bytes =
                base64::engine::general_purpose::STANDARD.decode(d["embedding"].as_str().expect("b64")).expect("b64");
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        })
        .collect();
    assert!(max_abs_diff(&decoded, &want.vectors) < TOL);

    // a single string
    let (code, body) = srv.post("/v1/embeddings", &json!({"input": input[0]}));
    assert_eq!(code, 200);
    assert!(max_abs_diff(&openai_vectors(&body), &want.vectors[..1]) < TOL);

    // Matryoshka dimensions: truncated then re-normalized
    let (code, body) = srv.post("/v1/embeddings", &json!({"input": input, "dimensions": 64}));
    assert_eq!(code, 200);
    let dims =
        engine.embed(&input, &EmbedOptions { dimensions: Some(64), ..Default::default() }).expect("embed").vectors;
    let got = openai_vectors(&body);
    assert_eq!(got[0].len(), 64);
    assert!(max_abs_diff(&got, &dims) < TOL);

    // Model token ids (int[] and int[][]) on TEI's /embed give the same vectors as the texts they
    // came from; /v1/embeddings reads ids as OpenAI's cl100k_base (token_ids = "openai", the default).
    let toks = engine.tokenize_texts(&input[..2], &EmbedOptions::default()).expect("tokenize");
    let ids: Vec<Vec<u32>> = toks.iter().map(|t| t.ids.clone()).collect();
    let (code, body) = srv.post("/embed", &json!({"inputs": ids}));
    assert_eq!(code, 200, "{body}");
    assert!(max_abs_diff(&vectors(&body), &want.vectors[..2]) < TOL);
    let (code, body) = srv.post("/embed", &json!({"inputs": ids[0]}));
    assert_eq!(code, 200, "{body}");
    assert!(max_abs_diff(&vectors(&body), &want.vectors[..1]) < TOL);
    let bpe = tiktoken_rs::cl100k_base().expect("cl100k");
    let openai_ids: Vec<Vec<u32>> = input[..2].iter().map(|t| bpe.encode_ordinary(t)).collect();
    let (code, body) = srv.post("/v1/embeddings", &json!({"input": openai_ids}));
    assert_eq!(code, 200, "{body}");
    assert!(max_abs_diff(&openai_vectors(&body), &want.vectors[..2]) < TOL);
    let (code, body) = srv.post("/v1/embeddings", &json!({"input": openai_ids[0]}));
    assert_eq!(code, 200, "{body}");
    assert!(max_abs_diff(&openai_vectors(&body), &want.vectors[..1]) < TOL);

    // input_type maps to the model's prompts; MiniLM has none, so query/document embed plainly
    for t in ["query", "document"] {
        let (code, body) = srv.post("/v1/embeddings", &json!({"input": input, "input_type": t}));
        assert_eq!(code, 200, "{body}");
        assert!(max_abs_diff(&openai_vectors(&body), &want.vectors) < TOL);
    }

    // TEI /embed: a list of vectors; normalize false gives the raw pooled vectors
    let (code, body) = srv.post("/embed", &json!({"inputs": input}));
    assert_eq!(code, 200, "{body}");
    assert!(max_abs_diff(&vectors(&body), &want.vectors) < TOL);
    let (code, body) = srv.post("/embed", &json!({"inputs": input[0], "normalize": false}));
    assert_eq!(code, 200, "{body}");
    let raw = engine
        .embed(&input[..1], &EmbedOptions { normalize: Some(false), ..Default::default() })
        .expect("embed")
        .vectors;
    assert!(max_abs_diff(&vectors(&body), &raw) < 1e-4);

    // A client batch far over the token budget is split by the server, not refused.
    let many = texts(40, 2);
    let (code, body) = srv.post("/v1/embeddings", &json!({"input": many}));
    assert_eq!(code, 200);
    let want_many = engine.embed(&many, &EmbedOptions::default()).expect("embed").vectors;
    assert!(max_abs_diff(&openai_vectors(&body), &want_many) < TOL);
}

#[test]
fn input_type_and_prompt_name_use_the_models_prompts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("prompted");
    make_prompted_embedder(&dir);
    let d = dir.to_str().expect("utf8");
    let srv = Server::start(&["--model", &format!("e5ish={d}")]);
    let engine = engine_for(d);
    let input = texts(3, 7);
    let with = |prompt: &str| {
        engine.embed(&input, &EmbedOptions { prompt: prompt.into(), ..Default::default() }).expect("embed").vectors
    };
    let (query, passage, plain) = (with("query: "), with("passage: "), with(""));
    assert!(max_abs_diff(&query, &plain) > 1e-3, "the prompt changes the vectors");
    for (body, want) in [
        (json!({"input": input, "input_type": "query"}), &query),
        (json!({"input": input, "input_type": "search_query"}), &query),
        (json!({"input": input, "input_type": "document"}), &passage),
        (json!({"input": input, "prompt_name": "document"}), &passage),
        (json!({"input": input}), &plain),
    ] {
        let (c, b) = srv.post("/v1/embeddings", &body);
        assert_eq!(c, 200, "{b}");
        assert!(max_abs_diff(&openai_vectors(&b), want) < TOL, "{body}");
    }
    let (c, b) = srv.post("/embed", &json!({"inputs": input, "prompt_name": "query"}));
    assert_eq!(c, 200, "{b}");
    assert!(max_abs_diff(&vectors(&b), &query) < TOL);
    // prompt tokens count in usage
    let (_, b) = srv.post("/v1/embeddings", &json!({"input": input, "input_type": "query"}));
    let (_, p) = srv.post("/v1/embeddings", &json!({"input": input}));
    assert!(b["usage"]["prompt_tokens"].as_u64() > p["usage"]["prompt_tokens"].as_u64());
    // MiniLM is not instruction-aware: an instruction is refused, not ignored
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": "x", "instruction": "Find papers"}));
    assert_eq!(c, 422, "{b}");
}

/// `serve --dtype int8`: /info names the dtype and the quantized models' default budget, and the
/// embeddings stay within cosine 0.999 of the float model's.
#[test]
fn serve_int8_reports_its_dtype_and_stays_close_to_f32() {
    let srv = Server::start(&["--model", MINILM, "--preload", "--dtype", "int8"]);
    srv.wait_for("ready", || srv.get("/ready").0 == 200);
    let (code, info) = srv.get("/info");
    assert_eq!(code, 200);
    assert_eq!(info["model_dtype"], "int8");
    assert_eq!(info["max_batch_tokens"], 1024);
    let input = json!({"input": ["a short query", "a longer passage about protein folding and heat shock"]});
    let (code, b) = srv.post("/v1/embeddings", &input);
    assert_eq!(code, 200, "{b}");
    let got = openai_vectors(&b);
    let texts = vec!["a short query".to_string(), "a longer passage about protein folding and heat shock".to_string()];
    let want = engine_for(MINILM).embed(&texts, &EmbedOptions::default()).unwrap().vectors;
    for (g, w) in got.iter().zip(&want) {
        let cos = common::cosine(g, w);
        assert!(cos >= 0.999, "int8 server vs f32 engine: cosine {cos}");
    }
    let f32_srv = Server::start(&["--model", MINILM, "--preload"]);
    f32_srv.wait_for("ready", || f32_srv.get("/ready").0 == 200);
    let (_, info) = f32_srv.get("/info");
    assert_eq!((info["model_dtype"].as_str(), info["max_batch_tokens"].as_u64()), (Some("f32"), Some(1024)));
}

#[test]
fn tei_tokenize_info_models_health_ready_metrics() {
    let srv = Server::start(&["--model", MINILM, "--preload"]);
    srv.wait_for("ready", || srv.get("/ready").0 == 200);
    let (code, body) = srv.post("/tokenize", &json!({"inputs": "hello world"}));
    assert_eq!(code, 200);
    let toks = body[0].as_array().expect("tokens");
    let ids: Vec<u64> = toks.iter().map(|t| t["id"].as_u64().expect("id")).collect();
    assert_eq!(ids, vec![101, 7592, 2088, 102]);
    assert_eq!(toks[0]["special"], true);
    assert_eq!(toks[1]["text"], "hello");
    assert_eq!((toks[2]["start"].as_u64(), toks[2]["stop"].as_u64()), (Some(6), Some(11)));
    let (code, body) = srv.post("/tokenize", &json!({"inputs": ["a", "b c"], "add_special_tokens": false}));
    assert_eq!(code, 200);
    assert_eq!(body[1].as_array().map(Vec::len), Some(2));

    let (code, info) = srv.get("/info");
    assert_eq!(code, 200);
    assert_eq!(info["model_id"], MINILM);
    assert_eq!(info["model_type"]["embedding"]["pooling"], "mean");
    assert_eq!(info["max_input_length"], 256);

    let (code, models) = srv.get("/v1/models");
    assert_eq!(code, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MINILM);
    assert_eq!(models["data"][0]["loaded"], true);

    assert_eq!(srv.get("/health"), (200, json!({"status": "ok"})));
    let (code, ready) = srv.get("/ready");
    assert_eq!(code, 200);
    assert_eq!(ready["loaded"][0], MINILM);

    let (code, _) = srv.post("/v1/embeddings", &json!({"input": ["x", "y"]}));
    assert_eq!(code, 200);
    let _ = srv.post("/v1/embeddings", &json!({"model": "nope", "input": "x"}));
    let m = srv.get_text("/metrics");
    for series in [
        "embedrank_requests_total{route=\"/v1/embeddings\",code=\"200\"} 1",
        "embedrank_errors_total{route=\"/v1/embeddings\",code=\"404\"} 1",
        "embedrank_queue_depth{model=\"sentence-transformers/all-MiniLM-L6-v2\"} 0",
        "embedrank_model_loaded{model=\"sentence-transformers/all-MiniLM-L6-v2\"} 1",
        "embedrank_batch_size_count{model=\"sentence-transformers/all-MiniLM-L6-v2\"} 1",
        "embedrank_batch_tokens_bucket",
        "embedrank_tokenization_duration_seconds_count",
        "embedrank_queue_duration_seconds_count",
        "embedrank_inference_duration_seconds_bucket",
        "embedrank_resident_memory_bytes ",
    ] {
        assert!(m.contains(series), "missing `{series}` in\n{m}");
    }
}

#[test]
fn rerank_routes_in_cohere_jina_and_tei_shapes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ce = tmp.path().join("tiny-cross-encoder");
    make_cross_encoder(&ce);
    let ce_s = ce.to_str().expect("utf8");
    let srv = Server::start(&["--model", &format!("reranker={ce_s}"), "--model", MINILM]);
    let engine = engine_for(ce_s);
    let query = "what is a vector search engine";
    let docs = texts(6, 3);
    let want = engine.rerank(query, &docs, &RerankOptions::default()).expect("rerank");
    assert!(want[0].relevance_score > want[5].relevance_score, "scores vary: {want:?}");
    let check = |results: &[Value], key: &str| {
        assert_eq!(results.len(), want.len());
        for (g, w) in results.iter().zip(&want) {
            assert_eq!(g["index"].as_u64(), Some(w.index as u64));
            assert!((g[key].as_f64().expect("score") as f32 - w.relevance_score).abs() < 1e-5);
        }
    };

    // Jina: documents echoed as {"text"} by default; usage.
    let (code, body) = srv.post("/v1/rerank", &json!({"model": "reranker", "query": query, "documents": docs}));
    assert_eq!(code, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    check(results, "relevance_score");
    assert_eq!(results[0]["document"]["text"], docs[want[0].index].as_str());
    assert!(body["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(body["model"], "reranker");

    // Cohere v1: documents as {"text": ...} objects, top_n, return_documents false.
    let objs: Vec<Value> = docs.iter().map(|d| json!({"text": d})).collect();
    let (code, body) = srv.post(
        "/v1/rerank",
        &json!({"model": "reranker", "query": query, "documents": objs, "top_n": 2, "return_documents": false}),
    );
    assert_eq!(code, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert!(results[0].get("document").is_none());
    assert_eq!(results[0]["index"].as_u64(), Some(want[0].index as u64));

    // Cohere v2: no documents unless asked; meta.api_version; max_tokens_per_doc cuts documents.
    let (code, body) = srv.post("/v2/rerank", &json!({"model": "reranker", "query": query, "documents": docs}));
    assert_eq!(code, 200, "{body}");
    check(body["results"].as_array().expect("results"), "relevance_score");
    assert!(body["results"][0].get("document").is_none());
    assert_eq!(body["meta"]["api_version"]["version"], "2");
    assert!(body["id"].is_string());
    let (code, body) = srv.post(
        "/v2/rerank",
        &json!({"model": "reranker", "query": query, "documents": docs, "max_tokens_per_doc": 3, "return_documents": true}),
    );
    assert_eq!(code, 200, "{body}");
    let mut tok = tokenizers::Tokenizer::from_file(ce.join("tokenizer.json")).expect("tokenizer");
    tok.with_padding(None); // the file pads to a fixed length; padding offsets are (0, 0)
    let cut: Vec<String> = docs
        .iter()
        .map(|d| {
            let enc = tok.encode(d.as_str(), false).expect("encode");
            let end = enc.get_offsets().get(2).map_or(d.len(), |o| o.1);
            d[..end].to_string()
        })
        .collect();
    let want_cut = engine.rerank(query, &cut, &RerankOptions::default()).expect("rerank");
    for (g, w) in body["results"].as_array().expect("results").iter().zip(&want_cut) {
        assert_eq!(g["index"].as_u64(), Some(w.index as u64));
        let got = g["relevance_score"].as_f64().expect("s") as f32;
        assert!((got - w.relevance_score).abs() < 1e-5, "{got} vs {w:?} (cut: {cut:?})");
        // the echoed document is the original, not the cut
        assert_eq!(g["document"]["text"], docs[w.index].as_str());
    }

    // TEI /rerank without a model name: the first reranker answers; `score`, `text` on request.
    let (code, body) = srv.post("/rerank", &json!({"query": query, "texts": docs, "return_text": true}));
    assert_eq!(code, 200, "{body}");
    let results = body.as_array().expect("list");
    check(results, "score");
    assert_eq!(results[0]["text"], docs[want[0].index].as_str());
    let (code, body) = srv.post("/rerank", &json!({"query": query, "texts": docs, "raw_scores": true}));
    assert_eq!(code, 200);
    let raw = engine.rerank(query, &docs, &RerankOptions { raw_scores: true, ..Default::default() }).expect("raw");
    assert!((body[0]["score"].as_f64().expect("s") as f32 - raw[0].relevance_score).abs() < 1e-4);

    // /info for the reranker
    let (code, info) = srv.get("/info?model=reranker");
    assert_eq!(code, 200);
    assert!(info["model_type"]["reranker"].is_object());
}

#[test]
fn every_error_code_has_an_openai_style_body() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ce = tmp.path().join("ce");
    make_cross_encoder(&ce);
    let broken = tmp.path().join("broken");
    make_broken_model(&broken);
    let srv = Server::start(&[
        "--model",
        MINILM,
        "--model",
        &format!("ce={}", ce.display()),
        "--model",
        &format!("broken={}", broken.display()),
        "--payload-limit",
        "4KB",
    ]);
    let embed = |b: Value| srv.post("/v1/embeddings", &b);

    // 400 malformed
    let (c, b) = srv.post_raw("/v1/embeddings", "{\"input\": ");
    expect_error(c, &b, 400, "malformed_request");
    let (c, b) = embed(json!({"input": [1, "mixed"]}));
    expect_error(c, &b, 400, "malformed_request");
    let (c, b) = embed(json!({"model": MINILM}));
    expect_error(c, &b, 400, "malformed_request");
    let (c, b) = srv.post("/v1/rerank", &json!({"model": "ce", "documents": ["a"]}));
    expect_error(c, &b, 400, "malformed_request");
    // an embedder asked to rerank
    let (c, b) = srv.post("/v1/rerank", &json!({"model": MINILM, "query": "q", "documents": ["a"]}));
    expect_error(c, &b, 400, "model_task_mismatch");

    // 404 unknown model, unknown route
    let (c, b) = embed(json!({"model": "gpt-4", "input": "x"}));
    expect_error(c, &b, 404, "model_not_found");
    let (c, b) = srv.get("/v1/nothing");
    expect_error(c, &b, 404, "not_found");

    // 413 payload too large; input over the max length with truncation off
    let (c, b) = embed(json!({"input": "word ".repeat(2000)}));
    expect_error(c, &b, 413, "payload_too_large");
    let long = "word ".repeat(400);
    let (c, b) = embed(json!({"input": long, "truncate": false}));
    expect_error(c, &b, 413, "input_too_long");
    let (c, _) = embed(json!({"input": long}));
    assert_eq!(c, 200, "truncation is on by default");
    let (c, b) = srv.post("/embed", &json!({"inputs": long, "truncate": false}));
    expect_error(c, &b, 413, "input_too_long");

    // 422 invalid values
    for (body, what) in [
        (json!({"input": "x", "dimensions": 4096}), "dimensions too large"),
        (json!({"input": "x", "dimensions": 0}), "dimensions zero"),
        (json!({"input": []}), "empty input"),
        (json!({"input": "x", "encoding_format": "int8"}), "encoding_format"),
        (json!({"input": [[999999]]}), "token id outside vocabulary"),
        (json!({"input": "x", "input_type": "sideways"}), "input_type"),
        (json!({"input": "x", "prompt_name": "nope"}), "unknown prompt"),
    ] {
        let (c, b) = embed(body);
        assert_eq!(c, 422, "{what}: {b}");
        expect_error(c, &b, 422, "invalid_value");
    }
    for body in [
        json!({"model": "ce", "query": "q", "documents": ["a"], "top_n": 0}),
        json!({"model": "ce", "query": "q", "documents": []}),
        json!({"model": "ce", "query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
    ] {
        let (c, b) = srv.post("/v2/rerank", &body);
        expect_error(c, &b, 422, "invalid_value");
    }
    let (c, b) = srv.post("/embed", &json!({"inputs": "x", "truncation_direction": "middle"}));
    expect_error(c, &b, 422, "invalid_value");

    // 503: a configured model whose weights cannot be loaded
    let (c, b) = embed(json!({"model": "broken", "input": "x"}));
    expect_error(c, &b, 503, "model_load_failed");

    // 405 with a JSON body too
    let (c, b) = srv.get("/v1/embeddings");
    expect_error(c, &b, 405, "method_not_allowed");
    // nothing above was a 5xx except the broken model
    assert_eq!(srv.metric("embedrank_requests_total{route=\"/v1/embeddings\",code=\"500\"}"), 0.0);
}

#[test]
fn api_keys_cors_and_public_health() {
    let srv = Server::start_env(
        &["--model", MINILM, "--api-key", "k-one", "--cors-origin", "https://app.example"],
        &[("EMBEDRANK_API_KEY", "k-two,k-three")],
    );
    let body = json!({"input": "x"});
    let (c, b) = srv.post("/v1/embeddings", &body);
    expect_error(c, &b, 401, "invalid_api_key");
    let (c, b) = srv.post_with("/v1/embeddings", &body, Some("wrong"));
    expect_error(c, &b, 401, "invalid_api_key");
    for key in ["k-one", "k-two", "k-three"] {
        assert_eq!(srv.post_with("/v1/embeddings", &body, Some(key)).0, 200, "key {key}");
    }
    let (c, b) = srv.get("/v1/models");
    expect_error(c, &b, 401, "invalid_api_key");
    assert_eq!(srv.get("/health").0, 200, "health is public");
    assert!(srv.get_text("/metrics").contains("embedrank_requests_total"), "metrics are public");
    // CORS preflight needs no key and allows the configured origin only
    let pre = ureq::request("OPTIONS", &srv.url("/v1/embeddings"))
        .set("Origin", "https://app.example")
        .set("Access-Control-Request-Method", "POST")
        .call()
        .expect("preflight");
    assert_eq!(pre.header("access-control-allow-origin"), Some("https://app.example"));

    let locked = Server::start(&["--model", MINILM, "--api-key", "k", "--protect-health"]);
    let (c, b) = locked.get("/health");
    expect_error(c, &b, 401, "invalid_api_key");
    let ok = ureq::get(&locked.url("/metrics")).set("Authorization", "Bearer k").call().expect("metrics with key");
    assert_eq!(ok.status(), 200);
}

#[test]
fn ready_is_503_until_requested_models_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broken = tmp.path().join("broken");
    make_broken_model(&broken);
    let srv = Server::start(&["--model", MINILM, "--model", &format!("broken={}", broken.display()), "--preload"]);
    assert_eq!(srv.get("/health").0, 200);
    // The good model loads; the broken one never does, so the server never becomes ready.
    srv.wait_for("minilm loaded", || srv.metric("embedrank_model_loaded{model=\"sentence-transformers") == 1.0);
    std::thread::sleep(Duration::from_millis(300));
    let (c, b) = srv.get("/ready");
    expect_error(c, &b, 503, "not_ready");
    assert!(b["error"]["message"].as_str().is_some_and(|m| m.contains("broken")));
}

#[test]
fn overload_gives_429_with_retry_after() {
    let srv = Server::start(&[
        "--model",
        MINILM,
        "--max-queue",
        "1",
        "--max-batch-tokens",
        "64",
        "--request-timeout",
        "600s",
    ]);
    let big = texts(300, 4);
    let base = srv.base.clone();
    let t = std::thread::spawn(move || {
        answer(ureq::post(&format!("{base}/v1/embeddings")).send_json(json!({"input": big}))).0
    });
    srv.wait_for("queue depth 1", || srv.metric("embedrank_queue_depth{model=") >= 1.0);
    let r = ureq::post(&srv.url("/v1/embeddings")).send_json(json!({"input": "x"}));
    match r {
        Err(ureq::Error::Status(429, resp)) => {
            assert_eq!(resp.header("retry-after"), Some("1"));
            let b: Value = resp.into_json().expect("json");
            assert_eq!(b["error"]["code"], "queue_full");
        }
        other => panic!("expected 429, got {:?}", other.map(|r| r.status())),
    }
    assert_eq!(t.join().expect("join"), 200);
    assert_eq!(srv.post("/v1/embeddings", &json!({"input": "x"})).0, 200, "accepted again once drained");
}

#[test]
fn timed_out_requests_are_dropped_before_compute() {
    let srv = Server::start(&["--model", MINILM, "--request-timeout", "1s", "--preload", "--max-batch-tokens", "64"]);
    // loaded first, so the timeout is about compute, not loading
    srv.wait_for("ready", || srv.get("/ready").0 == 200);
    let base = srv.base.clone();
    let big = texts(1500, 5);
    let first = std::thread::spawn(move || {
        answer(ureq::post(&format!("{base}/v1/embeddings")).send_json(json!({"input": big})))
    });
    srv.wait_for("big request queued", || srv.metric("embedrank_queue_depth{model=") >= 1.0);
    let (c, b) = srv.post("/v1/embeddings", &json!({"input": texts(1000, 6)}));
    expect_error(c, &b, 504, "request_timeout");
    let (c, b) = first.join().expect("join");
    expect_error(c, &b, 504, "request_timeout");
    srv.wait_for("dropped counted", || srv.metric("embedrank_dropped_requests_total") >= 1.0);
    srv.wait_for("queue drained", || srv.metric("embedrank_queue_depth{model=") == 0.0);
}

#[test]
fn small_requests_are_not_stuck_behind_a_big_one_and_gone_clients_get_no_compute() {
    // A queue of many seconds (a quarter of the request timeout): the gone client's request must be
    // admitted beside the big one on a slow, loaded machine, not refused with a 429.
    let srv =
        Server::start(&["--model", MINILM, "--preload", "--max-batch-tokens", "64", "--request-timeout", "6000s"]);
    srv.wait_for("ready", || srv.get("/ready").0 == 200);
    let base = srv.base.clone();
    let big = std::thread::spawn(move || {
        answer(ureq::post(&format!("{base}/v1/embeddings")).send_json(json!({"input": texts(400, 8)}))).0
    });
    srv.wait_for("big request queued", || srv.metric("embedrank_queue_depth{model=") >= 1.0);
    let (c, _) = srv.post("/v1/embeddings", &json!({"input": "a small request"}));
    assert_eq!(c, 200);
    assert!(!big.is_finished(), "the small request was answered while the big one still runs");

    // A client that hangs up: its request is dropped at the next step, not computed to the end.
    // Long texts: quick to tokenize, far more compute (~150k tokens) than 3 s allow.
    let long: Vec<String> = (0..600).map(|i| format!("{i} {}", "searching vectors ".repeat(130))).collect();
    let gone = ureq::post(&srv.url("/v1/embeddings")).timeout(Duration::from_secs(3)).send_json(json!({"input": long}));
    assert!(matches!(gone, Err(ureq::Error::Transport(_))), "client timed out: {:?}", gone.map(|r| r.status()));
    srv.wait_for("dropped counted", || srv.metric("embedrank_dropped_requests_total") >= 1.0);
    assert_eq!(big.join().expect("join"), 200);
}

#[test]
fn concurrent_mixed_clients_get_the_same_answers_as_alone() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ce = tmp.path().join("ce");
    make_cross_encoder(&ce);
    let srv = Server::start(&[
        "--model",
        MINILM,
        "--model",
        "mini2=sentence-transformers/all-MiniLM-L6-v2",
        "--model",
        &format!("ce={}", ce.display()),
    ]);
    // Requests: mixed models, routes and sizes.
    let mut reqs: Vec<(&str, Value)> = Vec::new();
    for i in 0..24 {
        let n = [1, 2, 5, 12][i % 4];
        let t = texts(n, i);
        reqs.push(match i % 3 {
            0 => ("/v1/embeddings", json!({"model": MINILM, "input": t})),
            1 => ("/v1/embeddings", json!({"model": "mini2", "input": t, "dimensions": 128})),
            _ => ("/v1/rerank", json!({"model": "ce", "query": format!("query {i}"), "documents": t})),
        });
    }
    // Each alone first.
    let alone: Vec<Value> = reqs
        .iter()
        .map(|(p, b)| {
            let (c, body) = srv.post(p, b);
            assert_eq!(c, 200, "{body}");
            body
        })
        .collect();
    // Then all at once, from 12 client threads.
    let base = srv.base.clone();
    let reqs = std::sync::Arc::new(reqs);
    let handles: Vec<_> = (0..12)
        .map(|t| {
            let reqs = reqs.clone();
            let base = base.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for k in 0..2 {
                    let i = (t * 2 + k) % reqs.len();
                    let (p, b) = &reqs[i];
                    let (c, body) = answer(ureq::post(&format!("{base}{p}")).send_json(b.clone()));
                    out.push((i, c, body));
                }
                out
            })
        })
        .collect();
    for h in handles {
        for (i, c, body) in h.join().expect("join") {
            assert_eq!(c, 200, "request {i}: {body}");
            let a = &alone[i];
            if reqs[i].0 == "/v1/rerank" {
                let (ra, rb) = (a["results"].as_array().expect("r"), body["results"].as_array().expect("r"));
                assert_eq!(ra.len(), rb.len());
                for (x, y) in ra.iter().zip(rb) {
                    assert_eq!(x["index"], y["index"], "request {i}: same order");
                    let d =
                        (x["relevance_score"].as_f64().expect("s") - y["relevance_score"].as_f64().expect("s")).abs();
                    assert!(d < 1e-5, "request {i}: score differs by {d}");
                }
            } else {
                let d = max_abs_diff(&openai_vectors(a), &openai_vectors(&body));
                assert!(d < TOL, "request {i}: vectors differ by {d}");
                assert_eq!(a["usage"], body["usage"]);
            }
        }
    }
    let m = srv.get_text("/metrics");
    assert!(!m.lines().any(|l| l.starts_with("embedrank_requests_total") && l.contains("code=\"5")), "no 5xx:\n{m}");
}

#[test]
fn idle_models_unload_and_the_memory_budget_evicts_least_recently_used() {
    // keep_alive: unloaded after 1s idle, loaded again on demand
    let srv = Server::start(&["--model", MINILM, "--keep-alive", "1s"]);
    assert_eq!(srv.post("/v1/embeddings", &json!({"input": "x"})).0, 200);
    assert_eq!(srv.get("/v1/models").1["data"][0]["loaded"], true);
    srv.wait_for("idle unload", || srv.get("/v1/models").1["data"][0]["loaded"] == false);
    assert_eq!(srv.metric("embedrank_model_unloads_total{model="), 1.0);
    assert_eq!(srv.post("/v1/embeddings", &json!({"input": "x"})).0, 200);
    assert_eq!(srv.metric("embedrank_model_loads_total{model="), 2.0);
    drop(srv);

    // budget for one MiniLM (~90 MB) but not two
    let srv = Server::start(&[
        "--model",
        "a=sentence-transformers/all-MiniLM-L6-v2",
        "--model",
        "b=sentence-transformers/all-MiniLM-L6-v2",
        "--model",
        "c=sentence-transformers/all-MiniLM-L6-v2",
        "--memory-budget",
        "200MB",
    ]);
    let loaded = |srv: &Server| -> Vec<bool> {
        srv.get("/v1/models").1["data"].as_array().expect("data").iter().map(|m| m["loaded"] == true).collect()
    };
    for m in ["a", "b"] {
        assert_eq!(srv.post("/v1/embeddings", &json!({"model": m, "input": "x"})).0, 200);
    }
    assert_eq!(loaded(&srv), vec![true, true, false]);
    // touch a, so b is the least recently used when c needs room
    assert_eq!(srv.post("/v1/embeddings", &json!({"model": "a", "input": "x"})).0, 200);
    assert_eq!(srv.post("/v1/embeddings", &json!({"model": "c", "input": "x"})).0, 200);
    assert_eq!(loaded(&srv), vec![true, false, true]);
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    // Small forward passes, so the requests stay in flight long enough to be caught there.
    // A long request timeout: on a loaded machine these take a while, and a 504 is not the point here.
    let mut srv = Server::start(&["--model", MINILM, "--max-batch-tokens", "64", "--request-timeout", "600s"]);
    assert_eq!(srv.post("/v1/embeddings", &json!({"input": "warm up"})).0, 200);
    let base = srv.base.clone();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let (c, body) =
                    answer(ureq::post(&format!("{base}/v1/embeddings")).send_json(json!({"input": texts(30, i)})));
                (c, body["data"].as_array().map(Vec::len))
            })
        })
        .collect();
    // All six inside the server: a connection whose request the server has not read yet is closed
    // at shutdown by design (as an idle one), which on a loaded machine is a race this test must not run.
    srv.wait_for("requests in flight", || srv.metric("embedrank_queue_depth{model=") >= 6.0);
    let status = std::process::Command::new("kill").arg("-TERM").arg(srv.pid().to_string()).status().expect("kill");
    assert!(status.success());
    for h in handles {
        assert_eq!(h.join().expect("join"), (200, Some(30)), "in-flight request answered in full");
    }
    let t0 = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = srv.child.try_wait().expect("wait") {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(ureq::get(&srv.url("/health")).call().is_err(), "new connections refused after shutdown");
}
