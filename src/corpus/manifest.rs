//! The job manifest: one JSON file per shard (`manifest-00001-of-00004.json`) that records which
//! input row ranges are done and in which part, the model's identity and the options. A rerun reads
//! it to continue; a different model or options is refused rather than mixed into the output.

use serde::{Deserialize, Serialize};

use super::input::InputOptions;
use super::store::{storage_err, Store};
use super::write::VectorType;
use crate::Result;

pub const VERSION: u32 = 1;

/// Everything that changes the vectors or which rows land in which part. Two runs may share an
/// output folder only when these are equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub model: String,
    pub repo_id: Option<String>,
    pub revision: Option<String>,
    pub config_sha256: String,
    /// Weight file names and sizes (not times: shards on other machines downloaded them later).
    pub weights: Vec<(String, u64)>,
    pub dtype: String,
    pub dimensions: usize,
    pub prompt: String,
    pub normalize: bool,
    pub max_length: usize,
    pub truncate: bool,
    pub vector_type: VectorType,
    pub part_rows: u64,
    pub inputs: Vec<String>,
    pub input: InputOptions,
}

impl Identity {
    /// The first field that differs, for a one-line refusal.
    pub fn difference(&self, other: &Identity) -> Option<String> {
        let a = serde_json::to_value(self).ok()?;
        let b = serde_json::to_value(other).ok()?;
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.iter()
            .find(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} is {} there, {} here", b.get(k).map(|x| x.to_string()).unwrap_or_default(), v))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    pub name: String,
    /// Rows in the file, once it has been read to the end.
    pub rows: Option<u64>,
}

/// One written part: rows `[first_row, end_row)` of input file `file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub file: usize,
    pub chunk: u64,
    pub first_row: u64,
    pub end_row: u64,
    /// Rows with a vector in the part (end_row - first_row minus skipped).
    pub rows: u64,
    /// Malformed rows skipped (`--on-error skip`), by 0-based row number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<u64>,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub shard: u32,
    pub shards: u32,
    pub identity: Identity,
    pub files: Vec<FileState>,
    pub parts: Vec<Part>,
    pub complete: bool,
}

pub fn name(shard: u32, shards: u32) -> String {
    format!("manifest-{shard:05}-of-{shards:05}.json")
}

pub fn is_manifest(name: &str) -> bool {
    name.starts_with("manifest-") && name.ends_with(".json")
}

/// Every shard manifest in the store.
pub fn load_all(store: &dyn Store) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for n in store.list()?.into_iter().filter(|n| is_manifest(n)) {
        let Some(bytes) = store.read(&n)? else { continue };
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| storage_err(store.describe(&n), format!("not a manifest this version can read: {e}")))?;
        if m.version != VERSION {
            return Err(storage_err(
                store.describe(&n),
                format!("manifest version {} (this build reads {VERSION})", m.version),
            ));
        }
        out.push(m);
    }
    Ok(out)
}

pub fn save(store: &dyn Store, m: &Manifest) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| storage_err("manifest", e))?;
    store.put(&name(m.shard, m.shards), &bytes)
}
