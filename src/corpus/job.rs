//! The job driver: read a shard's rows part by part, embed each part with the engine's
//! length-sorted batching, write it atomically, then record it in the manifest.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::input::{self, InputOptions};
use super::manifest::{self, FileState, Identity, Manifest, Part};
use super::store::{self, storage_err, ObjectStore, Store};
use super::write::{self, VectorType};
use crate::engine::{batch, memory, EmbedOptions, Engine, Tokens, Truncation};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Stop,
    Skip,
}

#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Files, folders, globs or `s3://` URLs (any of those).
    pub inputs: Vec<String>,
    /// A folder or an `s3://bucket/prefix`.
    pub output: String,
    pub shard: u32,
    pub shards: u32,
    /// Input rows per part (and per window through the engine).
    pub part_rows: u64,
    pub on_error: OnError,
    pub input: InputOptions,
    pub vector_type: VectorType,
    pub embed: EmbedOptions,
}

/// Progress callbacks (a terminal bar in the CLI).
pub trait Progress {
    fn add(&self, docs: u64, tokens: u64);
}

impl Progress for () {
    fn add(&self, _docs: u64, _tokens: u64) {}
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub output: String,
    pub shard: u32,
    pub shards: u32,
    pub files: usize,
    /// Parts written by this run.
    pub parts_written: usize,
    /// Parts found done from an earlier run.
    pub parts_resumed: usize,
    pub documents: u64,
    pub skipped_rows: u64,
    pub tokens: u64,
    pub seconds: f64,
    /// CPU seconds (all threads) over `seconds`.
    pub cpu_s: Option<f64>,
    pub docs_per_s: f64,
    pub tokens_per_s: f64,
    pub complete: bool,
    /// Where the time went.
    pub stages: Stages,
}

/// Which shard embeds part `chunk` of input file `file`: round robin over parts, offset by file,
/// so many small files spread as well as one big one.
pub fn shard_of(file: usize, chunk: u64, shards: u32) -> u32 {
    ((file as u64 + chunk) % shards as u64) as u32
}

pub fn part_name(file: usize, chunk: u64) -> String {
    format!("part-{file:05}-{chunk:08}.parquet")
}

/// One input file, local or in a bucket.
pub struct InputFile {
    pub name: String,
    loc: Loc,
}

enum Loc {
    Local(PathBuf),
    Remote(Arc<ObjectStore>, String),
}

impl InputFile {
    fn local_copy(&self) -> Result<store::LocalFile> {
        match &self.loc {
            Loc::Local(p) => Ok(store::LocalFile { path: p.clone(), _tmp: None }),
            Loc::Remote(s, key) => s.local_copy(key),
        }
    }
}

const EXTENSIONS: [&str; 7] = ["jsonl", "json", "ndjson", "csv", "tsv", "parquet", "txt"];

