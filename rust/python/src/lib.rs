//! Thin PyO3 bindings: argument conversion, GIL release, progress callbacks and error mapping.
//! All algorithms live in llmesr-core.

use llmesr_core::dataset::{CoreMode, Filters};
use llmesr_core::formats::{ColumnSpec, Format};
use llmesr_core::ingest::IngestOptions;
use llmesr_core::prepare::{self, PrepareOptions};
use llmesr_core::sampling::{Negatives, Sequences};
use llmesr_core::synthetic::SyntheticConfig;
use llmesr_core::Error;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pyo3::create_exception!(_native, DataError, PyValueError, "Malformed or unusable input data.");

fn to_py_err(e: Error, pending: Option<PyErr>) -> PyErr {
    match e {
        Error::Parse { .. } | Error::Input(_) => DataError::new_err(e.to_string()),
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        Error::Io { .. } => PyOSError::new_err(e.to_string()),
        Error::Cancelled => pending.unwrap_or_else(|| PyKeyboardInterrupt::new_err("cancelled")),
    }
}

/// Set in a child process forked after rayon's global pool started: the pool's threads did not survive
/// the fork, so work sent to it would wait forever (a DataLoader worker, multiprocessing's fork).
static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork_in_child() {
    FORKED.store(true, Ordering::SeqCst);
}

/// Registers the fork guard once, when the module is imported (tokenizers does the same).
fn install_fork_guard() {
    // SAFETY: pthread_atfork only records the handler; the handler stores to an atomic, which is
    // async-signal-safe, as a child-side fork handler must be.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    }
}

/// Runs `work` without the GIL, turning a panic into a RuntimeError instead of a crash. In a forked
/// child the work runs in a fresh thread pool instead of the (dead) global one.
fn run_detached<T: Send>(py: Python<'_>, work: impl FnOnce() -> Result<T, Error> + Send) -> PyResult<Result<T, Error>> {
    let work = move || {
        if FORKED.load(Ordering::SeqCst) {
            match rayon::ThreadPoolBuilder::new().build() {
                Ok(pool) => pool.install(work),
                Err(e) => Err(Error::Input(format!("could not start threads after a fork: {e}"))),
            }
        } else {
            work()
        }
    };
    py.detach(|| catch_unwind(AssertUnwindSafe(work))).map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        PyRuntimeError::new_err(format!("llmesr internal error (please report it): {msg}"))
    })
}

/// Calls the Python progress callback (if any) with the GIL; a raised exception or Ctrl-C cancels.
struct Reporter {
    callback: Option<Py<PyAny>>,
    pending: Mutex<Option<PyErr>>,
}

