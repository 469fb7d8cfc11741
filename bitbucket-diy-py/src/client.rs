//! `MaintenanceClient`, `MaintenanceLock` and what Bitbucket answers, as Python classes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitbucket_diy_core::Error;
use bitbucket_diy_core::client::{self as core_client, ClientError, DrainOptions, UnlockToken};
use bitbucket_diy_core::error::ManualCommand;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use tokio_util::sync::CancellationToken;

use crate::callback::{ActiveRuns, PyCallback};
use crate::convert::{duration_arg, py_repr, py_repr_opt};
use crate::errors::{client_err, config_err};
use crate::runtime::{runtime, wait_for, wait_short};

/// Unlock attempts of `with client.lock():` on a transient failure.
const CONTEXT_UNLOCK_ATTEMPTS: u32 = 3;

/// A client of Bitbucket's maintenance and backup REST API.
///
/// ``MaintenanceClient(url, user, password)`` talks to the instance at `url` (context path
/// included) as `user`, a system administrator. Optional keyword arguments: `connect_timeout`
/// (default 10 s) and `request_timeout` (60 s), in seconds or as `timedelta`s; `ca_cert`, a PEM
/// file of an extra CA to trust; `insecure_skip_tls_verify`; `retries`, the attempts (first
/// included) of retried calls (default 4). A bad URL raises `ConfigError`.
///
/// Every method blocks until Bitbucket answers, without holding the GIL (other Python threads
/// keep running), and raises a subclass of `bitbucket_diy.BitbucketDiyError` on failure.
/// Idempotent reads and progress reports are retried on transient failures; `lock` and
/// `start_backup` never are (a lost answer would lose the token).
///
/// Example::
///
///     client = MaintenanceClient("https://bitbucket.example.com", "backup-admin", password)
///     print(client.application_properties().version)
///     with client.lock() as lock:              # unlocked when the block ends, even on error
///         task = client.start_backup(lock)
///         client.wait_drained(lock, timeout=600)
///         ...                                  # copy the database and the home
///         client.report_progress(lock, 100)
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct MaintenanceClient {
    pub(crate) inner: core_client::MaintenanceClient,
}