fn corpus_file(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    !base.starts_with('.')
        && base.rsplit_once('.').is_some_and(|(_, e)| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand files, folders (recursively, corpus extensions only) and globs, each sorted, in the
/// order given.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<InputFile>> {
    let mut out: Vec<InputFile> = Vec::new();
    for spec in inputs {
        let before = out.len();
        if store::is_url(spec) {
            let (base, pattern) = match spec.find(['*', '?', '[']) {
                Some(i) => {
                    let cut = spec[..i].rfind('/').unwrap_or(0);
                    (&spec[..cut], Some(&spec[cut + 1..]))
                }
                None => (spec.trim_end_matches('/'), None),
            };
            let st = Arc::new(ObjectStore::open(base)?);
            let keys = st.list_recursive()?;
            let pat = match pattern {
                Some(p) => {
                    Some(glob::Pattern::new(p).map_err(|e| Error::InvalidInput(format!("{spec}: bad glob: {e}")))?)
                }
                None => None,
            };
            if keys.is_empty() && pat.is_none() {
                // Not a prefix with objects under it: the object itself.
                let (dir, key) = base.rsplit_once('/').unwrap_or((base, ""));
                let st = Arc::new(ObjectStore::open(dir)?);
                out.push(InputFile { name: spec.clone(), loc: Loc::Remote(st, key.to_string()) });
            } else {
                for k in keys {
                    let ok = match &pat {
                        Some(p) => p.matches(&k),
                        None => corpus_file(&k),
                    };
                    if ok {
                        out.push(InputFile { name: format!("{base}/{k}"), loc: Loc::Remote(st.clone(), k) });
                    }
                }
            }
        } else if has_glob(spec) {
            let paths = glob::glob(spec).map_err(|e| Error::InvalidInput(format!("{spec}: bad glob: {e}")))?;
            let mut v: Vec<PathBuf> = paths.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
            v.sort();
            out.extend(v.into_iter().map(|p| InputFile { name: p.display().to_string(), loc: Loc::Local(p) }));
        } else {
            let p = PathBuf::from(spec);
            if p.is_dir() {
                let mut v = Vec::new();
                walk(&p, &mut v)?;
                v.sort();
                out.extend(
                    v.into_iter()
                        .filter(|p| corpus_file(&p.display().to_string()))
                        .map(|p| InputFile { name: p.display().to_string(), loc: Loc::Local(p) }),
                );
            } else if p.is_file() {
                out.push(InputFile { name: spec.clone(), loc: Loc::Local(p) });
            } else {
                return Err(Error::InvalidInput(format!("{spec}: no such file or folder")));
            }
        }
        if out.len() == before {
            return Err(Error::InvalidInput(format!("{spec}: matches no corpus files")));
        }
    }
    Ok(out)
}

fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn identity(engine: &Engine, o: &JobOptions, files: &[InputFile]) -> Identity {
    let s = &engine.spec;
    Identity {
        model: s.name.clone(),
        repo_id: s.repo_id.clone(),
        revision: s.commit.clone(),
        config_sha256: s.config_sha256.clone(),
        weights: s.weight_stamps.iter().map(|w| (w.name.clone(), w.bytes)).collect(),
        dtype: engine.dtype_label().to_string(),
        dimensions: o.embed.dimensions.unwrap_or_else(|| s.embedding_dim()),
        prompt: o.embed.prompt.clone(),
        normalize: o.embed.normalize.unwrap_or(s.normalize),
        max_length: s.max_length,
        truncate: o.embed.truncation == Truncation::End,
        vector_type: o.vector_type,
        part_rows: o.part_rows,
        inputs: files.iter().map(|f| f.name.clone()).collect(),
        input: o.input.clone(),
    }
}

/// One part on its way through the pipeline: read, tokenize (reader thread), embed (compute),
/// write (writer). Each stage drops what the next no longer needs.
struct Chunk {
    file: usize,
    chunk: u64,
    ids: Vec<String>,
    texts: Vec<String>,
    keep: Vec<Vec<Option<String>>>,
    skipped: Vec<u64>,
    toks: Vec<Tokens>,
    vectors: Vec<Vec<f32>>,
    tokens: u64,
}

impl Chunk {
    fn new(file: usize, chunk: u64) -> Chunk {
        Chunk {
            file,
            chunk,
            ids: vec![],
            texts: vec![],
            keep: vec![],
            skipped: vec![],
            toks: vec![],
            vectors: vec![],
            tokens: 0,
        }
    }
}

enum Msg {
    Part(Chunk),
    /// Every row of file `file` has been read: it has `rows` rows.
    FileEnd {
        file: usize,
        rows: u64,
    },
}

/// Busy seconds of the pipeline's stages (each runs on its own thread, so they overlap).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    /// Reading and parsing input rows (reader thread; remote downloads included).
    pub read_s: f64,
    /// Tokenizing parts (reader thread).
    pub tokenize_s: f64,
    /// Forward passes and pooling (compute thread).
    pub embed_s: f64,
    /// The compute thread waiting for the next tokenized part (ideally only the first).
    pub embed_wait_s: f64,
    /// Writing and publishing Parquet parts (writer thread).
    pub write_s: f64,
    /// Saving the manifest (writer thread).
    pub manifest_s: f64,
}

