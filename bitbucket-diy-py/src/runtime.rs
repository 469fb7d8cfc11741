//! The one tokio runtime of the module, and waiting on it without blocking Python.
//!
//! Every call into the core runs on this runtime while the calling thread is detached from the
//! interpreter (other Python threads keep running). The caller wakes every
//! [`SIGNAL_CHECK_INTERVAL`] to run Python's signal handlers, so Ctrl-C is noticed within a
//! fraction of a second even while a backup runs for hours.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// How often a waiting call runs Python's signal handlers.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The module's runtime, started on first use.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bitbucket-diy")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))?;
    // Two threads racing here build two runtimes; the loser's is dropped unused.
    Ok(RUNTIME.get_or_init(|| built))
}

/// What a waited-for future produced, and the exception a signal handler raised meanwhile.
pub(crate) struct Waited<T> {
    /// The future's output: always awaited to the end.
    pub output: T,
    /// Set when a signal handler raised (KeyboardInterrupt on Ctrl-C) while waiting.
    pub interrupted: Option<PyErr>,
}

/// Run `future` on the runtime and wait for it, detached from the interpreter.
///
/// When a signal handler raises while waiting, `cancel` is fired and the future is still awaited
/// to its end: a backup must get to unlock the instance before Python sees the interrupt. A
/// second Ctrl-C during that wind-down is not delivered until it is over.
pub(crate) fn wait_for<T, F>(py: Python<'_>, cancel: &CancellationToken, future: F) -> PyResult<Waited<T>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (sender, receiver) = mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        // The receiver is gone only if the waiting thread died; nothing is left to tell.
        let _ = sender.send(future.await);
    });
    let mut interrupted = None;
    let mut receiver = receiver;
    loop {
        // The receiver is moved through: it may be sent to another thread, not shared with one.
        let (received, returned) = py.detach(move || (receiver.recv_timeout(SIGNAL_CHECK_INTERVAL), receiver));
        receiver = returned;
        match received {
            Ok(output) => return Ok(Waited { output, interrupted }),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("internal error: a bitbucket-diy task panicked"));
            }
        }
        if interrupted.is_none()
            && let Err(signal) = py.check_signals()
        {
            cancel.cancel();
            interrupted = Some(signal);
        }
    }
}

/// Run a short future (one request) on the runtime and wait for it; an interrupt raised meanwhile
/// is raised once the request has ended.
pub(crate) fn wait_short<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let waited = wait_for(py, &CancellationToken::new(), future)?;
    match waited.interrupted {
        Some(interrupt) => Err(interrupt),
        None => Ok(waited.output),
    }
}
