//! Thin PyO3 bindings: argument conversion, GIL release, progress callbacks and error mapping, one file
//! per topic. All algorithms live in llmesr-core.

mod dataset;
mod retrieval;
mod runtime;
mod sampling;
mod synthetic;

use pyo3::prelude::*;

#[pymodule]
mod _native {
    #[pymodule_init]
    fn init(_m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        super::runtime::install_fork_guard();
        Ok(())
    }

    /// The dataset folder's format version (meta.json `format_version`).
    #[pymodule_export]
    const FORMAT_VERSION: u32 = llmesr_core::folder::FORMAT_VERSION;
    /// The package version (the workspace's Cargo.toml, as pyproject's dynamic version).
    #[pymodule_export]
    #[allow(non_upper_case_globals)] // Python's name for it
    const __version__: &str = env!("CARGO_PKG_VERSION");

    #[pymodule_export]
    use super::dataset::{detect_format, formats, parse_timestamp, prepare_dataset, DatasetHandle};
    #[pymodule_export]
    use super::retrieval::{default_ivf_settings, similar_users};
    #[pymodule_export]
    use super::runtime::{_panic_for_test, DataError};
    #[pymodule_export]
    use super::sampling::{bert4rec_batch, eval_negatives, histories, sasrec_batch};
    #[pymodule_export]
    use super::synthetic::prepare_synthetic;
}