#[pymethods]
impl MaintenanceClient {
    /// See the class documentation.
    #[new]
    #[pyo3(signature = (url, user, password, *, connect_timeout = None, request_timeout = None, ca_cert = None, insecure_skip_tls_verify = false, retries = 4))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: &str,
        user: &str,
        password: &str,
        connect_timeout: Option<&Bound<'_, PyAny>>,
        request_timeout: Option<&Bound<'_, PyAny>>,
        ca_cert: Option<PathBuf>,
        insecure_skip_tls_verify: bool,
        retries: u32,
    ) -> PyResult<Self> {
        let mut builder = core_client::MaintenanceClient::builder(url)
            .credentials(user, secrecy::SecretString::from(password.to_owned()))
            .danger_skip_tls_verify(insecure_skip_tls_verify)
            .retries(retries, Duration::from_millis(250));
        if let Some(timeout) = connect_timeout {
            builder = builder.connect_timeout(duration_arg(timeout, "connect_timeout")?);
        }
        if let Some(timeout) = request_timeout {
            builder = builder.request_timeout(duration_arg(timeout, "request_timeout")?);
        }
        if let Some(pem) = ca_cert {
            builder = builder.ca_certificate(pem);
        }
        let inner = builder.build().map_err(|e| client_err(py, e))?;
        Ok(Self { inner })
    }

    /// The base URL, context path included.
    #[getter]
    fn url(&self) -> String {
        self.inner.base_url().to_string()
    }

    /// The user the client authenticates as.
    #[getter]
    fn user(&self) -> String {
        self.inner.user().to_owned()
    }

    fn __repr__(&self) -> String {
        format!(
            "MaintenanceClient(url={}, user={})",
            py_repr(self.inner.base_url().as_str()),
            py_repr(self.inner.user())
        )
    }

    /// `GET /rest/api/1.0/application-properties`: Bitbucket's version (no authentication needed).
    fn application_properties(&self, py: Python<'_>) -> PyResult<ApplicationProperties> {
        let client = self.inner.clone();
        let props =
            wait_short(py, async move { client.application_properties().await })?.map_err(|e| client_err(py, e))?;
        Ok(ApplicationProperties {
            version: props.version,
            build_number: props.build_number,
            build_date: props.build_date,
            display_name: props.display_name,
        })
    }

    /// `GET /status`: whether the instance serves users (no authentication needed).
    fn status(&self, py: Python<'_>) -> PyResult<InstanceStatus> {
        let client = self.inner.clone();
        let status = wait_short(py, async move { client.status().await })?.map_err(|e| client_err(py, e))?;
        Ok(InstanceStatus { is_running: status.is_running(), state: status.state.as_str().to_owned() })
    }

    /// `POST /mvc/maintenance/lock`: put the instance in maintenance mode.
    ///
    /// Returns a `MaintenanceLock`; use it in a `with` block so the instance is unlocked however
    /// the block ends. Raises `AlreadyLockedError` when someone else holds the lock. A Ctrl-C
    /// during the request waits for the answer and unlocks again before raising.
    fn lock(&self, py: Python<'_>) -> PyResult<MaintenanceLock> {
        let client = self.inner.clone();
        let waited = wait_for(py, &CancellationToken::new(), async move { client.lock().await })?;
        let lock = waited.output.map_err(|e| client_err(py, e))?;
        let lock = MaintenanceLock::new(lock, self.inner.clone());
        if let Some(interrupt) = waited.interrupted {
            // Interrupted while the lock was being taken: give it back before raising.
            let _ = lock.release_inner(py, 1);
            return Err(interrupt);
        }
        Ok(lock)
    }

    /// `POST /mvc/admin/backups?external=true`: start Bitbucket's backup task, which drains the
    /// database and the filesystem. Returns a `BackupTask` (its cancel token stays hidden).
    fn start_backup(&self, py: Python<'_>, lock: &MaintenanceLock) -> PyResult<BackupTask> {
        let token = lock.token(py)?;
        let client = self.inner.clone();
        let task = wait_short(py, async move { client.start_backup(&token).await })?.map_err(|e| client_err(py, e))?;
        Ok(BackupTask {
            id: task.id,
            progress_message: task.progress.as_ref().map(|p| p.message.clone()),
            progress_percentage: task.progress.as_ref().map(|p| p.percentage),
            cancel_token: task.cancel_token,
        })
    }

    /// `GET /mvc/maintenance`: the backup task's state and both drain states.
    fn maintenance_state(&self, py: Python<'_>, lock: &MaintenanceLock) -> PyResult<MaintenanceState> {
        let token = lock.token(py)?;
        let client = self.inner.clone();
        let state =
            wait_short(py, async move { client.maintenance_state(&token).await })?.map_err(|e| client_err(py, e))?;
        Ok(MaintenanceState::from(&state))
    }

    /// Poll `GET /mvc/maintenance` every `poll_interval` until both `db-state` and `scm-state`
    /// are `DRAINED`; returns how long it took, as a `timedelta`.
    ///
    /// Raises `DrainFailedError` as soon as the task is anything but `RUNNING`, and
    /// `DrainTimeoutError` after `timeout`. `on_poll`, if given, is called with every
    /// `MaintenanceState` read (from another thread); if it raises, the wait stops and its
    /// exception is raised. Ctrl-C stops the wait and raises `KeyboardInterrupt`.
    #[pyo3(signature = (lock, *, poll_interval = None, timeout = None, on_poll = None))]
    fn wait_drained(
        &self,
        py: Python<'_>,
        lock: &MaintenanceLock,
        poll_interval: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        on_poll: Option<Py<PyAny>>,
    ) -> PyResult<Duration> {
        let mut options = DrainOptions::default();
        if let Some(interval) = poll_interval {
            options.poll_interval = duration_arg(interval, "poll_interval")?;
        }
        if let Some(timeout) = timeout {
            options.timeout = duration_arg(timeout, "timeout")?;
        }
        if options.poll_interval.is_zero() {
            return Err(config_err(py, "`poll_interval` must be more than zero"));
        }
        let token = lock.token(py)?;
        let client = self.inner.clone();
        let cancel = CancellationToken::new();
        let runs = Arc::new(ActiveRuns::default());
        let _run = runs.register(cancel.clone());
        let callback = on_poll.map(|c| Arc::new(PyCallback::new(c)));
        let (task_cancel, task_callback, task_runs) = (cancel.clone(), callback.clone(), runs.clone());
        let waited = wait_for(py, &cancel, async move {
            let on_poll = |state: &core_client::MaintenanceState| {
                if let Some(callback) = &task_callback {
                    let state = MaintenanceState::from(state);
                    callback.call(&task_runs, |py| Ok(Bound::new(py, state)?.into_any()));
                }
            };
            client.wait_drained(&token, &options, &task_cancel, on_poll).await
        })?;
        if let Some(interrupt) = waited.interrupted {
            return Err(interrupt);
        }
        if let Some(raised) = callback.and_then(|c| c.take_failure()) {
            return Err(raised);
        }
        waited.output.map(|drained| drained.waited()).map_err(|e| client_err(py, e))
    }

    /// `POST /mvc/admin/backups/progress/client`: report the backup's progress (0–100) to
    /// Bitbucket; 100 means finished and un-latches the database and filesystem.
    fn report_progress(&self, py: Python<'_>, lock: &MaintenanceLock, percentage: u8) -> PyResult<()> {
        let token = lock.token(py)?;
        let client = self.inner.clone();
        wait_short(py, async move { client.report_progress(&token, percentage).await })?.map_err(|e| client_err(py, e))
    }

    /// `POST /mvc/maintenance?token=<cancel token>`: end Bitbucket's backup task. The instance
    /// stays locked.
    fn cancel_backup(&self, py: Python<'_>, task: &BackupTask) -> PyResult<()> {
        let token = task.cancel_token.clone();
        let client = self.inner.clone();
        wait_short(py, async move { client.cancel_backup(&token).await })?.map_err(|e| client_err(py, e))
    }

    /// `DELETE /mvc/maintenance/lock`: leave maintenance mode, with a `MaintenanceLock` or, to
    /// recover after a crash, the unlock token as a string. One attempt; raises on failure.
    fn unlock(&self, py: Python<'_>, lock: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(lock) = lock.cast::<MaintenanceLock>() {
            return lock.get().release_inner(py, 1).map(drop);
        }
        let token: String =
            lock.extract().map_err(|_| config_err(py, "`unlock` takes a MaintenanceLock or an unlock token (str)"))?;
        let token = UnlockToken::new(token);
        let client = self.inner.clone();
        wait_short(py, async move { client.unlock(&token).await })?.map_err(|e| client_err(py, e))
    }
}

