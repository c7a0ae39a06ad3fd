//! Nearest neighbours over user embeddings (the distillation's similar users).

use crate::runtime::{run_detached, Reporter};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Mutex;

/// For every row, the `k` most cosine-similar other rows (best first, ties to the lower index):
/// exact, or approximate (inverted file) when `lists` is given.
#[pyfunction]
#[pyo3(signature = (embeddings, k, progress=None, lists=None, probe=None, seed=0))]
pub(crate) fn similar_users<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    k: usize,
    progress: Option<Py<PyAny>>,
    lists: Option<usize>,
    probe: Option<usize>,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<i32>>> {
    use llmesr_core::retrieval::{similar, similar_approx, IvfSettings};
    let (n, dim) = (embeddings.shape()[0], embeddings.shape()[1]);
    let values = embeddings.as_slice().map_err(|_| PyValueError::new_err("embeddings must be C-contiguous"))?;
    let reporter = Reporter { callback: progress, pending: Mutex::new(None) };
    let result = run_detached(py, || {
        let mut report = |s: &str, d: u64, t: u64| reporter.report(s, d, t);
        match lists {
            None => similar(values, n, dim, k, &mut report),
            Some(lists) => {
                let defaults = IvfSettings::for_rows(n);
                let settings = IvfSettings { lists, probe: probe.unwrap_or(defaults.probe), seed, ..defaults };
                similar_approx(values, n, dim, k, &settings, &mut report)
            }
        }
    })?;
    let out = reporter.finish(result)?;
    PyArray1::from_vec(py, out).reshape([n, k])
}

/// The approximate search's default `(lists, probe)` for `n` rows.
#[pyfunction]
pub(crate) fn default_ivf_settings(n: usize) -> (usize, usize) {
    let s = llmesr_core::retrieval::IvfSettings::for_rows(n);
    (s.lists, s.probe)
}
