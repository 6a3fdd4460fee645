//! Python bindings: the extension module `embedrank._embedrank` (re-exported by the `embedrank`
//! package in python/embedrank/). A thin layer over the library's engine, so vectors and scores are
//! the CLI's own, bit for bit. Model loading and every forward pass run with the GIL released.

use std::path::PathBuf;
use std::sync::Arc;

use embedrank::engine::{
    rerank, DeviceChoice, DtypeChoice, EmbedOptions, Engine, EngineOptions, RerankOptions, Truncation,
};
use embedrank::source::{self, ResolveOptions};
use embedrank::spec::{ModelSpec, SpecOverrides, Task};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyList, PyString};

pyo3::create_exception!(
    embedrank,
    EmbedrankError,
    PyRuntimeError,
    "An error from the embedrank runtime (model not found, unreadable files, compute failure)."
);

/// Bad input (the caller can fix it) → ValueError (TypeError for arguments of the wrong type,
/// raised where they are read); everything else → EmbedrankError, with the
/// library's own message either way.
fn py_err(e: embedrank::Error) -> PyErr {
    use embedrank::Error as E;
    match e {
        E::InvalidInput(_) | E::InputTooLong { .. } | E::WrongTask { .. } | E::InvalidRevision { .. } => {
            PyValueError::new_err(e.to_string())
        }
        _ => EmbedrankError::new_err(e.to_string()),
    }
}

/// `cache_dir`: one folder (str or os.PathLike) or a list of them, searched before the default
/// hub cache (the CLI's `--cache-dir`).
fn cache_dirs(arg: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<PathBuf>> {
    match arg {
        None => Ok(Vec::new()),
        Some(a) if a.is_none() => Ok(Vec::new()),
        Some(a) => match a.extract::<PathBuf>() {
            Ok(p) => Ok(vec![p]),
            Err(_) => a
                .extract::<Vec<PathBuf>>()
                .map_err(|_| PyTypeError::new_err("cache_dir must be a path or a list of paths")),
        },
    }
}

/// What the CLI's ModelArgs::engine does: resolve, read the spec, load (GIL released).
fn load(
    py: Python<'_>,
    model: &str,
    device: &str,
    dtype: Option<&str>,
    cache_dir: Option<&Bound<'_, PyAny>>,
    max_length: Option<usize>,
    want: Task,
) -> PyResult<Engine> {
    if max_length == Some(0) {
        return Err(PyValueError::new_err("max_length must be at least 1"));
    }
    let dirs = cache_dirs(cache_dir)?;
    let mut opts = EngineOptions { device: DeviceChoice::parse(device).map_err(py_err)?, ..Default::default() };
    if let Some(d) = dtype {
        DtypeChoice::parse(d).map_err(py_err)?.apply(&mut opts);
    }
    let model = model.to_string();
    py.detach(move || {
        let resolved = source::resolve(&model, &ResolveOptions::from_env(&dirs))?;
        let spec = ModelSpec::load(&resolved, &SpecOverrides { max_length, ..Default::default() })?;
        if spec.task != want {
            return Err(embedrank::Error::WrongTask {
                model: spec.name.clone(),
                actual: spec.task.as_str(),
                wanted: want.as_str(),
            });
        }
        Engine::load(spec, &opts)
    })
    .map_err(py_err)
}

fn check_batch_size(batch_size: usize) -> PyResult<Option<usize>> {
    if batch_size == 0 {
        return Err(PyValueError::new_err("batch_size must be at least 1"));
    }
    Ok(Some(batch_size))
}

/// One str → (vec![s], true); a sequence of str → (texts, false).
fn texts_arg(texts: &Bound<'_, PyAny>) -> PyResult<(Vec<String>, bool)> {
    if texts.is_instance_of::<PyString>() {
        return Ok((vec![texts.extract::<String>()?], true));
    }
    texts
        .extract::<Vec<String>>()
        .map(|t| (t, false))
        .map_err(|_| PyTypeError::new_err("texts must be a str or a list of str"))
}

/// A float32 numpy array of `shape` over `values`. Built as a bytearray handed to
/// `numpy.frombuffer` rather than through the `numpy` crate: no ndarray dependency tree and no
/// lock-step between the numpy crate's and pyo3's versions, for one memcpy of the output (small next
/// to the forward pass). A bytearray (not bytes) so the array is writable, like sentence-transformers'.
fn numpy_f32<'py>(py: Python<'py>, values: &[f32], shape: Vec<usize>) -> PyResult<Bound<'py, PyAny>> {
    let buf = PyByteArray::new_with(py, values.len() * 4, |out: &mut [u8]| {
        for (chunk, v) in out.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })?;
    let np = py.import("numpy")?;
    let arr = np.call_method1("frombuffer", (buf, np.getattr("float32")?))?;
    arr.call_method1("reshape", (shape,))
}