/// The maintenance lock: Bitbucket stays in maintenance mode until `release()` or the end of the
/// `with` block that holds it.
///
/// ``with client.lock() as lock:`` always unlocks when the block ends, also when it raises or on
/// Ctrl-C (transient failures are retried). If unlocking fails, `LeftLockedError` is raised with
/// the command that unlocks by hand. A lock never released nor used in a `with` block makes one
/// best-effort unlock attempt when garbage-collected, and logs the manual command if that fails.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct MaintenanceLock {
    lock: Mutex<Option<core_client::MaintenanceLock>>,
    client: core_client::MaintenanceClient,
    token: UnlockToken,
    owner: String,
    lock_window: Mutex<Option<Duration>>,
}

impl MaintenanceLock {
    fn new(lock: core_client::MaintenanceLock, client: core_client::MaintenanceClient) -> Self {
        Self {
            owner: lock.owner().to_string(),
            token: lock.token().clone(),
            client,
            lock: Mutex::new(Some(lock)),
            lock_window: Mutex::new(None),
        }
    }

    /// The unlock token, while the lock is held.
    fn token(&self, py: Python<'_>) -> PyResult<UnlockToken> {
        if self.is_held() { Ok(self.token.clone()) } else { Err(config_err(py, "this maintenance lock was released")) }
    }

    fn is_held(&self) -> bool {
        self.lock.lock().map(|l| l.is_some()).unwrap_or(false)
    }

