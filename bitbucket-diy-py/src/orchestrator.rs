//! `BackupOrchestrator`: backups, restores, listings and verifications, from a configuration dict
//! or file, with optional Python strategies and a progress callback.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bitbucket_diy_core::config::{BackupConfig, LoadedConfig};
use bitbucket_diy_core::events::{Event, EventSink};
use bitbucket_diy_core::orchestrator::{self as core_orchestrator, RestoreRequest};
use bitbucket_diy_core::{Error, ErrorKind};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio_util::sync::CancellationToken;

use crate::callback::{ActiveRuns, PyCallback};
use crate::convert::{path_repr, py_repr, to_py_data};
use crate::errors::{config_err, to_py_err};
use crate::reports::{ArchiveInfo, BackupReport, RestoreReport, VerifyReport};
use crate::runtime::wait_for;
use crate::strategies::{PyDatabaseStrategy, PyFilesystemStrategy};

/// Hands every event to the Python callback as a dict.
struct CallbackSink {
    callback: Arc<PyCallback>,
    runs: Arc<ActiveRuns>,
}

impl EventSink for CallbackSink {
    fn emit(&self, event: &Event) {
        self.callback.call(&self.runs, |py| to_py_data(py, event));
    }
}

/// Runs backups, restores, listings and verifications of one Bitbucket instance.
///
/// Built from a configuration of the same schema as the CLI's TOML file, given either as a
/// dict or as the path of a TOML file (whose ``BITBUCKET_DIY_*`` environment overrides apply, as
/// for the CLI)::
///
///     orchestrator = BackupOrchestrator("/etc/bitbucket-diy/config.toml", on_event=print)
///     report = orchestrator.backup()
///     print(report.id, report.archive, report.lock_window)
///
/// `database` and `filesystem` replace the configured strategies with Python objects (see
/// `bitbucket_diy.DatabaseStrategy` and `bitbucket_diy.FilesystemStrategy`). `password` is the
/// Bitbucket user's password when the configuration does not say where to find it.
///
/// `on_event` is called with a dict for every event (``{"event": "phase-started", "phase":
/// "lock"}``, ``{"event": "progress", "phase": "archive", "done": …, "total": …, "unit":
/// "bytes"}``, ``{"event": "unlocked", "lock_window": 1.93}``…), the shapes of the CLI's
/// ``--json-progress``, from worker threads. If it raises, the run is cancelled, the instance
/// unlocked, and that exception is raised by the call that started the run (even if the run
/// had already finished, so a broken callback never goes unnoticed).
///
/// Ctrl-C (`KeyboardInterrupt`) during a call cancels the run; the call returns only after the
/// running steps have stopped and Bitbucket is unlocked, then raises the `KeyboardInterrupt`
/// (or `LeftLockedError`, if unlocking failed).
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct BackupOrchestrator {
    inner: Arc<core_orchestrator::BackupOrchestrator>,
    runs: Arc<ActiveRuns>,
    callback: Option<Arc<PyCallback>>,
}

/// `json.dumps` fallback for configuration dicts: paths as strings, `timedelta`s as seconds.
#[pyfunction]
fn config_json_default(value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let py = value.py();
    let os = py.import("os")?;
    if value.is_instance(&os.getattr("PathLike")?)? {
        return Ok(os.call_method1("fspath", (value,))?.unbind());
    }
    if value.is_instance(&py.import("datetime")?.getattr("timedelta")?)? {
        let seconds: f64 = value.call_method0("total_seconds")?.extract()?;
        return Ok(PyString::new(py, &format!("{}ms", (seconds * 1000.0).round() as i64)).into_any().unbind());
    }
    Err(config_err(
        py,
        format!(
            "configuration value {value} of type {} is not str, int, float, bool, list, dict, path or timedelta",
            value.get_type().name()?
        ),
    ))
}

