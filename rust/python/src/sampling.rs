//! Seeded sampling over a dataset handle: evaluation negatives, model inputs and training batches.

use crate::dataset::{contiguous, Borrowed, DatasetHandle};
use crate::runtime::{run_detached, to_py_err};
use llmesr_core::sampling::{Negatives, Sequences};
use llmesr_core::Error;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;

/// Negatives for the sampled evaluation protocol: `[n_users + 1, n_neg]` (row 0 zeros).
#[pyfunction]
pub(crate) fn eval_negatives<'py>(
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
pub(crate) fn sasrec_batch<'py>(
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
pub(crate) fn bert4rec_batch<'py>(
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
pub(crate) fn histories<'py>(
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