    /// Unlock, trying up to `attempts` times on transient failures.
    fn release_inner(&self, py: Python<'_>, attempts: u32) -> PyResult<Duration> {
        let Some(mut lock) = self.lock.lock().map_err(|_| PyRuntimeError::new_err("lock state poisoned"))?.take()
        else {
            return self
                .lock_window
                .lock()
                .ok()
                .and_then(|w| *w)
                .ok_or_else(|| config_err(py, "this maintenance lock was released"));
        };
        let mut interrupted = None;
        for attempt in 1..=attempts {
            let waited = wait_for(py, &CancellationToken::new(), async move { lock.release().await })?;
            interrupted = interrupted.or(waited.interrupted);
            match waited.output {
                Ok(window) => {
                    if let Ok(mut slot) = self.lock_window.lock() {
                        *slot = Some(window);
                    }
                    return match interrupted {
                        Some(interrupt) => Err(interrupt),
                        None => Ok(window),
                    };
                }
                Err((back, error)) => {
                    if matches!(error, ClientError::InvalidToken { .. }) && !self.still_in_maintenance(py)? {
                        // As the orchestrator does: a rejected token after a manual unlock.
                        let window = back.locked_at().elapsed();
                        drop(back.into_token());
                        if let Ok(mut slot) = self.lock_window.lock() {
                            *slot = Some(window);
                        }
                        return interrupted.map_or(Ok(window), Err);
                    }
                    let retry = attempt < attempts && error.is_retryable();
                    if !retry {
                        let command = back.unlock_command();
                        // Handed back so a later `release()` can try again.
                        if let Ok(mut slot) = self.lock.lock() {
                            *slot = Some(back);
                        }
                        return Err(left_locked(py, error, command));
                    }
                    lock = back;
                    py.detach(|| std::thread::sleep(Duration::from_millis(500) * attempt));
                }
            }
        }
        Err(PyRuntimeError::new_err("internal error: unlock attempts exhausted without an outcome"))
    }
}

impl MaintenanceLock {
    /// Whether `/status` says the instance is in maintenance mode (or cannot say).
    fn still_in_maintenance(&self, py: Python<'_>) -> PyResult<bool> {
        let client = self.client.clone();
        let status = wait_short(py, async move { client.status().await })?;
        Ok(status.map_or(true, |s| s.state == core_client::InstanceState::Maintenance))
    }
}

/// The instance is still locked after `error`: the error that says so, with the manual command.
fn left_locked(py: Python<'_>, error: ClientError, unlock_command: ManualCommand) -> PyErr {
    let error = Error::LeftLocked { unlock_error: Box::new(error), cause: None, unlock_command };
    crate::errors::to_py_err(py, &error)
}

#[pymethods]
impl MaintenanceLock {
    /// Who Bitbucket says holds the lock.
    #[getter]
    fn owner(&self) -> String {
        self.owner.clone()
    }

    /// Whether the instance is still locked by this lock.
    #[getter(is_held)]
    fn get_is_held(&self) -> bool {
        self.is_held()
    }

    /// From the lock request to the unlock, once released (`None` while held).
    #[getter]
    fn lock_window(&self) -> Option<Duration> {
        self.lock_window.lock().ok().and_then(|w| *w)
    }

    /// The shell command that unlocks the instance by hand. It holds the unlock token: print it
    /// only where a human needs it.
    fn unlock_command(&self) -> String {
        self.client.unlock_command(&self.token).expose().to_owned()
    }

