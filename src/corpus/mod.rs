//! Corpus jobs: embed a corpus of any size into Parquet parts, streaming (memory bounded by one
//! part), resumable after a crash (a manifest of done row ranges), sharded over many machines
//! (`--shard I/N`), on a local folder or an object store. See docs/corpus.md.

pub mod input;
pub mod job;
pub mod manifest;
pub mod store;
pub mod write;

pub use job::{run, verify, JobOptions, OnError, Progress, Summary, Verified};
