//! Bounded tokenization gives the ids the tokenizer gives the whole text: texts cut by characters
//! before tokenizing, the cross-encoder query tokenized once and paired by ids, the Qwen3-Reranker
//! head (instruction + query) tokenized once. Each is checked against the tokenizers crate run the
//! unbounded way (what embedrank did before), on texts chosen to stress the seams and truncation.

mod common;

use common::{offline_opts, tiny_dir, MINILM};
use embedrank::engine::tokenize::{cut_chars, cut_chars_start, longest_first, TextTokenizer, Truncation};
use embedrank::engine::{Engine, EngineOptions, RerankOptions};
use embedrank::source;
use embedrank::spec::{ModelSpec, SpecOverrides};
use embedrank::Error;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

fn spec_at(reference: &str, max_length: usize) -> ModelSpec {
    let r = source::resolve(reference, &offline_opts()).expect("resolve");
    ModelSpec::load(&r, &SpecOverrides { max_length: Some(max_length), ..Default::default() }).expect("spec")
}

fn raw_tokenizer(spec: &ModelSpec, max_length: Option<usize>) -> Tokenizer {
    let mut t = Tokenizer::from_file(&spec.tokenizer_file).expect("tokenizer");
    t.with_padding(None);
    let trunc = max_length.map(|m| TruncationParams {
        max_length: m,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    });
    t.with_truncation(trunc).expect("truncation");
    t
}

fn words(n: usize, seed: usize) -> String {
    let w = ["search", "embedding", "naïve", "東京", "x", "re-ranking", "a", "lorem", "ipsum", "tokenization", "!!"];
    (0..n).map(|i| w[(i * 7 + seed) % w.len()]).collect::<Vec<_>>().join(" ")
}

/// Texts around every length boundary of a `max`-token window, plus the awkward ones.
fn samples(max: usize) -> Vec<String> {
    let mut v: Vec<String> = [0, 1, 2, 5, max / 2 - 1, max / 2, max / 2 + 1, max - 3, max, max + 1, 2 * max, 5 * max]
        .iter()
        .enumerate()
        .map(|(i, &n)| words(n, i))
        .collect();
    v.extend(
        [
            "",
            " ",
            "  leading spaces",
            "\nnewline first",
            "!punct",
            ":colon",
            "emoji 😀😀 end",
            "[SEP][SEP] literal specials [CLS]",
            "日本語のテキスト",
            "tab\tsep",
        ]
        .map(String::from),
    );
    v
}

fn encoding(n: usize) -> tokenizers::Encoding {
    tokenizers::Encoding::new(
        vec![1; n],
        vec![0; n],
        vec![String::new(); n],
        vec![None; n],
        vec![(0, 0); n],
        vec![0; n],
        vec![1; n],
        vec![],
        Default::default(),
    )
}

#[test]
fn longest_first_matches_the_tokenizers_crate() {
    let sizes = [0usize, 1, 3, 4, 5, 8, 30, 31, 60, 61, 62, 100];
    for max in [0usize, 1, 2, 7, 8, 61] {
        let params = TruncationParams {
            max_length: max,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        for na in sizes {
            for nb in sizes {
                let (x, y) =
                    tokenizers::utils::truncation::truncate_encodings(encoding(na), Some(encoding(nb)), &params)
                        .expect("truncate");
                let y = y.expect("pair");
                assert_eq!(longest_first(na, nb, max), (x.len(), y.len()), "na {na} nb {nb} max {max}");
            }
        }
    }
}

#[test]
fn cross_encoder_pairs_match_whole_pair_encoding() {
    for max in [256usize, 64, 63] {
        let spec = spec_at(MINILM, max);
        let ours = TextTokenizer::load(&spec).expect("load");
        let theirs = raw_tokenizer(&spec, Some(max));
        let texts = samples(max);
        for q in &texts {
            let pairs: Vec<(String, String)> = texts.iter().map(|d| (q.clone(), d.clone())).collect();
            let want = theirs.encode_batch(pairs, true).expect("encode");
            let got = ours.encode_pairs(q, &texts, true).expect("pairs");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.ids, w.get_ids(), "max {max}, query of {} bytes, doc {i}", q.len());
                assert_eq!(g.type_ids, w.get_type_ids(), "max {max}, type ids, doc {i}");
            }
        }
        // Truncation off: the same ids where the pair fits, the same refusal where it does not.
        let short: Vec<String> = texts.iter().filter(|t| t.len() < 40).cloned().collect();
        let got = ours.encode_pairs("a short query", &short, false).expect("fits");
        let want = raw_tokenizer(&spec, None)
            .encode_batch(short.iter().map(|d| ("a short query".to_string(), d.clone())).collect::<Vec<_>>(), true)
            .expect("encode");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.ids, w.get_ids());
        }
        let err = ours.encode_pairs(&words(5 * max, 1), &short, false).expect_err("query fills the window");
        assert!(matches!(err, Error::PromptTooLong { what: "query", .. }), "{err}");
    }
}

