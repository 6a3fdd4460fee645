//! Which weight files a model folder has: one model.safetensors, or the shards named by
//! model.safetensors.index.json.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Error, Result};

pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::config(&index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::config(&index, "missing weight_map"))?;
        let files: BTreeSet<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
        let mut out = Vec::new();
        for f in files {
            if f.contains("..") || f.starts_with('/') {
                return Err(Error::config(&index, format!("bad shard name `{f}`")));
            }
            let p = dir.join(&f);
            if !p.exists() {
                return Err(Error::MissingFile {
                    path: p,
                    what: format!("weight shard listed in {}", index.display()),
                });
            }
            out.push(p);
        }
        if out.is_empty() {
            return Err(Error::config(&index, "weight_map is empty"));
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if !found.is_empty() {
        return Ok(found);
    }
    let what = if dir.join("pytorch_model.bin").exists() {
        "model.safetensors (only pytorch_model.bin is here; safetensors weights are required)"
    } else {
        "model.safetensors"
    };
    Err(Error::MissingFile { path: dir.join("model.safetensors"), what: what.into() })
}

/// Size and modification time of one weight file: with the commit, what identifies the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightStamp {
    pub name: String,
    pub bytes: u64,
    pub mtime_ns: u128,
}

pub fn stamps(files: &[PathBuf]) -> Result<Vec<WeightStamp>> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(WeightStamp { name, bytes: meta.len(), mtime_ns })
        })
        .collect()
}
