//! Where a job's output (and remote input) lives: a local folder or an object store bucket, behind
//! one small blocking trait. Every write is atomic: a local temp file renamed into place, or one S3
//! PUT (an object appears whole or not at all), so a killed job never leaves half a part.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Error, Result};

pub trait Store: Send + Sync {
    /// `name` as a user reads it in messages (a path or URL).
    fn describe(&self, name: &str) -> String;
    /// Names of the files directly under the root (no folders), sorted.
    fn list(&self) -> Result<Vec<String>>;
    /// A file's bytes, or None when it does not exist.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Replace `name` with `bytes`, atomically.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// A local path to write `name` to before [`Store::commit`] publishes it.
    fn temp_path(&self, name: &str) -> Result<PathBuf>;
    /// Publish a file written at `temp_path(name)` under `name`, atomically.
    fn commit(&self, name: &str, tmp: &Path) -> Result<()>;
    /// A local copy of `name` to read (the file itself for a folder; a temp download for a bucket).
    fn local_copy(&self, name: &str) -> Result<LocalFile>;
    /// Delete temp files a killed run left behind for the names `mine` selects (a folder only:
    /// an interrupted PUT leaves nothing in a bucket).
    fn remove_temps(&self, _mine: &dyn Fn(&str) -> bool) {}
}

/// A readable local file; a downloaded copy is deleted on drop.
pub struct LocalFile {
    pub path: PathBuf,
    pub(crate) _tmp: Option<tempfile::TempPath>,
}

pub fn storage_err(location: impl Into<String>, message: impl std::fmt::Display) -> Error {
    Error::Storage { location: location.into(), message: message.to_string() }
}

/// Whether `s` names an object store location (`s3://bucket/prefix`).
pub fn is_url(s: &str) -> bool {
    s.contains("://")
}

/// Open `location` (a folder, created if missing, or `s3://bucket/prefix`) as a store.
pub fn open(location: &str, create: bool) -> Result<Arc<dyn Store>> {
    if is_url(location) {
        Ok(Arc::new(ObjectStore::open(location)?))
    } else {
        let root = PathBuf::from(location);
        if create {
            std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        }
        Ok(Arc::new(LocalStore { root }))
    }
}

pub struct LocalStore {
    root: PathBuf,
}

impl Store for LocalStore {
    fn describe(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    fn list(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                if let Some(n) = entry.file_name().to_str().filter(|n| !n.starts_with('.')) {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.root.join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.temp_path(name)?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
        self.commit(name, &tmp)
    }

    fn temp_path(&self, name: &str) -> Result<PathBuf> {
        // Same folder, so the rename is atomic; a dot name, so listings and readers skip it.
        Ok(self.root.join(format!(".{name}.tmp-{}", std::process::id())))
    }

    fn commit(&self, name: &str, tmp: &Path) -> Result<()> {
        let dst = self.root.join(name);
        std::fs::rename(tmp, &dst).map_err(|e| Error::io(&dst, e))
    }

    fn local_copy(&self, name: &str) -> Result<LocalFile> {
        Ok(LocalFile { path: self.root.join(name), _tmp: None })
    }

    fn remove_temps(&self, mine: &dyn Fn(&str) -> bool) {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            let Some(base) = n.strip_prefix('.').and_then(|r| r.rsplit_once(".tmp-")).map(|(b, _)| b) else { continue };
            if mine(base) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An object store prefix (`s3://bucket/prefix`), configured from the usual AWS_* variables
/// (AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_REGION, credentials).
pub struct ObjectStore {
    url: String,
    prefix: object_store::path::Path,
    store: Arc<dyn object_store::ObjectStore>,
    rt: tokio::runtime::Runtime,
    tmp_dir: tempfile::TempDir,
}

impl ObjectStore {
    pub fn open(url: &str) -> Result<ObjectStore> {
        let url = url.trim_end_matches('/').to_string();
        let Some(rest) = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://")) else {
            return Err(storage_err(&url, "unsupported URL scheme (this build reads and writes s3:// only)"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(storage_err(&url, "no bucket in the URL"));
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_url(format!("s3://{bucket}"))
            .build()
            .map_err(|e| storage_err(&url, e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| storage_err(&url, format!("starting the I/O runtime: {e}")))?;
        let tmp_dir = tempfile::tempdir().map_err(|e| storage_err(&url, format!("temp folder: {e}")))?;
        let prefix = object_store::path::Path::from(prefix);
        Ok(ObjectStore { url: url.clone(), prefix, store: Arc::new(store), rt, tmp_dir })
    }

    fn key(&self, name: &str) -> object_store::path::Path {
        self.prefix.child(name)
    }

    /// Keys under the prefix (recursively), relative to it: for input globs and folders.
    pub fn list_recursive(&self) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let prefix = if self.prefix.as_ref().is_empty() { None } else { Some(&self.prefix) };
        let metas: Vec<object_store::ObjectMeta> =
            self.rt.block_on(self.store.list(prefix).try_collect()).map_err(|e| storage_err(&self.url, e))?;
        let mut out: Vec<String> = metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.as_ref().to_string();
                let p = self.prefix.as_ref();
                let rel = if p.is_empty() {
                    Some(full.as_str())
                } else {
                    full.strip_prefix(p).map(|r| r.trim_start_matches('/'))
                };
                rel.map(str::to_string)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.rt
            .block_on(self.store.put(&self.key(name), bytes.into()))
            .map(|_| ())
            .map_err(|e| storage_err(self.describe(name), e))
    }
}

impl Store for ObjectStore {
    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    fn list(&self) -> Result<Vec<String>> {
        Ok(self.list_recursive()?.into_iter().filter(|n| !n.contains('/')).collect())
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.rt.block_on(async { self.store.get(&self.key(name)).await?.bytes().await }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_err(self.describe(name), e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.upload(name, bytes.to_vec())
    }

    fn temp_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.tmp_dir.path().join(name))
    }

    fn commit(&self, name: &str, tmp: &Path) -> Result<()> {
        // Parts are a few MB: one PUT, which S3 makes visible all at once or not at all.
        let bytes = std::fs::read(tmp).map_err(|e| Error::io(tmp, e))?;
        self.upload(name, bytes)?;
        let _ = std::fs::remove_file(tmp);
        Ok(())
    }

    fn local_copy(&self, name: &str) -> Result<LocalFile> {
        use futures::StreamExt;
        let tmp = tempfile::NamedTempFile::new_in(self.tmp_dir.path()).map_err(|e| storage_err(&self.url, e))?;
        let (file, path) = tmp.into_parts();
        let mut w = std::io::BufWriter::new(file);
        // Streamed to disk, so a large input costs no memory.
        self.rt
            .block_on(async {
                let mut s = self.store.get(&self.key(name)).await?.into_stream();
                while let Some(chunk) = s.next().await {
                    let chunk = chunk?;
                    w.write_all(&chunk)
                        .map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
                }
                Ok::<_, object_store::Error>(())
            })
            .map_err(|e| storage_err(self.describe(name), e))?;
        w.flush().map_err(|e| storage_err(self.describe(name), e))?;
        Ok(LocalFile { path: path.to_path_buf(), _tmp: Some(path) })
    }
}
