//! One error type for the library. Every variant names the file or input it is about, so the CLI can
//! print a single line and the server can map it to an HTTP status.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model `{reference}` not found; looked in: {}", searched.join(", "))]
    ModelNotFound { reference: String, searched: Vec<String> },

    #[error("{}: missing {what}", path.display())]
    MissingFile { path: PathBuf, what: String },

    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    #[error("{}: unsupported architecture `{arch}` (supported: {supported})", path.display())]
    UnsupportedArchitecture { path: PathBuf, arch: String, supported: String },

    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error("{}: weights: {message}", path.display())]
    Weights { path: PathBuf, message: String },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("download of `{repo}` failed: {message}")]
    Download { repo: String, message: String },

    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A revision (`org/name@REV`) that cannot be a branch, tag or commit, or would leave the cache.
    #[error("bad revision `{revision}` in `{reference}`: {reason}")]
    InvalidRevision { reference: String, revision: String, reason: String },

    #[error("input {index} has {tokens} tokens, more than the model's maximum of {max} (truncation is off)")]
    InputTooLong { index: usize, tokens: usize, max: usize },

    /// A text longer than the character cut applied before tokenizing, with truncation off.
    #[error("input {index} has more than {max_chars} characters (truncation is off; the limit is 16 per token of the max length {max})")]
    TextTooLong { index: usize, max_chars: usize, max: usize },

    /// A prompt, instruction or query that leaves no room for the input within the max length.
    #[error("the {what} takes {tokens} of the model's {max} tokens and leaves no room for the input; shorten it")]
    PromptTooLong { what: &'static str, tokens: usize, max: usize },

    /// The model produced NaN or infinite values (broken weights, overflow in a low-precision dtype).
    #[error("the model produced {what} values (NaN or infinite); refusing to return them")]
    NonFinite { what: &'static str },

    #[error("model `{model}` is {actual}, not {wanted}")]
    WrongTask { model: String, actual: &'static str, wanted: &'static str },

    #[error("compute: {0}")]
    Candle(#[from] candle_core::Error),

    /// An evaluation data file (BEIR corpus/queries/qrels, STS pairs) that cannot be used.
    #[error("{}: {message}", path.display())]
    EvalData { path: PathBuf, message: String },

    /// The hub answered with an error status (X-Error-Code: RepoNotFound, GatedRepo, EntryNotFound, …).
    #[error("hub: `{repo}`: {status} {code}: {message}")]
    Hub { repo: String, status: u16, code: String, message: String },

    /// A downloaded file does not match its size or sha256; it was deleted.
    #[error("{}: integrity check failed: {message}", path.display())]
    Integrity { path: PathBuf, message: String },

    /// HF_HUB_OFFLINE is set and the cache cannot answer alone.
    #[error("`{repo}`: offline (HF_HUB_OFFLINE is set) and {message}")]
    Offline { repo: String, message: String },

    #[error("quantized weight: {0}")]
    Quantization(String),

    /// `convert` refuses to replace an existing output without --force.
    #[error("{}: already exists (use --force to replace it)", path.display())]
    OutputExists { path: PathBuf },

    /// A corpus job's storage (a local folder or an object store) failed or holds something unusable.
    #[error("{location}: {message}")]
    Storage { location: String, message: String },

    /// The HTTP server could not start or stopped with an error.
    #[error("server: {0}")]
    Server(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Config { path: path.into(), message: message.into() }
    }
    pub fn weights(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Weights { path: path.into(), message: message.into() }
    }
    /// True when the fault is in what the caller sent (maps to a 4xx on the server).
    pub fn is_user_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidInput(_)
                | Error::InvalidRevision { .. }
                | Error::InputTooLong { .. }
                | Error::TextTooLong { .. }
                | Error::PromptTooLong { .. }
                | Error::WrongTask { .. }
        )
    }
}