/// Read the configuration argument: a dict, or the path of a TOML file.
fn load_config(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<LoadedConfig> {
    if let Ok(dict) = config.cast::<PyDict>() {
        let default = wrap_pyfunction!(config_json_default, py)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("default", default)?;
        let json: String = py.import("json")?.call_method("dumps", (dict,), Some(&kwargs))?.extract()?;
        return BackupConfig::from_json_str(&json).map_err(|e| to_py_err(py, &Error::Config(e)));
    }
    let path: PathBuf = config
        .extract()
        .map_err(|_| config_err(py, "`config` must be a dict or the path of a TOML configuration file"))?;
    py.detach(|| BackupConfig::load(&path)).map_err(|e| to_py_err(py, &Error::Config(e)))
}

impl BackupOrchestrator {
    /// Run `work` on the runtime until it ends; see the class documentation for interrupts and
    /// callback failures.
    fn run<T, F, Fut>(&self, py: Python<'_>, work: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<core_orchestrator::BackupOrchestrator>, CancellationToken) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let waited = {
            let _registered = self.runs.register(cancel.clone());
            wait_for(py, &cancel, work(self.inner.clone(), cancel.clone()))?
        };
        let callback_failure = self.callback.as_ref().and_then(|c| c.take_failure());
        match (waited.output, waited.interrupted.or(callback_failure)) {
            (Err(error), Some(why)) if error.kind() == ErrorKind::LeftLocked => {
                // Being still locked is what a human must hear about; the interrupt is its context.
                let left_locked = to_py_err(py, &error);
                left_locked.value(py).setattr("__context__", why.value(py))?;
                Err(left_locked)
            }
            (_, Some(why)) => Err(why),
            (Ok(value), None) => Ok(value),
            (Err(error), None) => Err(to_py_err(py, &error)),
        }
    }
}

/// An archive argument: a backup id, a file name, a path, or an `ArchiveInfo`.
fn archive_name(py: Python<'_>, archive: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(info) = archive.getattr("path")
        && archive.is_instance_of::<ArchiveInfo>()
    {
        return info.extract::<PathBuf>().map(|p| p.display().to_string());
    }
    let path: PathBuf = archive
        .extract()
        .map_err(|_| config_err(py, "`archive` must be a backup id, an archive path or an ArchiveInfo"))?;
    Ok(path.display().to_string())
}

#[pymethods]
impl BackupOrchestrator {
    /// Build an orchestrator from `config` (a dict, or the path of a TOML file). Raises
    /// `ConfigError` naming what is wrong.
    #[new]
    #[pyo3(signature = (config, *, on_event = None, database = None, filesystem = None, password = None))]
    fn new(
        py: Python<'_>,
        config: &Bound<'_, PyAny>,
        on_event: Option<Py<PyAny>>,
        database: Option<&Bound<'_, PyAny>>,
        filesystem: Option<&Bound<'_, PyAny>>,
        password: Option<String>,
    ) -> PyResult<Self> {
        let loaded = load_config(py, config)?;
        if !loaded.warnings.is_empty() {
            let warnings = py.import("warnings")?;
            for warning in &loaded.warnings {
                warnings
                    .call_method1("warn", (warning.as_str(), py.get_type::<pyo3::exceptions::PyUserWarning>(), 2))?;
            }
        }
        let mut builder =
            core_orchestrator::BackupOrchestrator::from_config(&loaded.config).map_err(|e| to_py_err(py, &e))?;
        if let Some(password) = password {
            builder =
                builder.bitbucket_password(secrecy::SecretString::from(password)).map_err(|e| to_py_err(py, &e))?;
        }
        if let Some(database) = database {
            builder = builder.database_boxed(Box::new(PyDatabaseStrategy::new(py, database)?));
        }
        if let Some(filesystem) = filesystem {
            builder = builder.filesystem_boxed(Box::new(PyFilesystemStrategy::new(py, filesystem)?));
        }
        let runs = Arc::new(ActiveRuns::default());
        let callback = match on_event {
            Some(callable) if !callable.bind(py).is_callable() => {
                return Err(config_err(py, "`on_event` must be callable (it receives one dict per event)"));
            }
            Some(callable) => Some(Arc::new(PyCallback::new(callable))),
            None => None,
        };
        if let Some(callback) = &callback {
            builder = builder.events(Arc::new(CallbackSink { callback: callback.clone(), runs: runs.clone() }));
        }
        let inner = builder.build().map_err(|e| to_py_err(py, &e))?;
        Ok(Self { inner: Arc::new(inner), runs, callback })
    }

