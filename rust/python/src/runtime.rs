//! What every binding shares: error mapping, running core work without the GIL (a panic becomes an
//! exception, a forked child gets its own thread pool) and progress callbacks.

use llmesr_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pyo3::create_exception!(_native, DataError, PyValueError, "Malformed or unusable input data.");

pub(crate) fn to_py_err(e: Error, pending: Option<PyErr>) -> PyErr {
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
pub(crate) fn install_fork_guard() {
    // SAFETY: pthread_atfork only records the handler; the handler stores to an atomic, which is
    // async-signal-safe, as a child-side fork handler must be.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    }
}

/// Runs `work` without the GIL, turning a panic into a RuntimeError instead of a crash. In a forked
/// child the work runs in a fresh thread pool instead of the (dead) global one.
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<Result<T, Error>> {
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
pub(crate) struct Reporter {
    pub(crate) callback: Option<Py<PyAny>>,
    pub(crate) pending: Mutex<Option<PyErr>>,
}

impl Reporter {
    pub(crate) fn report(&self, stage: &str, done: u64, total: u64) -> bool {
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
    pub(crate) fn finish<T>(self, result: Result<T, Error>) -> PyResult<T> {
        let pending = self.pending.into_inner().unwrap_or_else(|p| p.into_inner());
        result.map_err(|e| to_py_err(e, pending))
    }
}

#[pyfunction]
pub(crate) fn _panic_for_test(py: Python<'_>) -> PyResult<()> {
    run_detached(py, || -> Result<(), Error> { panic!("deliberate test panic") })?.map_err(|e| to_py_err(e, None))
}