/// Parts queued between two stages: none, a hand-over. At most three parts are alive at once
/// (one read and tokenized, waiting; one embedding; one being written), so memory stays bounded by
/// a few windows whatever the corpus size. Reading, tokenizing and writing a part take a small
/// fraction of embedding it, so the next part is ready when the model is.
const QUEUE: usize = 0;

/// The reader thread: gather the shard's rows part by part, tokenize each part, send it on.
/// Returns early (Ok) when the compute thread has hung up: its error is the one reported.
fn read_parts(
    engine: &Engine,
    o: &JobOptions,
    files: &[InputFile],
    known_rows: &[Option<u64>],
    done: &HashSet<(usize, u64)>,
    tx: SyncSender<Msg>,
    st: &mut Stages,
) -> Result<()> {
    let r = o.part_rows;
    let tokenize = |mut c: Chunk, st: &mut Stages| -> Result<Msg> {
        let t = Instant::now();
        c.toks = engine.tokenize_texts(&c.texts, &o.embed)?;
        c.texts = Vec::new();
        st.tokenize_s += t.elapsed().as_secs_f64();
        Ok(Msg::Part(c))
    };
    for (fi, f) in files.iter().enumerate() {
        let want = |row: u64| {
            let k = row / r;
            shard_of(fi, k, o.shards) == o.shard && !done.contains(&(fi, k))
        };
        if let Some(rows) = known_rows[fi] {
            if (0..rows.div_ceil(r)).all(|k| !want(k * r)) {
                continue; // nothing left for this shard in this file
            }
        }
        let mut t = Instant::now();
        let local = f.local_copy()?;
        let mut reader = input::open(&local.path, &f.name, &o.input)?;
        let mut cur: Option<Chunk> = None;
        while let Some(row) = reader.next_row(&want)? {
            if !want(row.row) {
                continue;
            }
            let k = row.row / r;
            if cur.as_ref().map(|c| c.chunk) != Some(k) {
                if let Some(c) = cur.take() {
                    st.read_s += t.elapsed().as_secs_f64();
                    let m = tokenize(c, st)?;
                    if tx.send(m).is_err() {
                        return Ok(());
                    }
                    t = Instant::now();
                }
                cur = Some(Chunk::new(fi, k));
            }
            let Some(c) = cur.as_mut() else { continue };
            match row.data {
                Ok(rec) => {
                    c.ids.push(rec.id);
                    c.texts.push(rec.text);
                    c.keep.push(rec.keep);
                }
                Err(msg) => match o.on_error {
                    OnError::Stop => {
                        return Err(Error::InvalidInput(format!(
                            "{}:{}: {msg} (--on-error skip skips such rows)",
                            f.name, row.line
                        )))
                    }
                    OnError::Skip => {
                        tracing::warn!(file = %f.name, line = row.line, "skipping row: {msg}");
                        c.skipped.push(row.row);
                    }
                },
            }
        }
        st.read_s += t.elapsed().as_secs_f64();
        if let Some(c) = cur.take() {
            let m = tokenize(c, st)?;
            if tx.send(m).is_err() {
                return Ok(());
            }
        }
        if tx.send(Msg::FileEnd { file: fi, rows: reader.rows() }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The compute thread: exactly `Engine::embed`'s batches of each part (length-sorted under the
/// token budget, the part is the window), one batch at a time so progress moves. Returns early
/// (Ok) when the writer has hung up.
fn embed_parts(
    engine: &Engine,
    o: &JobOptions,
    progress: &dyn Progress,
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    st: &mut Stages,
) -> Result<()> {
    let opts = &o.embed;
    loop {
        let t = Instant::now();
        let Ok(msg) = rx.recv() else { return Ok(()) };
        st.embed_wait_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let msg = match msg {
            Msg::Part(mut c) => {
                let toks = std::mem::take(&mut c.toks);
                c.vectors = vec![Vec::new(); toks.len()];
                for group in batch::plan(&toks, opts.batch_size, engine.max_batch_tokens) {
                    let sub: Vec<_> = group.iter().map(|&i| toks[i].clone()).collect();
                    let e = engine.embed_tokens(&sub, opts)?;
                    for (v, &i) in e.vectors.into_iter().zip(&group) {
                        c.vectors[i] = v;
                    }
                    c.tokens += e.tokens as u64;
                    progress.add(group.len() as u64, e.tokens as u64);
                }
                Msg::Part(c)
            }
            end => end,
        };
        st.embed_s += t.elapsed().as_secs_f64();
        if tx.send(msg).is_err() {
            return Ok(());
        }
    }
}

/// The writer thread's state: the manifest and what this run wrote.
struct Writer<'a> {
    o: &'a JobOptions,
    store: Arc<dyn Store>,
    man: Manifest,
    parts_written: usize,
    documents: u64,
    skipped: u64,
    tokens: u64,
    st: Stages,
}

impl Writer<'_> {
    fn run(&mut self, rx: Receiver<Msg>) -> Result<()> {
        for msg in rx {
            match msg {
                Msg::Part(c) => self.flush(c)?,
                Msg::FileEnd { file, rows } => {
                    if self.man.files[file].rows != Some(rows) {
                        self.man.files[file].rows = Some(rows);
                        self.save()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn save(&mut self) -> Result<()> {
        let t = Instant::now();
        manifest::save(self.store.as_ref(), &self.man)?;
        self.st.manifest_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn flush(&mut self, c: Chunk) -> Result<()> {
        let t = Instant::now();
        let name = part_name(c.file, c.chunk);
        let dim = c.vectors.first().map_or(self.man.identity.dimensions, Vec::len);
        let tmp = self.store.temp_path(&name)?;
        let meta = vec![
            ("embedrank.model".to_string(), self.man.identity.model.clone()),
            ("embedrank.revision".to_string(), self.man.identity.revision.clone().unwrap_or_default()),
        ];
        write::write_part(&tmp, &c.ids, &c.vectors, dim, self.o.vector_type, (&self.o.input.keep, &c.keep), &meta)?;
        self.store.commit(&name, &tmp)?;
        self.st.write_s += t.elapsed().as_secs_f64();
        let r = self.o.part_rows;
        self.man.parts.push(Part {
            name,
            file: c.file,
            chunk: c.chunk,
            first_row: c.chunk * r,
            end_row: c.chunk * r + (c.ids.len() + c.skipped.len()) as u64,
            rows: c.ids.len() as u64,
            skipped: c.skipped.clone(),
            tokens: c.tokens,
        });
        // The part is published before the manifest names it: a crash in between only redoes it.
        self.save()?;
        self.parts_written += 1;
        self.documents += c.ids.len() as u64;
        self.skipped += c.skipped.len() as u64;
        self.tokens += c.tokens;
        Ok(())
    }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    // A panic in a stage is a bug, not bad input: pass it on unchanged.
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Run (or continue) shard `o.shard` of a job: a reader thread (reading, parsing, tokenizing),
/// the calling thread embedding, and a writer thread (Parquet parts, manifest), joined by
/// bounded queues, so the model never waits for input or output.
pub fn run(engine: &Engine, o: &JobOptions, progress: &dyn Progress) -> Result<Summary> {
    let (t0, cpu0) = (Instant::now(), memory::process_cpu_seconds());
    if o.shards == 0 || o.shard >= o.shards {
        return Err(Error::InvalidInput(format!(
            "--shard {}/{}: the index must be below the count",
            o.shard, o.shards
        )));
    }
    if o.part_rows == 0 {
        return Err(Error::InvalidInput("--part-rows must be at least 1".into()));
    }
    let files = expand_inputs(&o.inputs)?;
    let store = store::open(&o.output, true)?;
    let ident = identity(engine, o, &files);
    let mut mine = None;
    for m in manifest::load_all(store.as_ref())? {
        if let Some(d) = ident.difference(&m.identity) {
            return Err(storage_err(
                &o.output,
                format!("holds vectors of another model or options ({d}); use another --output or delete it"),
            ));
        }
        if m.shards != o.shards {
            return Err(storage_err(&o.output, format!("was written with --shard I/{}, not I/{}", m.shards, o.shards)));
        }
        if m.shard == o.shard {
            mine = Some(m);
        }
    }
    let man = mine.unwrap_or_else(|| Manifest {
        version: manifest::VERSION,
        shard: o.shard,
        shards: o.shards,
        identity: ident,
        files: files.iter().map(|f| FileState { name: f.name.clone(), rows: None }).collect(),
        parts: Vec::new(),
        complete: false,
    });
    store.remove_temps(&|n| {
        parse_part_name(n).is_some_and(|(f, k)| shard_of(f, k, o.shards) == o.shard)
            || n == manifest::name(o.shard, o.shards)
    });
    let parts_resumed = man.parts.len();
    let done: HashSet<(usize, u64)> = man.parts.iter().map(|p| (p.file, p.chunk)).collect();
    let known_rows: Vec<Option<u64>> = man.files.iter().map(|f| f.rows).collect();
    let mut w = Writer { o, store, man, parts_written: 0, documents: 0, skipped: 0, tokens: 0, st: Stages::default() };
    let (mut read_st, mut embed_st) = (Stages::default(), Stages::default());
    let (to_embed, embed_rx) = sync_channel::<Msg>(QUEUE);
    let (to_write, write_rx) = sync_channel::<Msg>(QUEUE);
    let (read, embed, written) = std::thread::scope(|s| {
        let (files, known_rows, done, read_st, w) = (&files, &known_rows, &done, &mut read_st, &mut w);
        let reader = s.spawn(move || read_parts(engine, o, files, known_rows, done, to_embed, read_st));
        let writer = s.spawn(move || w.run(write_rx));
        let embed = embed_parts(engine, o, progress, embed_rx, to_write, &mut embed_st);
        (join(reader), embed, join(writer))
    });
    // A later stage's error concerns an earlier part: it is the one a sequential run would meet.
    written?;
    embed?;
    read?;
    w.man.complete = true;
    w.save()?;
    let seconds = t0.elapsed().as_secs_f64();
    let stages = Stages {
        read_s: read_st.read_s,
        tokenize_s: read_st.tokenize_s,
        embed_s: embed_st.embed_s,
        embed_wait_s: embed_st.embed_wait_s,
        write_s: w.st.write_s,
        manifest_s: w.st.manifest_s,
    };
    Ok(Summary {
        output: o.output.clone(),
        shard: o.shard,
        shards: o.shards,
        files: files.len(),
        parts_written: w.parts_written,
        parts_resumed,
        documents: w.documents,
        skipped_rows: w.skipped,
        tokens: w.tokens,
        seconds,
        cpu_s: cpu0.zip(memory::process_cpu_seconds()).map(|(a, b)| b - a),
        docs_per_s: w.documents as f64 / seconds.max(1e-9),
        tokens_per_s: w.tokens as f64 / seconds.max(1e-9),
        complete: true,
        stages,
    })
}

fn parse_part_name(n: &str) -> Option<(usize, u64)> {
    let rest = n.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (f, k) = rest.split_once('-')?;
    Some((f.parse().ok()?, k.parse().ok()?))
}

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub output: String,
    pub model: String,
    pub shards: u32,
    pub files: usize,
    pub parts: usize,
    pub documents: u64,
    pub skipped_rows: u64,
}

/// Check that the union of all shards is complete and exact: every shard finished, every part of
/// every input file written once, each part's ids as recorded and no id twice.
pub fn verify(output: &str) -> Result<Verified> {
    let store = store::open(output, false)?;
    let all = manifest::load_all(store.as_ref())?;
    let fail = |m: String| storage_err(output, m);
    let first = all.first().ok_or_else(|| fail("no manifest: not a job output, or no shard has started".into()))?;
    let n = first.shards;
    let mut seen_shards = HashSet::new();
    for m in &all {
        if let Some(d) = first.identity.difference(&m.identity) {
            return Err(fail(format!("shards disagree on the model or options ({d})")));
        }
        if m.shards != n {
            return Err(fail(format!("shards disagree on the shard count ({} and {})", n, m.shards)));
        }
        if !m.complete {
            return Err(fail(format!("shard {}/{} has not finished", m.shard, n)));
        }
        seen_shards.insert(m.shard);
    }
    if let Some(missing) = (0..n).find(|s| !seen_shards.contains(s)) {
        return Err(fail(format!("shard {missing}/{n} has no manifest (not run yet?)")));
    }
    let files = first.identity.inputs.len();
    let r = first.identity.part_rows;
    let names: HashSet<String> = store.list()?.into_iter().collect();
    let mut ids = HashSet::new();
    let (mut parts, mut documents, mut skipped) = (0usize, 0u64, 0u64);
    for fi in 0..files {
        let rows = all.iter().filter_map(|m| m.files.get(fi).and_then(|f| f.rows)).max().unwrap_or(0);
        for k in 0..rows.div_ceil(r) {
            let owner = shard_of(fi, k, n);
            let found: Vec<&Part> = all
                .iter()
                .filter(|m| m.shard == owner)
                .flat_map(|m| &m.parts)
                .filter(|p| p.file == fi && p.chunk == k)
                .collect();
            let [p] = found.as_slice() else {
                return Err(fail(format!(
                    "rows {}.. of {}: {} parts, want 1",
                    k * r,
                    first.identity.inputs[fi],
                    found.len()
                )));
            };
            let want_end = ((k + 1) * r).min(rows);
            if p.end_row != want_end {
                return Err(fail(format!("{}: covers rows up to {}, want {want_end}", p.name, p.end_row)));
            }
            if !names.contains(&p.name) {
                return Err(fail(format!("{} is in the manifest but missing", p.name)));
            }
            let local = store.local_copy(&p.name)?;
            let got = write::read_ids(&local.path)?;
            if got.len() as u64 != p.rows {
                return Err(fail(format!("{}: {} rows, the manifest says {}", p.name, got.len(), p.rows)));
            }
            for id in got {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                id.hash(&mut h);
                if !ids.insert(h.finish()) {
                    return Err(fail(format!("{}: id `{id}` appears twice in the output", p.name)));
                }
            }
            parts += 1;
            documents += p.rows;
            skipped += p.skipped.len() as u64;
        }
    }
    Ok(Verified {
        output: output.to_string(),
        model: first.identity.model.clone(),
        shards: n,
        files,
        parts,
        documents,
        skipped_rows: skipped,
    })
}

/// Every (id, vector) of a float32 job output, in input order (file, then row).
pub fn read_vectors(output: &str) -> Result<Vec<(String, Vec<f32>)>> {
    let store = store::open(output, false)?;
    let mut parts: Vec<Part> = manifest::load_all(store.as_ref())?.into_iter().flat_map(|m| m.parts).collect();
    parts.sort_by_key(|p| (p.file, p.chunk));
    let mut out = Vec::new();
    for p in parts {
        let local = store.local_copy(&p.name)?;
        let (ids, vecs) = write::read_part(&local.path)?;
        out.extend(ids.into_iter().zip(vecs));
    }
    Ok(out)
}