/// An embedding model (BERT-family sentence-transformers models, Qwen3-Embedding, ...).
///
/// `Embedder(model, device="cpu", dtype=None, cache_dir=None, max_length=None)`: `model` is a local
/// folder or a Hugging Face id `org/name[@revision]`, found in the hub cache (downloaded when missing
/// unless HF_HUB_OFFLINE is set). `dtype`: "f32", "f16", "bf16" or "int8" (default f32 on the CPU).
#[pyclass(module = "embedrank", frozen)]
struct Embedder {
    engine: Arc<Engine>,
    device: String,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model, device="cpu", dtype=None, cache_dir=None, max_length=None))]
    fn new(
        py: Python<'_>,
        model: &str,
        device: &str,
        dtype: Option<&str>,
        cache_dir: Option<&Bound<'_, PyAny>>,
        max_length: Option<usize>,
    ) -> PyResult<Self> {
        let engine = load(py, model, device, dtype, cache_dir, max_length, Task::Embed)?;
        Ok(Embedder { engine: Arc::new(engine), device: device.to_string() })
    }

    /// Embed `texts` (a str, or a list of str). Returns a float32 numpy array [n, dim], or [dim]
    /// for a single str (lists of floats with `convert_to_numpy=False`).
    ///
    /// `normalize`: L2-normalize (None: the model's own setting, as the CLI does). `prompt_name`:
    /// a prompt from the model's config ("query", "document", ...); `prompt`: literal text
    /// prepended; `instruction`: the task of an instruction-aware model (Qwen3-Embedding queries).
    /// `dimensions`: Matryoshka truncation (re-normalized when normalizing).
    #[pyo3(signature = (texts, batch_size=32, normalize=Some(true), prompt_name=None, prompt=None,
                        instruction=None, dimensions=None, convert_to_numpy=true))]
    // The Python signature (keyword arguments) sets the arity.
    #[allow(clippy::too_many_arguments)]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        batch_size: usize,
        normalize: Option<bool>,
        prompt_name: Option<&str>,
        prompt: Option<&str>,
        instruction: Option<&str>,
        dimensions: Option<usize>,
        convert_to_numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (texts, single) = texts_arg(texts)?;
        if prompt.is_some() && prompt_name.is_some() {
            return Err(PyValueError::new_err("give prompt or prompt_name, not both"));
        }
        if instruction.is_some() && (prompt.is_some() || prompt_name.is_some()) {
            return Err(PyValueError::new_err("instruction replaces the prompt: give it without prompt/prompt_name"));
        }
        let engine = &self.engine;
        let opts = EmbedOptions {
            prompt: engine.spec.prompt_for(prompt_name, prompt, instruction).map_err(py_err)?,
            dimensions,
            normalize,
            batch_size: check_batch_size(batch_size)?,
            truncation: Truncation::End,
        };
        engine.check_dimensions(dimensions).map_err(py_err)?;
        let dim = dimensions.unwrap_or_else(|| engine.spec.embedding_dim());
        let vectors = if texts.is_empty() {
            Vec::new()
        } else {
            py.detach(|| engine.embed(&texts, &opts)).map_err(py_err)?.vectors
        };
        if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
            return Err(EmbedrankError::new_err(format!(
                "internal: a vector of {} dimensions, expected {dim}",
                v.len()
            )));
        }
        if !convert_to_numpy {
            let rows = PyList::new(py, &vectors)?;
            return if single { Ok(rows.get_item(0)?) } else { Ok(rows.into_any()) };
        }
        let flat = vectors.concat();
        let shape = if single { vec![dim] } else { vec![vectors.len(), dim] };
        numpy_f32(py, &flat, shape)
    }

    /// Dimensions of the model's vectors (before any Matryoshka truncation).
    #[getter]
    fn dim(&self) -> usize {
        self.engine.spec.embedding_dim()
    }

    /// Tokens per input; longer inputs are truncated.
    #[getter]
    fn max_length(&self) -> usize {
        self.engine.tokenizer.max_length()
    }

    #[getter]
    fn model_name(&self) -> String {
        self.engine.spec.name.clone()
    }

    /// Names of the prompts in the model's config (for `prompt_name`).
    #[getter]
    fn prompts(&self) -> Vec<String> {
        let mut names: Vec<String> = self.engine.spec.prompts.keys().cloned().collect();
        names.sort();
        names
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder(model={:?}, device={:?}, dtype={:?}, dim={}, max_length={})",
            self.engine.spec.name,
            self.device,
            self.engine.dtype_label(),
            self.dim(),
            self.max_length()
        )
    }
}

