//! Loading a BEIR-format folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
//!
//! Documents are `title + " " + text`, stripped, or the stripped text when the title is empty or
//! absent — what BEIR's SentenceBERT wrapper and MTEB's `_corpus_to_dict` both feed the model.
//! Queries are those of the split's qrels (BEIR's loader keeps exactly those), sorted by id.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::metrics::Qrels;
use crate::{Error, Result};

/// The documents, in file order.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub ids: Vec<String>,
    /// Title and text joined as BEIR/MTEB do.
    pub texts: Vec<String>,
    /// sha256 of corpus.jsonl's bytes (hex): part of the embedding cache key.
    pub sha256: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct BeirSet {
    pub dir: PathBuf,
    pub split: String,
    pub corpus: Corpus,
    /// (query id, text) of the queries judged in this split, sorted by id.
    pub queries: Vec<(String, String)>,
    pub qrels: Qrels,
    /// Judged doc ids that are not in the corpus (they can never be retrieved).
    pub missing_docs: usize,
}

impl BeirSet {
    /// The first `max_queries` queries (by id) and a corpus of every document judged for them plus the
    /// corpus's first documents, up to `max_docs` in all (never fewer than the judged ones). The
    /// subset's corpus fingerprint covers the chosen ids, so cached vectors never mix with the full set's.
    pub fn subset(&self, max_queries: Option<u64>, max_docs: Option<u64>) -> BeirSet {
        let nq = max_queries.map_or(self.queries.len(), |n| (n as usize).min(self.queries.len()));
        let queries: Vec<(String, String)> = self.queries[..nq].to_vec();
        let qrels: Qrels =
            queries.iter().filter_map(|(q, _)| self.qrels.get(q).map(|r| (q.clone(), r.clone()))).collect();
        let judged: HashSet<&str> = qrels.values().flat_map(|r| r.keys().map(String::as_str)).collect();
        let limit = max_docs.map_or(usize::MAX, |m| m as usize);
        let mut keep: Vec<bool> = self.corpus.ids.iter().map(|id| judged.contains(id.as_str())).collect();
        let mut n = keep.iter().filter(|k| **k).count();
        for k in keep.iter_mut() {
            if n >= limit {
                break;
            }
            if !*k {
                *k = true;
                n += 1;
            }
        }
        let (mut ids, mut texts) = (Vec::new(), Vec::new());
        let mut hasher = Sha256::new();
        hasher.update(self.corpus.sha256.as_bytes());
        for (i, k) in keep.iter().enumerate() {
            if *k {
                hasher.update(b"\n");
                hasher.update(self.corpus.ids[i].as_bytes());
                ids.push(self.corpus.ids[i].clone());
                texts.push(self.corpus.texts[i].clone());
            }
        }
        let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let present: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let missing_docs = judged.iter().filter(|d| !present.contains(**d)).count();
        BeirSet {
            dir: self.dir.clone(),
            split: self.split.clone(),
            corpus: Corpus { ids, texts, sha256, path: self.corpus.path.clone() },
            queries,
            qrels,
            missing_docs,
        }
    }
}

fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::EvalData { path: path.to_path_buf(), message: message.into() }
}

/// An `_id` field: a string, or a number written without quotes (some exports do that).
fn id_field(v: &Value, path: &Path, line: usize) -> Result<String> {
    match v.get("_id") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(data_err(path, format!("line {line}: `_id` must be a string"))),
        None => Err(data_err(path, format!("line {line}: missing `_id`"))),
    }
}

fn str_field<'a>(v: &'a Value, key: &str, path: &Path, line: usize) -> Result<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(data_err(path, format!("line {line}: `{key}` must be a string"))),
    }
}

/// Read JSON lines, calling `f(line_number, value)` for each non-blank line; hashes the bytes.
fn read_jsonl(path: &Path, mut f: impl FnMut(usize, Value) -> Result<()>) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        hasher.update(&buf);
        let text = std::str::from_utf8(&buf).map_err(|_| data_err(path, format!("line {line}: not UTF-8")))?;
        if text.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| data_err(path, format!("line {line}: not a JSON object: {e}")))?;
        if !v.is_object() {
            return Err(data_err(path, format!("line {line}: not a JSON object")));
        }
        f(line, v)?;
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// BEIR's document text: `(title + " " + text).strip()`, or `text.strip()` without a title.
pub fn join_title(title: Option<&str>, text: &str) -> String {
    match title {
        Some(t) if !t.is_empty() => format!("{t} {text}").trim().to_string(),
        _ => text.trim().to_string(),
    }
}