    /// Unlock (one attempt). Returns the lock window (from the lock request to now). Raises
    /// `LeftLockedError`, with the manual command, if Bitbucket refuses; the lock stays held so
    /// `release()` can be called again. A rejected token while ``/status`` shows the instance
    /// out of maintenance (someone unlocked by hand) counts as released.
    fn release(&self, py: Python<'_>) -> PyResult<Duration> {
        self.release_inner(py, 1)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Unlock, whatever ended the block. An unlock failure is raised as `LeftLockedError`, with
    /// the block's own exception as its context.
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyType>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.is_held() {
            self.release_inner(py, CONTEXT_UNLOCK_ATTEMPTS)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.is_held() { "held" } else { "released" };
        format!("MaintenanceLock(owner={}, {state})", py_repr(&self.owner))
    }
}

impl Drop for MaintenanceLock {
    fn drop(&mut self) {
        // The core's guard makes one best-effort unlock on the runtime it is dropped in.
        if let (Ok(runtime), Some(lock)) = (runtime(), self.lock.get_mut().ok().and_then(Option::take)) {
            let _entered = runtime.enter();
            drop(lock);
        }
    }
}

/// Bitbucket's backup task, started by `MaintenanceClient.start_backup`. Its cancel token stays
/// inside; pass the task to `MaintenanceClient.cancel_backup`.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct BackupTask {
    cancel_token: core_client::CancelToken,
    /// The task's id, when Bitbucket sends one.
    #[pyo3(get)]
    id: Option<String>,
    /// Bitbucket's progress message at start.
    #[pyo3(get)]
    progress_message: Option<String>,
    /// Bitbucket's progress percentage at start.
    #[pyo3(get)]
    progress_percentage: Option<u8>,
}

#[pymethods]
impl BackupTask {
    fn __repr__(&self) -> String {
        format!("BackupTask(id={})", py_repr_opt(self.id.as_deref()))
    }
}

/// What `GET /rest/api/1.0/application-properties` says.
#[pyclass(module = "bitbucket_diy", frozen, get_all)]
pub(crate) struct ApplicationProperties {
    /// Bitbucket's version, e.g. ``"8.19.0"``.
    version: String,
    /// Build number.
    build_number: Option<String>,
    /// Build date.
    build_date: Option<String>,
    /// Product name.
    display_name: Option<String>,
}

#[pymethods]
impl ApplicationProperties {
    fn __repr__(&self) -> String {
        format!("ApplicationProperties(version={})", py_repr(&self.version))
    }
}

/// What `GET /status` says.
#[pyclass(module = "bitbucket_diy", frozen, get_all)]
pub(crate) struct InstanceStatus {
    /// ``"RUNNING"``, ``"MAINTENANCE"``, ``"STARTING"``… as Bitbucket sends it.
    state: String,
    /// Whether the instance serves users (``state == "RUNNING"``).
    is_running: bool,
}

#[pymethods]
impl InstanceStatus {
    fn __repr__(&self) -> String {
        format!("InstanceStatus(state={})", py_repr(&self.state))
    }
}

/// What `GET /mvc/maintenance` says: the backup task and both drain states.
#[pyclass(module = "bitbucket_diy", frozen, get_all)]
pub(crate) struct MaintenanceState {
    /// ``"RUNNING"``, ``"SUCCESSFUL"``, ``"CANCELED"``, ``"FAILED"``, or ``"NONE"`` with no task.
    task_state: String,
    /// The task's id, when there is one.
    task_id: Option<String>,
    /// ``"AVAILABLE"``, ``"DRAINING"`` or ``"DRAINED"``.
    db_state: String,
    /// ``"AVAILABLE"``, ``"DRAINING"`` or ``"DRAINED"``.
    scm_state: String,
    /// The task's progress message.
    progress_message: Option<String>,
    /// The task's progress percentage.
    progress_percentage: Option<u8>,
    /// Both states are ``"DRAINED"``.
    is_drained: bool,
}

impl From<&core_client::MaintenanceState> for MaintenanceState {
    fn from(state: &core_client::MaintenanceState) -> Self {
        let progress = state.task.as_ref().and_then(|t| t.progress.as_ref());
        Self {
            task_state: state.task_state().as_str().to_owned(),
            task_id: state.task.as_ref().and_then(|t| t.id.clone()),
            db_state: state.db_state.as_str().to_owned(),
            scm_state: state.scm_state.as_str().to_owned(),
            progress_message: progress.map(|p| p.message.clone()),
            progress_percentage: progress.map(|p| p.percentage),
            is_drained: state.is_drained(),
        }
    }
}

#[pymethods]
impl MaintenanceState {
    fn __repr__(&self) -> String {
        format!(
            "MaintenanceState(task_state={}, db_state={}, scm_state={})",
            py_repr(&self.task_state),
            py_repr(&self.db_state),
            py_repr(&self.scm_state)
        )
    }
}