/// A reranker: a BERT cross-encoder or Qwen3-Reranker.
///
/// `Reranker(model, device="cpu", dtype=None, cache_dir=None, max_length=None)`, the same
/// arguments as `Embedder`.
#[pyclass(module = "embedrank", frozen)]
struct Reranker {
    engine: Arc<Engine>,
    device: String,
}

#[pymethods]
impl Reranker {
    #[new]
    #[pyo3(signature = (model, device="cpu", dtype=None, cache_dir=None, max_length=None))]
    fn new(
        py: Python<'_>,
        model: &str,
        device: &str,
        dtype: Option<&str>,
        cache_dir: Option<&Bound<'_, PyAny>>,
        max_length: Option<usize>,
    ) -> PyResult<Self> {
        let engine = load(py, model, device, dtype, cache_dir, max_length, Task::Rerank)?;
        Ok(Reranker { engine: Arc::new(engine), device: device.to_string() })
    }

    /// Score `documents` against `query`, best first, like sentence-transformers'
    /// `CrossEncoder.rank`: a list of {"corpus_id", "score"} (and "text" with
    /// `return_documents=True`); `top_k` keeps the best k. `instruction`: Qwen3-Reranker's task
    /// (default: the model card's).
    #[pyo3(signature = (query, documents, top_k=None, return_documents=false, batch_size=32, instruction=None))]
    #[allow(clippy::too_many_arguments)]
    fn rank<'py>(
        &self,
        py: Python<'py>,
        query: &str,
        documents: Vec<String>,
        top_k: Option<usize>,
        return_documents: bool,
        batch_size: usize,
        instruction: Option<String>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let opts = RerankOptions {
            instruction,
            top_n: top_k,
            return_documents: false,
            raw_scores: false,
            no_truncate: false,
            batch_size: check_batch_size(batch_size)?,
        };
        if top_k == Some(0) {
            return Err(PyValueError::new_err("top_k must be at least 1"));
        }
        // sentence-transformers ranks an empty list as []; the library calls it an error.
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let engine = &self.engine;
        let results = py.detach(|| engine.rerank(query, &documents, &opts)).map_err(py_err)?;
        results
            .into_iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("corpus_id", r.index)?;
                d.set_item("score", r.relevance_score)?;
                if return_documents {
                    d.set_item("text", &documents[r.index])?;
                }
                Ok(d)
            })
            .collect()
    }

    /// Scores of (query, document) pairs in input order, like `CrossEncoder.predict`: a float32
    /// numpy array, or one float for a single pair.
    #[pyo3(signature = (pairs, batch_size=32, instruction=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        pairs: &Bound<'py, PyAny>,
        batch_size: usize,
        instruction: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (pairs, single) = match pairs.extract::<(String, String)>() {
            Ok(p) if !pairs.is_instance_of::<PyString>() => (vec![p], true),
            _ => (
                pairs
                    .extract::<Vec<(String, String)>>()
                    .map_err(|_| PyTypeError::new_err("pairs must be a list of (query, document) pairs of str"))?,
                false,
            ),
        };
        let opts = RerankOptions { instruction, batch_size: check_batch_size(batch_size)?, ..Default::default() };
        let engine = &self.engine;
        let scores = py
            .detach(|| -> embedrank::Result<Vec<f32>> {
                let mut toks = Vec::with_capacity(pairs.len());
                for (q, d) in &pairs {
                    toks.extend(rerank::tokenize_pairs(engine, q, std::slice::from_ref(d), &opts)?);
                }
                let raw = rerank::score_tokens(engine, &toks, opts.batch_size)?;
                Ok(raw.into_iter().map(|r| rerank::activate(r, engine.spec.score_activation)).collect())
            })
            .map_err(py_err)?;
        if single {
            return Ok(scores[0].into_pyobject(py)?.into_any());
        }
        let n = scores.len();
        numpy_f32(py, &scores, vec![n])
    }

    #[getter]
    fn max_length(&self) -> usize {
        self.engine.tokenizer.max_length()
    }

    #[getter]
    fn model_name(&self) -> String {
        self.engine.spec.name.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Reranker(model={:?}, device={:?}, dtype={:?}, max_length={})",
            self.engine.spec.name,
            self.device,
            self.engine.dtype_label(),
            self.max_length()
        )
    }
}

#[pymodule]
mod _embedrank {
    #[pymodule_export]
    use super::{Embedder, EmbedrankError, Reranker};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
