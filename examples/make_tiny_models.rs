//! Write the tiny golden-test models: `cargo run --example make_tiny_models -- OUT QWEN3_TOKENIZER_DIR MINILM_DIR`.
//! Used by scripts/reference/tiny_golden.py so the Python reference runs on the very same files.

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [out, tok, minilm] = a.as_slice() else {
        anyhow::bail!("usage: make_tiny_models OUT QWEN3_TOKENIZER_DIR MINILM_DIR");
    };
    embedrank::synth::tiny::write_all(out.as_ref(), tok.as_ref(), minilm.as_ref())?;
    println!("{out}");
    Ok(())
}