#[test]
fn texts_cut_by_characters_keep_their_tokens() {
    let spec = spec_at(MINILM, 256);
    let ours = TextTokenizer::load(&spec).expect("load");
    let theirs = raw_tokenizer(&spec, Some(256));
    // Ordinary text of 2 MB: the first 256 tokens come from its first few hundred characters.
    let big = words(400_000, 3);
    assert!(big.len() > 2_000_000);
    let mut texts = samples(256);
    texts.push(big.clone());
    for prompt in ["", "query: "] {
        let got = ours.encode_texts(&texts, prompt, Truncation::End).expect("encode");
        for (i, (g, t)) in got.iter().zip(&texts).enumerate() {
            let w = theirs.encode(format!("{prompt}{t}"), true).expect("encode");
            assert_eq!(g.ids, w.get_ids(), "prompt {prompt:?}, text {i}");
        }
    }
    // The cut is at a character boundary and keeps exactly `limit` characters.
    let limit = ours.char_limit();
    assert_eq!(limit, 16 * 256);
    let cut = cut_chars(&big, limit);
    assert_eq!(cut.chars().count(), limit);
    assert!(big.starts_with(cut));
    assert_eq!(cut_chars("東京東京", 3), "東京東");
    // Truncation off: a text beyond the cut is refused by characters, before tokenizing.
    let err = ours.encode_texts(&[big], "", Truncation::Refuse).expect_err("too long");
    assert!(matches!(err, Error::TextTooLong { index: 0, .. }), "{err}");
    // A prompt that leaves no room for the text is refused, not silently kept alone.
    let err = ours.encode_texts(&["text".into()], &words(300, 1), Truncation::End).expect_err("prompt too long");
    assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
    let err =
        ours.encode_texts(&["text".into()], &"x".repeat(3_000_000), Truncation::End).expect_err("prompt too long");
    assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
    let err = ours.encode_texts(&["text".into()], &words(300, 1), Truncation::Start).expect_err("prompt too long");
    assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
}

