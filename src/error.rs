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

    #[error("input {index} has {tokens} tokens, more than the model's maximum of {max} (truncation is off)")]
    InputTooLong { index: usize, tokens: usize, max: usize },

    #[error("model `{model}` is {actual}, not {wanted}")]
    WrongTask { model: String, actual: &'static str, wanted: &'static str },

    #[error("compute: {0}")]
    Candle(#[from] candle_core::Error),
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
        matches!(self, Error::InvalidInput(_) | Error::InputTooLong { .. } | Error::WrongTask { .. })
    }
}
