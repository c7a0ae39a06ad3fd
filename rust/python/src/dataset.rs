//! Preparing datasets (files to a dataset folder), reading formats and dates, and the handle the
//! samplers take: a folder's arrays, checked once.

use crate::runtime::{run_detached, to_py_err, Reporter};
use llmesr_core::dataset::{CoreMode, Filters};
use llmesr_core::formats::{ColumnSpec, Format};
use llmesr_core::ingest::IngestOptions;
use llmesr_core::prepare::{self, PrepareOptions};
use llmesr_core::sampling::Sequences;
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::Path;
use std::sync::Mutex;

fn core_mode(name: &str) -> PyResult<CoreMode> {
    match name {
        "iterative" => Ok(CoreMode::Iterative),
        "single-pass" => Ok(CoreMode::SinglePass),
        _ => Err(PyValueError::new_err(format!("core_mode must be 'iterative' or 'single-pass', not '{name}'"))),
    }
}

/// The options of `prepare_dataset`, read from the dict of `llmesr.data.PrepareOptions` (one object
/// crossing the boundary; the names and defaults are defined there).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct PrepareArgs {
    format: Option<String>,
    user_col: Option<String>,
    item_col: Option<String>,
    time_col: Option<String>,
    rating_col: Option<String>,
    columns: Option<Vec<String>>,
    skip_bad_lines: bool,
    min_rating: Option<f32>,
    since: Option<i64>,
    until: Option<i64>,
    min_user: u32,
    min_item: u32,
    core_mode: String,
    dedup_consecutive: bool,
    items: Vec<String>,
    item_key: Option<String>,
}

/// Prepares interaction files into `out_dir` (an existing empty folder); returns meta.json as text.
#[pyfunction]
#[pyo3(signature = (inputs, out_dir, options, *, version="", progress=None))]
pub(crate) fn prepare_dataset(
    py: Python<'_>,
    inputs: Vec<String>,
    out_dir: String,
    options: PrepareArgs,
    version: &str,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let PrepareArgs {
        format,
        user_col,
        item_col,
        time_col,
        rating_col,
        columns,
        skip_bad_lines,
        min_rating,
        since,
        until,
        min_user,
        min_item,
        core_mode,
        dedup_consecutive,
        items: item_files,
        item_key,
    } = options;
    let format = match format.as_deref() {
        None | Some("auto") => None,
        Some(name) => {
            Some(Format::parse(name).ok_or_else(|| PyValueError::new_err(format!("unknown format '{name}'")))?)
        }
    };
    let opts = PrepareOptions {
        inputs,
        ingest: IngestOptions {
            format,
            columns: ColumnSpec {
                user: user_col,
                item: item_col,
                time: time_col,
                rating: rating_col,
                positional: columns,
            },
            skip_bad_lines,
            ..Default::default()
        },
        filters: Filters {
            min_rating,
            since,
            until,
            min_user,
            min_item,
            core_mode: self::core_mode(&core_mode)?,
            dedup_consecutive,
        },
        item_files,
        item_key,
        version: version.to_string(),
    };
    let reporter = Reporter { callback: progress, pending: Mutex::new(None) };
    let result =
        run_detached(py, || prepare::prepare(&opts, Path::new(&out_dir), &mut |s, d, t| reporter.report(s, d, t)))?;
    reporter.finish(result).map(|meta| meta.to_string())
}

/// Unix seconds of a number or a date (`YYYY-MM-DD[ HH:MM:SS]`, ISO 8601, `MM DD, YYYY`); None if neither.
#[pyfunction]
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    llmesr_core::time::parse_timestamp(text)
}

/// The format `llmesr-prepare --format auto` would pick for this file.
#[pyfunction]
pub(crate) fn detect_format(py: Python<'_>, path: String) -> PyResult<String> {
    let result = run_detached(py, || {
        let head = llmesr_core::reader::head_lines(&path, 100)?;
        llmesr_core::formats::detect(&path, &head)
    })?;
    result.map(|f| f.name().to_string()).map_err(|e| to_py_err(e, None))
}

/// The input formats `prepare_dataset` reads (besides "auto", detection).
#[pyfunction]
pub(crate) fn formats() -> Vec<&'static str> {
    Format::ALL.iter().map(|f| f.name()).collect()
}

/// A prepared dataset's arrays (the folder's memory maps), checked once when it is built
/// (`folder::Arrays::check`, naming the file and the first bad row); the samplers take it and index
/// without checking again.
#[pyclass(frozen, module = "llmesr._native")]
pub(crate) struct DatasetHandle {
    indptr: Py<PyArray1<i64>>,
    train_end: Py<PyArray1<i64>>,
    items: Py<PyArray1<i32>>,
    n_items: usize,
}

pub(crate) fn contiguous<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be C-contiguous")))
}

#[pymethods]
impl DatasetHandle {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        folder: &str,
        indptr: Bound<'_, PyArray1<i64>>,
        train_end: Bound<'_, PyArray1<i64>>,
        items: Bound<'_, PyArray1<i32>>,
        valid: PyReadonlyArray1<'_, i32>,
        test: PyReadonlyArray1<'_, i32>,
        n_items: usize,
    ) -> PyResult<Self> {
        {
            let (ip, te, it) = (indptr.readonly(), train_end.readonly(), items.readonly());
            let arrays = llmesr_core::folder::Arrays {
                indptr: contiguous(&ip, "indptr")?,
                train_end: contiguous(&te, "train_end")?,
                items: contiguous(&it, "items")?,
                valid: contiguous(&valid, "valid")?,
                test: contiguous(&test, "test")?,
                n_items,
            };
            run_detached(py, || arrays.check(folder))?.map_err(|e| to_py_err(e, None))?;
        }
        Ok(DatasetHandle { indptr: indptr.unbind(), train_end: train_end.unbind(), items: items.unbind(), n_items })
    }

    #[getter]
    fn n_items(&self) -> usize {
        self.n_items
    }
}

/// The borrowed arrays of a handle, for the duration of one call.
pub(crate) struct Borrowed<'py> {
    indptr: PyReadonlyArray1<'py, i64>,
    train_end: PyReadonlyArray1<'py, i64>,
    items: PyReadonlyArray1<'py, i32>,
    n_items: usize,
}

impl<'py> Borrowed<'py> {
    pub(crate) fn of(py: Python<'py>, ds: &DatasetHandle) -> Self {
        Borrowed {
            indptr: ds.indptr.bind(py).readonly(),
            train_end: ds.train_end.bind(py).readonly(),
            items: ds.items.bind(py).readonly(),
            n_items: ds.n_items,
        }
    }
    pub(crate) fn sequences(&self) -> PyResult<Sequences<'_>> {
        Ok(Sequences {
            indptr: contiguous(&self.indptr, "indptr")?,
            train_end: contiguous(&self.train_end, "train_end")?,
            items: contiguous(&self.items, "items")?,
            n_items: self.n_items,
        })
    }
}