/// Truncation at the start (Cohere's `truncate: START`, TEI's `truncation_direction: left`) keeps
/// the end of the text: the tokenizers crate's left truncation without a prompt; with one, the
/// prompt stays whole and the text's first tokens go.
#[test]
fn texts_truncated_at_the_start_keep_their_end() {
    let spec = spec_at(MINILM, 256);
    let ours = TextTokenizer::load(&spec).expect("load");
    let mut left = raw_tokenizer(&spec, None);
    left.with_truncation(Some(TruncationParams {
        max_length: 256,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Left,
    }))
    .expect("truncation");
    let whole = raw_tokenizer(&spec, None);
    let big = words(400_000, 5);
    let mut texts = samples(256);
    texts.push(big.clone());
    let got = ours.encode_texts(&texts, "", Truncation::Start).expect("encode");
    let mut cut_some = 0;
    for (i, (g, t)) in got.iter().zip(&texts).enumerate() {
        let w = left.encode(t.as_str(), true).expect("encode");
        assert_eq!(g.ids, w.get_ids(), "text {i}");
        assert!(g.len() <= 256);
        cut_some += (whole.encode(t.as_str(), true).expect("encode").len() > 256) as usize;
    }
    assert!(cut_some >= 4, "the samples must include texts that are cut ({cut_some})");
    let prompt = "query: ";
    let p = whole.encode(prompt, false).expect("encode").len();
    let got = ours.encode_texts(&texts, prompt, Truncation::Start).expect("encode");
    for (i, (g, t)) in got.iter().zip(&texts).enumerate() {
        let w = whole.encode(format!("{prompt}{}", cut_chars_start(t, ours.char_limit())), true).expect("encode");
        let w = w.get_ids();
        let want: Vec<u32> = if w.len() <= 256 {
            w.to_vec()
        } else {
            w[..1 + p].iter().chain(&w[w.len() - (256 - 1 - p)..]).copied().collect()
        };
        assert_eq!(g.ids, want, "prompt, text {i}");
        assert_eq!(&g.ids[1..1 + p.min(g.len() - 2)], &w[1..1 + p.min(g.len() - 2)], "the prompt stays");
    }
    // The character cut keeps the end, at a character boundary.
    let cut = cut_chars_start(&big, ours.char_limit());
    assert_eq!(cut.chars().count(), ours.char_limit());
    assert!(big.ends_with(cut));
    assert_eq!(cut_chars_start("東京東京", 3), "京東京");
    assert_eq!(cut_chars_start("abc", 0), "");
    assert_eq!(cut_chars_start("abc", 5), "abc");
}

/// The body ids of the Qwen3-Reranker template the way embedrank built them before: every
/// (instruction, query, document) body tokenized whole, then cut at the end.
fn qwen3_reference(tok: &Tokenizer, spec: &ModelSpec, instr: &str, query: &str, docs: &[String]) -> Vec<Vec<u32>> {
    let tpl = spec.rerank_template.as_ref().expect("template");
    let prefix = tok.encode(tpl.prefix.as_str(), false).unwrap().get_ids().to_vec();
    let suffix = tok.encode(tpl.suffix.as_str(), false).unwrap().get_ids().to_vec();
    let budget = spec.max_length - prefix.len() - suffix.len();
    docs.iter()
        .map(|d| {
            let mut e = tok.encode(tpl.body(instr, query, d), false).unwrap();
            e.truncate(budget, 0, TruncationDirection::Right);
            prefix.iter().chain(e.get_ids()).chain(&suffix).copied().collect()
        })
        .collect()
}

#[test]
fn qwen3_reranker_bodies_match_whole_body_encoding() {
    let dir = tiny_dir().join(embedrank::synth::tiny::QWEN3_RERANKER);
    let max = 96;
    let spec = spec_at(dir.to_str().expect("utf-8 path"), max);
    let tok = raw_tokenizer(&spec, None);
    let engine = Engine::load(spec.clone(), &EngineOptions::default()).expect("load");
    let docs = samples(max);
    for (instr, query) in [(None, "what is a reranker?"), (Some("Find code"), " spaced: query "), (None, "")] {
        let opts = RerankOptions { instruction: instr.map(String::from), ..Default::default() };
        let got = embedrank::engine::rerank::tokenize_pairs(&engine, query, &docs, &opts).expect("pairs");
        let default = spec.rerank_template.as_ref().expect("template").default_instruction.clone();
        let want = qwen3_reference(&tok, &spec, instr.unwrap_or(&default), query, &docs);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(&g.ids, w, "instruction {instr:?}, query {query:?}, doc {i} {:?}", docs[i]);
        }
    }
    // A query that leaves no room for the document: 422-class error, not identical scores.
    let err = embedrank::engine::rerank::tokenize_pairs(&engine, &words(200, 2), &docs, &RerankOptions::default())
        .expect_err("query too long");
    assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
    let err = embedrank::engine::rerank::tokenize_pairs(&engine, &"q".repeat(2_000_000), &docs, &Default::default())
        .expect_err("query too long");
    assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
}
