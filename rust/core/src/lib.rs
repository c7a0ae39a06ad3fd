//! llmesr-core: the data side of llmesr in plain Rust (no Python types), so it is testable with
//! `cargo test` and the PyO3 bindings stay thin.

pub mod dataset;
pub mod error;
pub mod folder;
pub mod formats;
pub mod ingest;
pub mod intern;
pub mod items;
pub mod npy;
pub mod prepare;
pub mod pyliteral;
pub mod reader;
pub mod retrieval;
pub mod rng;
pub mod sampling;
pub mod swar;
pub mod synthetic;
pub mod time;

pub use error::{Error, Result};

/// Progress report: `(stage, done, total)`; returning `false` cancels the work.
pub type Progress<'p> = &'p mut dyn FnMut(&str, u64, u64) -> bool;
