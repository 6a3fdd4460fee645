//! On-disk cache of corpus embeddings, so a second evaluation of the same model on the same corpus
//! only embeds the queries.
//!
//! One file per key: `<dir>/<sha256 of the key fields>.emb`. The key covers everything that changes
//! the vectors: model name, revision, config.json bytes (its quantization entry), weight file sizes
//! and mtimes, dtype and device kind, pooling, max length, document prompt, our version, and the
//! corpus file's sha256. Files are written to a temporary name in the same folder and renamed, so a
//! crash never leaves a partial file under the final name; a file whose header or length does not
//! match is ignored (and overwritten), never trusted.
//!
//! Layout (little-endian): `ERCACHE1`, u32 header length, JSON header {key, rows, dim, fields},
//! then rows × dim f32.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"ERCACHE1";

/// The folder: `EMBEDRANK_EVAL_CACHE`, else `<user cache dir>/embedrank/eval`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("EMBEDRANK_EVAL_CACHE") {
        return Some(PathBuf::from(d));
    }
    dirs::cache_dir().map(|d| d.join("embedrank").join("eval"))
}

/// What the cached vectors depend on, as named fields (kept in the file header for inspection).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CacheKey {
    pub fields: Vec<(String, String)>,
}

impl CacheKey {
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.fields.push((name.to_string(), value.into()));
    }
    /// Hex sha256 over the fields (name and value, length-prefixed so no two lists collide).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.fields {
            for s in [k, v] {
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
        super::beir::hex(&h.finalize())
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    rows: usize,
    dim: usize,
    fields: Vec<(String, String)>,
}

pub fn path_for(dir: &Path, key: &CacheKey) -> PathBuf {
    dir.join(format!("{}.emb", key.digest()))
}

/// Cached vectors for `key`, if a complete file with `rows` rows is there. A damaged or mismatched
/// file is reported and treated as absent.
pub fn load(dir: &Path, key: &CacheKey, rows: usize) -> Option<Vec<Vec<f32>>> {
    let path = path_for(dir, key);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "corpus cache unreadable ({e}); embedding again");
            return None;
        }
    };
    match parse(&bytes, &key.digest(), rows) {
        Ok(v) => Some(v),
        Err(why) => {
            tracing::warn!(path = %path.display(), "corpus cache ignored ({why}); embedding again");
            None
        }
    }
}

fn parse(bytes: &[u8], digest: &str, rows: usize) -> std::result::Result<Vec<Vec<f32>>, String> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("not an embedrank cache file".into());
    }
    let hlen = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let body = 12usize.checked_add(hlen).filter(|&e| e <= bytes.len()).ok_or("truncated header")?;
    let header: Header = serde_json::from_slice(&bytes[12..body]).map_err(|e| format!("bad header: {e}"))?;
    if header.key != digest {
        return Err("key mismatch".into());
    }
    if header.rows != rows {
        return Err(format!("{} rows, expected {rows}", header.rows));
    }
    let want = header.rows.checked_mul(header.dim).and_then(|n| n.checked_mul(4)).ok_or("size overflow")?;
    if bytes.len() - body != want {
        return Err(format!("{} data bytes, expected {want} (incomplete file)", bytes.len() - body));
    }
    if header.dim == 0 {
        return Err("zero dimensions".into());
    }
    let data = &bytes[body..];
    Ok(data
        .chunks_exact(header.dim * 4)
        .map(|row| row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        .collect())
}

/// Write the vectors under `key`, atomically (temporary file in `dir`, then rename).
pub fn store(dir: &Path, key: &CacheKey, vectors: &[Vec<f32>]) -> Result<PathBuf> {
    let dim = vectors.first().map_or(0, Vec::len);
    if vectors.iter().any(|v| v.len() != dim) {
        return Err(Error::InvalidInput("corpus vectors of different lengths".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let header = Header { key: key.digest(), rows: vectors.len(), dim, fields: key.fields.clone() };
    let hjson = serde_json::to_vec(&header).map_err(|e| Error::InvalidInput(format!("cache header: {e}")))?;
    let mut buf = Vec::with_capacity(12 + hjson.len() + vectors.len() * dim * 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(hjson.len() as u32).to_le_bytes());
    buf.extend_from_slice(&hjson);
    for v in vectors {
        for x in v {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    let path = path_for(dir, key);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(&buf).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut key = CacheKey::default();
        key.push("model", "m");
        let v = vec![vec![1.0f32, -2.5, 3.0], vec![0.0, 0.5, 1e-7]];
        let p = store(dir.path(), &key, &v).unwrap();
        assert_eq!(load(dir.path(), &key, 2), Some(v.clone()));
        // Wrong row count (another corpus) or another key: a miss.
        assert_eq!(load(dir.path(), &key, 3), None);
        let mut other = key.clone();
        other.push("prompt", "x");
        assert_eq!(load(dir.path(), &other, 2), None);
        // A truncated file is never trusted.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(load(dir.path(), &key, 2), None);
    }
}
