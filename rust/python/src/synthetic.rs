//! The built-in synthetic catalogue.

use crate::runtime::{run_detached, to_py_err};
use llmesr_core::dataset::Filters;
use llmesr_core::prepare;
use llmesr_core::synthetic::SyntheticConfig;
use pyo3::prelude::*;
use std::path::Path;

/// Writes the built-in synthetic long-tail dataset into `out_dir`; returns meta.json as text.
#[pyfunction]
#[pyo3(signature = (out_dir, *, n_users=2000, n_items=1500, n_topics=8, zipf=1.0, seed=42, min_user=0, min_item=0, version=""))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare_synthetic(
    py: Python<'_>,
    out_dir: String,
    n_users: usize,
    n_items: usize,
    n_topics: usize,
    zipf: f64,
    seed: u64,
    min_user: u32,
    min_item: u32,
    version: &str,
) -> PyResult<String> {
    let cfg = SyntheticConfig { n_users, n_items, n_topics, zipf, seed };
    let filters = Filters { min_user, min_item, ..Default::default() };
    let result = run_detached(py, || prepare::prepare_synthetic(&cfg, &filters, version, Path::new(&out_dir)))?;
    result.map(|v| v.to_string()).map_err(|e| to_py_err(e, None))
}