impl Reporter {
    fn report(&self, stage: &str, done: u64, total: u64) -> bool {
        Python::attach(|py| {
            let res = match &self.callback {
                Some(cb) => cb.call1(py, (stage, done, total)).map(|_| ()),
                None => Ok(()),
            }
            .and_then(|_| py.check_signals());
            match res {
                Ok(()) => true,
                Err(e) => {
                    *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    false
                }
            }
        })
    }
    fn finish<T>(self, result: Result<T, Error>) -> PyResult<T> {
        let pending = self.pending.into_inner().unwrap_or_else(|p| p.into_inner());
        result.map_err(|e| to_py_err(e, pending))
    }
}

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
struct PrepareArgs {
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
fn prepare_dataset(
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

/// Writes the built-in synthetic long-tail dataset into `out_dir`; returns meta.json as text.
#[pyfunction]
#[pyo3(signature = (out_dir, *, n_users=2000, n_items=1500, n_topics=8, zipf=1.0, seed=42, min_user=0, min_item=0, version=""))]
#[allow(clippy::too_many_arguments)]
fn prepare_synthetic(
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

/// For every row, the `k` most cosine-similar other rows (best first, ties to the lower index):
/// exact, or approximate (inverted file) when `lists` is given.
#[pyfunction]
#[pyo3(signature = (embeddings, k, progress=None, lists=None, probe=None, seed=0))]
fn similar_users<'py>(
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
fn default_ivf_settings(n: usize) -> (usize, usize) {
    let s = llmesr_core::retrieval::IvfSettings::for_rows(n);
    (s.lists, s.probe)
}

/// A prepared dataset's arrays (the folder's memory maps), checked once when it is built
/// (`folder::Arrays::check`, naming the file and the first bad row); the samplers take it and index
/// without checking again.
#[pyclass(frozen, module = "llmesr._native")]
struct DatasetHandle {
    indptr: Py<PyArray1<i64>>,
    train_end: Py<PyArray1<i64>>,
    items: Py<PyArray1<i32>>,
    n_items: usize,
}

fn contiguous<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, what: &str) -> PyResult<&'a [T]> {
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
struct Borrowed<'py> {
    indptr: PyReadonlyArray1<'py, i64>,
    train_end: PyReadonlyArray1<'py, i64>,
    items: PyReadonlyArray1<'py, i32>,
    n_items: usize,
}

impl<'py> Borrowed<'py> {
    fn of(py: Python<'py>, ds: &DatasetHandle) -> Self {
        Borrowed {
            indptr: ds.indptr.bind(py).readonly(),
            train_end: ds.train_end.bind(py).readonly(),
            items: ds.items.bind(py).readonly(),
            n_items: ds.n_items,
        }
    }
    fn sequences(&self) -> PyResult<Sequences<'_>> {
        Ok(Sequences {
            indptr: contiguous(&self.indptr, "indptr")?,
            train_end: contiguous(&self.train_end, "train_end")?,
            items: contiguous(&self.items, "items")?,
            n_items: self.n_items,
        })
    }
}

/// Negatives for the sampled evaluation protocol: `[n_users + 1, n_neg]` (row 0 zeros).
#[pyfunction]
fn eval_negatives<'py>(
    py: Python<'py>,
    ds: &DatasetHandle,
    n_neg: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<i32>>> {
    let borrowed = Borrowed::of(py, ds);
    let seqs = borrowed.sequences()?;
    let out = run_detached(py, || llmesr_core::sampling::eval_negatives(seqs, n_neg, seed))?
        .map_err(|e| to_py_err(e, None))?;
    PyArray1::from_vec(py, out).reshape([seqs.train_end.len(), n_neg])
}

/// One SASRec-style training batch: `(inputs, targets, negatives)`, each `[len(users), len]`.
#[pyfunction]
fn sasrec_batch<'py>(
    py: Python<'py>,
    ds: &DatasetHandle,
    users: PyReadonlyArray1<'py, u32>,
    max_len: usize,
    negative_weights: Option<PyReadonlyArray1<'py, f64>>,
    seed: u64,
    epoch: u64,
) -> PyResult<BatchArrays<'py>> {
    training_batch(py, ds, &users, &negative_weights, |seqs, users, how| {
        llmesr_core::sampling::sasrec_batch(seqs, users, max_len, how, seed, epoch)
    })
}

/// What both training batches do around their sampler: borrow the arrays, run it without the GIL,
/// hand back three numpy arrays.
fn training_batch<'py>(
    py: Python<'py>,
    ds: &DatasetHandle,
    users: &PyReadonlyArray1<'py, u32>,
    negative_weights: &Option<PyReadonlyArray1<'py, f64>>,
    sample: impl FnOnce(Sequences<'_>, &[u32], Negatives<'_>) -> Result<llmesr_core::sampling::Batch, Error> + Send,
) -> PyResult<BatchArrays<'py>> {
    let borrowed = Borrowed::of(py, ds);
    let seqs = borrowed.sequences()?;
    let users = contiguous(users, "users")?;
    let how = negatives_from(negative_weights)?;
    let b = run_detached(py, || sample(seqs, users, how))?.map_err(|e| to_py_err(e, None))?;
    batch_arrays(py, users.len(), b)
}