    /// Take one backup: prepare, lock, drain, consistent copies, unlock, archive, retention.
    /// Bitbucket is unlocked whatever happens. Returns a `BackupReport`.
    fn backup(&self, py: Python<'_>) -> PyResult<BackupReport> {
        self.run(py, |orchestrator, cancel| async move { orchestrator.backup(cancel).await }).map(BackupReport::new)
    }

    /// Restore backup `archive` (an id, file name, path or `ArchiveInfo`) into a **new** `home`
    /// (absent or empty; absolute) and, unless the database lives in the home, a **new**
    /// `database`. `data_stores` maps original data-store paths to new ones. Targets are checked
    /// before anything is written; a failed restore removes what it wrote into the home.
    #[pyo3(signature = (archive, home, database = None, *, data_stores = None))]
    fn restore(
        &self,
        py: Python<'_>,
        archive: &Bound<'_, PyAny>,
        home: PathBuf,
        database: Option<String>,
        data_stores: Option<BTreeMap<PathBuf, PathBuf>>,
    ) -> PyResult<RestoreReport> {
        let mut request = RestoreRequest::new(archive_name(py, archive)?, home, database);
        request.data_stores = data_stores.unwrap_or_default();
        self.run(py, move |orchestrator, cancel| async move { orchestrator.restore(&request, cancel).await })
            .map(RestoreReport::new)
    }

    /// Every complete backup in the archive folder, newest first, as `ArchiveInfo`s.
    fn list_backups(&self, py: Python<'_>) -> PyResult<Vec<ArchiveInfo>> {
        self.run(py, |orchestrator, _| async move { orchestrator.list_backups().await })
            .map(|all| all.into_iter().map(ArchiveInfo::new).collect())
    }

    /// Check `archive` against its manifest (every file's size and SHA-256). With `deep`, also
    /// extract it into the working folder and run ``git fsck`` on every repository. Raises
    /// `ArchiveError` when anything does not match.
    #[pyo3(signature = (archive, *, deep = false))]
    fn verify(&self, py: Python<'_>, archive: &Bound<'_, PyAny>, deep: bool) -> PyResult<VerifyReport> {
        let name = archive_name(py, archive)?;
        self.run(py, move |orchestrator, cancel| async move { orchestrator.verify(&name, deep, cancel).await })
            .map(|report| VerifyReport::new(report, deep))
    }

    /// Probe, without locking, what can be probed: the strategies' tools, the folders, and
    /// Bitbucket's version and status. Returns one line per check; raises on the first failure.
    fn check(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.run(py, |orchestrator, _| async move { orchestrator.check().await })
    }

    /// Cancel the runs in progress on this orchestrator (from another thread, a signal handler,
    /// a callback). Each stops its steps, unlocks Bitbucket and raises `CancelledError`.
    fn cancel(&self) {
        self.runs.cancel_all();
    }

    /// The working folder.
    #[getter]
    fn working_folder(&self) -> PathBuf {
        self.inner.working_folder().root().to_owned()
    }

    /// Where archives are kept.
    #[getter]
    fn archive_folder(&self) -> PathBuf {
        self.inner.archive().folder().to_owned()
    }

    /// The database strategy's name (``"postgresql"``, ``"none"``, or a Python strategy's).
    #[getter]
    fn database_strategy(&self) -> String {
        self.inner.database().name().to_owned()
    }

    /// The filesystem strategy's name.
    #[getter]
    fn filesystem_strategy(&self) -> String {
        self.inner.filesystem().name().to_owned()
    }

    /// The archive strategy's name.
    #[getter]
    fn archive_strategy(&self) -> String {
        self.inner.archive().name().to_owned()
    }

    /// The progress callback, if any.
    #[getter]
    fn on_event(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.callback.as_ref().map(|c| c.callable().clone_ref(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "BackupOrchestrator(working_folder={}, database={}, filesystem={}, archive={})",
            path_repr(self.inner.working_folder().root()),
            py_repr(self.inner.database().name()),
            py_repr(self.inner.filesystem().name()),
            py_repr(self.inner.archive().name())
        )
    }
}