pub fn load_corpus(path: &Path) -> Result<Corpus> {
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    let mut seen = HashSet::new();
    let sha256 = read_jsonl(path, |line, v| {
        let id = id_field(&v, path, line)?;
        let title = str_field(&v, "title", path, line)?;
        let text =
            str_field(&v, "text", path, line)?.ok_or_else(|| data_err(path, format!("line {line}: missing `text`")))?;
        if !seen.insert(id.clone()) {
            return Err(data_err(path, format!("line {line}: duplicate document id `{id}`")));
        }
        ids.push(id);
        texts.push(join_title(title, text));
        Ok(())
    })?;
    if ids.is_empty() {
        return Err(data_err(path, "no documents"));
    }
    Ok(Corpus { ids, texts, sha256, path: path.to_path_buf() })
}

fn load_queries(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    read_jsonl(path, |line, v| {
        let id = id_field(&v, path, line)?;
        let text =
            str_field(&v, "text", path, line)?.ok_or_else(|| data_err(path, format!("line {line}: missing `text`")))?;
        if out.insert(id.clone(), text.to_string()).is_some() {
            return Err(data_err(path, format!("line {line}: duplicate query id `{id}`")));
        }
        Ok(())
    })?;
    Ok(out)
}

/// `query-id <TAB> corpus-id <TAB> score`, with or without BEIR's header line.
pub fn load_qrels(path: &Path) -> Result<Qrels> {
    let mut text = String::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(|e| Error::io(path, e))?;
    let mut qrels = Qrels::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = raw.split('\t').collect();
        if cols.len() != 3 {
            return Err(data_err(
                path,
                format!(
                    "line {line}: expected 3 tab-separated columns (query-id, corpus-id, score), found {}",
                    cols.len()
                ),
            ));
        }
        let score = match cols[2].trim().parse::<i64>() {
            Ok(s) => s,
            // BEIR writes a header line first.
            Err(_) if line == 1 => continue,
            Err(_) => {
                return Err(data_err(path, format!("line {line}: score `{}` is not an integer", cols[2])));
            }
        };
        let (q, d) = (cols[0].trim(), cols[1].trim());
        if q.is_empty() || d.is_empty() {
            return Err(data_err(path, format!("line {line}: empty query or corpus id")));
        }
        qrels.entry(q.to_string()).or_default().insert(d.to_string(), score);
    }
    if qrels.is_empty() {
        return Err(data_err(path, "no judgments"));
    }
    Ok(qrels)
}

/// Load a BEIR folder for one split.
pub fn load(dir: &Path, split: &str) -> Result<BeirSet> {
    if !dir.is_dir() {
        return Err(data_err(dir, "not a folder (expected corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"));
    }
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    if !qrels_path.is_file() {
        let mut splits: Vec<String> = std::fs::read_dir(dir.join("qrels"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".tsv")).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        splits.sort();
        let have = if splits.is_empty() { "none".to_string() } else { splits.join(", ") };
        return Err(Error::MissingFile {
            path: qrels_path,
            what: format!("qrels of split `{split}` (splits here: {have})"),
        });
    }
    for f in ["corpus.jsonl", "queries.jsonl"] {
        if !dir.join(f).is_file() {
            return Err(Error::MissingFile { path: dir.join(f), what: format!("BEIR {f}") });
        }
    }
    let qrels = load_qrels(&qrels_path)?;
    let corpus = load_corpus(&dir.join("corpus.jsonl"))?;
    let all_queries = load_queries(&dir.join("queries.jsonl"))?;
    let mut queries = Vec::with_capacity(qrels.len());
    for qid in qrels.keys() {
        match all_queries.get(qid) {
            Some(t) => queries.push((qid.clone(), t.clone())),
            None => {
                return Err(data_err(
                    &dir.join("queries.jsonl"),
                    format!("query `{qid}` of {} is not in queries.jsonl", qrels_path.display()),
                ))
            }
        }
    }
    let ids: HashSet<&str> = corpus.ids.iter().map(String::as_str).collect();
    let missing_docs = qrels.values().flat_map(|m| m.keys()).filter(|d| !ids.contains(d.as_str())).count();
    if missing_docs > 0 {
        tracing::warn!(missing_docs, "judged documents not in corpus.jsonl (they count as never retrieved)");
    }
    Ok(BeirSet { dir: dir.to_path_buf(), split: split.to_string(), corpus, queries, qrels, missing_docs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_join_matches_beir() {
        assert_eq!(join_title(Some("T"), " body "), "T  body");
        assert_eq!(join_title(Some(""), " body "), "body");
        assert_eq!(join_title(None, "body\n"), "body");
    }
}
