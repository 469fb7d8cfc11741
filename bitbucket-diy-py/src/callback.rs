//! Python callables called from the runtime's threads (progress callbacks, drain polls), and the
//! cancellation of the runs they belong to when they raise.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use tokio_util::sync::CancellationToken;

/// The runs in progress on one object, so they can be cancelled from elsewhere.
#[derive(Debug, Default)]
pub(crate) struct ActiveRuns {
    next_id: AtomicU64,
    runs: Mutex<Vec<(u64, CancellationToken)>>,
}

impl ActiveRuns {
    /// Track `token` until the returned guard is dropped.
    pub(crate) fn register(&self, token: CancellationToken) -> RunGuard<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut runs) = self.runs.lock() {
            runs.push((id, token));
        }
        RunGuard { owner: self, id }
    }

    /// Cancel every run in progress.
    pub(crate) fn cancel_all(&self) {
        if let Ok(runs) = self.runs.lock() {
            for (_, token) in runs.iter() {
                token.cancel();
            }
        }
    }
}

/// Removes its run from [`ActiveRuns`] when dropped.
pub(crate) struct RunGuard<'a> {
    owner: &'a ActiveRuns,
    id: u64,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.owner.runs.lock() {
            runs.retain(|(id, _)| *id != self.id);
        }
    }
}

/// A Python callable called from any thread. Its first exception is kept (to be raised by the
/// call that started the run, once the run has ended) and cancels the runs in progress; after
/// that the callable is not called again, so one bug does not raise a thousand times.
#[derive(Debug)]
pub(crate) struct PyCallback {
    callable: Py<PyAny>,
    failure: Mutex<Option<PyErr>>,
}

impl PyCallback {
    pub(crate) fn new(callable: Py<PyAny>) -> Self {
        Self { callable, failure: Mutex::new(None) }
    }

    /// The callable.
    pub(crate) fn callable(&self) -> &Py<PyAny> {
        &self.callable
    }

    /// Call with the argument `make_argument` builds; on an exception, keep it and cancel `runs`.
    pub(crate) fn call(
        &self,
        runs: &ActiveRuns,
        make_argument: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>>,
    ) {
        if self.failure.lock().map_or(true, |f| f.is_some()) {
            return;
        }
        // None: the interpreter is shutting down; there is nobody left to tell.
        let outcome = Python::try_attach(|py| -> PyResult<()> {
            let argument = make_argument(py)?;
            self.callable.bind(py).call1((argument,))?;
            Ok(())
        });
        if let Some(Err(raised)) = outcome {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert(raised);
            }
            runs.cancel_all();
        }
    }

    /// The exception the callable raised, if it did; the callable is called again afterwards.
    pub(crate) fn take_failure(&self) -> Option<PyErr> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}
