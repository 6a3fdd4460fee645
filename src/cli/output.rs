//! Writing embeddings: JSON lines, one JSON document, or a NumPy .npy file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Serialize)]
struct Row<'a> {
    index: usize,
    embedding: &'a [f32],
}

pub fn jsonl(out: &mut impl Write, vectors: &[Vec<f32>]) -> Result<()> {
    for (index, v) in vectors.iter().enumerate() {
        serde_json::to_writer(&mut *out, &Row { index, embedding: v })?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn json(out: &mut impl Write, vectors: &[Vec<f32>], model: &str, tokens: usize) -> Result<()> {
    let data: Vec<Row> = vectors.iter().enumerate().map(|(index, v)| Row { index, embedding: v }).collect();
    let doc = serde_json::json!({ "model": model, "data": data, "usage": { "prompt_tokens": tokens, "total_tokens": tokens } });
    serde_json::to_writer(&mut *out, &doc)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A little-endian f32 .npy (format 1.0) of shape [n, dim], written to a temp file then renamed so
/// a failed run never leaves a partial file under the requested name.
pub fn npy(path: &Path, vectors: &[Vec<f32>]) -> Result<()> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", vectors.len(), dim);
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut buf = Vec::with_capacity(10 + header.len() + vectors.len() * dim * 4);
    buf.extend_from_slice(b"\x93NUMPY\x01\x00");
    buf.extend_from_slice(&(header.len() as u16).to_le_bytes());
    buf.extend_from_slice(header.as_bytes());
    for v in vectors {
        for x in v {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    let tmp = path.with_extension("npy.partial");
    std::fs::write(&tmp, &buf).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
