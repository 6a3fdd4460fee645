//! embedrank: local text embeddings and reranking.
//!
//! Stages, one direction (see DESIGN.md): [`source`] finds the model folder, [`spec`] reads its files
//! into one [`spec::ModelSpec`], [`weights`] loads tensors, [`model`] holds the architectures, and
//! [`engine`] tokenizes, batches and post-processes. The CLI and server sit on top of the engine.

pub mod bench;
pub mod convert;
pub mod corpus;
pub mod engine;
pub mod error;
pub mod eval;
// Entry points of the fuzz targets (fuzz/) and their bounded replay (tests/fuzz_corpus.rs).
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod server;
// Some helpers serve only the x86-64 fast path (model::cpu_ops).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod simd;
pub mod source;
pub mod spec;
pub mod synth;
pub mod weights;

pub use error::{Error, Result};
