//! The fuzz targets' bounded run for CI: every committed corpus input (fuzz/corpus/TARGET, seeds,
//! regressions and what the full runs kept) through the same entry points as `cargo fuzz`, then a
//! fixed number of seeded mutations of them. The full run is `scripts/fuzz.sh` (docs/serve.md
//! "Fuzzing"). A panic or a broken answer (5xx, non-JSON, an error not in OpenAI's shape) fails.

mod common;

use std::path::PathBuf;

use embedrank::fuzzing;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = common::repo_root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("corpus file"))).collect()
}

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e308",
    b"4294967296",
    b"\"model\":\"qwen3\",",
    b"\"model\":\"qwen3-rerank\",",
    b"\"truncate\":false,",
    b"\\u0000",
    b"\xf0\x9f\x98\x80",
    b"\xff",
    b"\n",
    b"=",
    b"\"inf\"",
    b"[[models]]\n",
    b"\"rope_type\":\"yarn\",",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if at < v.len() => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at..end);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            4 if at < v.len() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(end..end, piece);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
        }
    }
    v
}

fn run_target(target: &str, mutations: usize) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for (path, data) in &files {
        let r = std::panic::catch_unwind(|| fuzzing::run(target, data));
        assert!(r.is_ok(), "{target}: corpus input {} fails", path.display());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for i in 0..mutations {
        let (_, a) = &files[rng.below(files.len())];
        let (_, b) = &files[rng.below(files.len())];
        let input = mutate(&mut rng, a, b);
        let r = std::panic::catch_unwind(|| fuzzing::run(target, &input));
        assert!(r.is_ok(), "{target}: mutation {i} fails on input {:?}", String::from_utf8_lossy(&input));
    }
    eprintln!("{target}: {} corpus inputs and {mutations} mutations", files.len());
}

#[test]
fn request_bodies() {
    for (target, _) in fuzzing::ROUTES {
        run_target(target, 300);
    }
}

#[test]
fn serve_config() {
    run_target("serve_config", 5000);
}

#[test]
fn wanted_list() {
    run_target("wanted_list", 5000);
}

#[test]
fn safetensors() {
    run_target("safetensors", 5000);
}

#[test]
fn model_config() {
    run_target("model_config", 5000);
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    for t in fuzzing::targets() {
        let bin = common::repo_root().join("fuzz/fuzz_targets").join(format!("{t}.rs"));
        let src = std::fs::read_to_string(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(src.contains(&format!("run(\"{t}\"")), "{} does not run `{t}`", bin.display());
        assert!(!corpus(t).is_empty());
    }
}

#[test]
fn the_route_seeds_reach_the_models() {
    // A harness that answered every body with an early 4xx would fuzz nothing past the parser.
    for (target, route) in fuzzing::ROUTES {
        let seed = common::repo_root().join("fuzz/corpus").join(target).join("seed-00.json");
        let body = std::fs::read(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        let a = fuzzing::post(route, &body);
        assert_eq!(a.status, 200, "{target}: {}", String::from_utf8_lossy(&a.body));
    }
    let a = fuzzing::post("/v1/rerank", br#"{"query":"q","documents":["a","b"],"model":"qwen3-rerank"}"#);
    assert_eq!(a.status, 200, "Qwen3-Reranker: {}", String::from_utf8_lossy(&a.body));
    let a = fuzzing::post("/v1/embeddings", br#"{"input":"q","model":"qwen3","input_type":"query"}"#);
    assert_eq!(a.status, 200, "Qwen3 embedder: {}", String::from_utf8_lossy(&a.body));
}
