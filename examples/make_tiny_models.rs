//! Write the tiny golden-test models: `cargo run --example make_tiny_models -- OUT QWEN3_TOKENIZER_DIR MINILM_DIR`.
//! Used by scripts/reference/tiny_golden.py so the Python reference runs on the very same files.
//!
//! `make_tiny_models --minilm-shape-cross-encoder OUT MINILM_DIR` writes a cross-encoder of
//! ms-marco-MiniLM-L6-v2's shape (random weights) for the load and latency scripts.

use embedrank::synth::tiny;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    match a.as_slice() {
        [flag, out, minilm] if flag == "--minilm-shape-cross-encoder" => {
            tiny::write_bert_cross_encoder(out.as_ref(), minilm.as_ref(), tiny::MINILM_SHAPE_CROSS_ENCODER)?;
            println!("{out}");
        }
        [out, tok, minilm] => {
            tiny::write_all(out.as_ref(), tok.as_ref(), minilm.as_ref())?;
            println!("{out}");
        }
        _ => anyhow::bail!(
            "usage: make_tiny_models OUT QWEN3_TOKENIZER_DIR MINILM_DIR | --minilm-shape-cross-encoder OUT MINILM_DIR"
        ),
    }
    Ok(())
}