fn negatives_from<'a>(weights: &'a Option<PyReadonlyArray1<'_, f64>>) -> PyResult<Negatives<'a>> {
    match weights {
        None => Ok(Negatives::Uniform),
        Some(w) => Ok(Negatives::Weighted(contiguous(w, "negative weights")?)),
    }
}

type BatchArrays<'py> = (Bound<'py, PyArray2<i32>>, Bound<'py, PyArray2<i32>>, Bound<'py, PyArray2<i32>>);

fn batch_arrays<'py>(py: Python<'py>, rows: usize, b: llmesr_core::sampling::Batch) -> PyResult<BatchArrays<'py>> {
    let shape = [rows, b.len];
    Ok((
        PyArray1::from_vec(py, b.inputs).reshape(shape)?,
        PyArray1::from_vec(py, b.targets).reshape(shape)?,
        PyArray1::from_vec(py, b.negatives).reshape(shape)?,
    ))
}

/// One Bert4Rec training batch: `(inputs, targets, negatives)`, each `[len(users), len]`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn bert4rec_batch<'py>(
    py: Python<'py>,
    ds: &DatasetHandle,
    users: PyReadonlyArray1<'py, u32>,
    max_len: usize,
    mask_prob: f64,
    negative_weights: Option<PyReadonlyArray1<'py, f64>>,
    seed: u64,
    epoch: u64,
) -> PyResult<BatchArrays<'py>> {
    training_batch(py, ds, &users, &negative_weights, |seqs, users, how| {
        llmesr_core::sampling::bert4rec_batch(seqs, users, max_len, mask_prob, how, seed, epoch)
    })
}

/// Left-padded histories (training items plus the next `extra`): `[len(users), len]`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn histories<'py>(
    py: Python<'py>,
    ds: &DatasetHandle,
    users: PyReadonlyArray1<'py, u32>,
    extra: usize,
    max_len: usize,
) -> PyResult<Bound<'py, PyArray2<i32>>> {
    let borrowed = Borrowed::of(py, ds);
    let seqs = borrowed.sequences()?;
    let users = contiguous(&users, "users")?;
    let (len, out) = run_detached(py, || llmesr_core::sampling::histories(seqs, users, extra, max_len))?
        .map_err(|e| to_py_err(e, None))?;
    PyArray1::from_vec(py, out).reshape([users.len(), len])
}

/// Unix seconds of a number or a date (`YYYY-MM-DD[ HH:MM:SS]`, ISO 8601, `MM DD, YYYY`); None if neither.
#[pyfunction]
fn parse_timestamp(text: &str) -> Option<i64> {
    llmesr_core::time::parse_timestamp(text)
}

/// The format `llmesr-prepare --format auto` would pick for this file.
#[pyfunction]
fn detect_format(py: Python<'_>, path: String) -> PyResult<String> {
    let result = run_detached(py, || {
        let head = llmesr_core::reader::head_lines(&path, 100)?;
        llmesr_core::formats::detect(&path, &head)
    })?;
    result.map(|f| f.name().to_string()).map_err(|e| to_py_err(e, None))
}

/// The input formats `prepare_dataset` reads (besides "auto", detection).
#[pyfunction]
fn formats() -> Vec<&'static str> {
    Format::ALL.iter().map(|f| f.name()).collect()
}

/// Panics inside Rust on purpose, so tests can check that a panic becomes a Python exception.
#[pyfunction]
fn _panic_for_test(py: Python<'_>) -> PyResult<()> {
    run_detached(py, || -> Result<(), Error> { panic!("deliberate test panic") })?.map_err(|e| to_py_err(e, None))
}

#[pymodule]
mod _native {
    #[pymodule_init]
    fn init(_m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        super::install_fork_guard();
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
    use super::{
        _panic_for_test, bert4rec_batch, default_ivf_settings, detect_format, eval_negatives, formats, histories,
        parse_timestamp, prepare_dataset, prepare_synthetic, sasrec_batch, similar_users, DataError, DatasetHandle,
    };
}
