//! Database and filesystem strategies written in Python, and the context objects they receive.
//!
//! The orchestrator calls a Python strategy from a blocking thread (`spawn_blocking`) attached
//! to the interpreter, so a slow strategy never stalls the runtime. A Python exception becomes
//! `StrategyError::Custom` whose message holds the traceback; `bitbucket_diy.CancelledError`
//! becomes `StrategyError::Cancelled`. Python code cannot be interrupted from outside: a long
//! step should check `ctx.is_cancelled()` and stop (the orchestrator unlocks anyway after its
//! cancellation grace period).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bitbucket_diy_core::client::Drained;
use bitbucket_diy_core::events::{Event, Phase, Unit};
use bitbucket_diy_core::strategy::{
    self as core_strategy, DatabaseCapabilities, FilesystemCapabilities, StepReport, StrategyError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{path_repr, py_repr, to_py_data};
use crate::errors::{config_err, error_class};

/// A Python object implementing a strategy protocol, and the name it goes by in manifests.
#[derive(Debug, Clone)]
struct PyStrategy {
    object: Arc<Py<PyAny>>,
    name: String,
}

impl PyStrategy {
    fn new(py: Python<'_>, object: &Bound<'_, PyAny>, family: &str, required: &[&str]) -> PyResult<Self> {
        let name: String = object.getattr("name").and_then(|n| n.extract()).map_err(|_| {
            config_err(py, format!("{family} strategy {object} needs a `name` attribute (a str, recorded in backups)"))
        })?;
        if name.trim().is_empty() {
            return Err(config_err(py, format!("{family} strategy {object}: `name` must not be empty")));
        }
        for method in required {
            if !object.getattr(*method).is_ok_and(|m| m.is_callable()) {
                return Err(config_err(py, format!("{family} strategy `{name}` has no `{method}` method")));
            }
        }
        Ok(Self { object: Arc::new(object.clone().unbind()), name })
    }

    /// The flags `capabilities()` returns (a dict of booleans), checked against `known`.
    fn flags(&self, py: Python<'_>, known: &[&str]) -> PyResult<BTreeMap<String, bool>> {
        let object = self.object.bind(py);
        if !object.hasattr("capabilities")? {
            return Ok(BTreeMap::new());
        }
        let flags: BTreeMap<String, bool> = object.call_method0("capabilities")?.extract().map_err(|_| {
            config_err(py, format!("strategy `{}`: capabilities() must return a dict of booleans", self.name))
        })?;
        if let Some(unknown) = flags.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(config_err(
                py,
                format!("strategy `{}`: unknown capability `{unknown}` (known: {})", self.name, known.join(", ")),
            ));
        }
        Ok(flags)
    }

    /// Call `method` on a blocking thread. An absent optional method is `Ok(None)`.
    async fn call(
        &self,
        method: &'static str,
        optional: bool,
        restore_target: Option<String>,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
    ) -> Result<Option<Py<PyAny>>, StrategyError> {
        let (object, name) = (self.object.clone(), self.name.clone());
        let target = restore_target;
        let outcome = tokio::task::spawn_blocking(move || {
            Python::attach(|py| {
                let object = object.bind(py);
                let called = (|| -> PyResult<Option<Py<PyAny>>> {
                    if optional && !object.hasattr(method)? {
                        return Ok(None);
                    }
                    Ok(Some(object.call_method1(method, args(py)?)?.unbind()))
                })();
                called.map_err(|raised| python_failure(py, &name, method, &raised, target.as_deref()))
            })
        })
        .await;
        outcome.map_err(|e| StrategyError::Custom {
            strategy: self.name.clone(),
            message: format!("{method}() panicked: {e}"),
        })?
    }

    /// Call a step that may return a report dict.
    async fn call_step(
        &self,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static,
    ) -> Result<StepReport, StrategyError> {
        let start = Instant::now();
        let returned = self.call(method, false, None, args).await?;
        let mut report = Python::attach(|py| step_report(returned.as_ref().map(|r| r.bind(py)))).map_err(|reason| {
            StrategyError::Custom { strategy: self.name.clone(), message: format!("{method}() {reason}") }
        })?;
        report.elapsed = start.elapsed();
        Ok(report)
    }
}

/// A Python exception as a strategy error: `CancelledError` means cancelled, `RestoreTargetError`
/// from `check_restore_target` a refused target; anything else keeps its traceback in the message.
fn python_failure(py: Python<'_>, name: &str, method: &str, raised: &PyErr, target: Option<&str>) -> StrategyError {
    let is = |class: &str| error_class(py, class).is_ok_and(|c| raised.value(py).is_instance(&c).unwrap_or(false));
    if is("CancelledError") {
        return StrategyError::Cancelled;
    }
    if let Some(target) = target
        && is("RestoreTargetError")
    {
        let message = raised.value(py).to_string();
        // `ensure_empty_target` already words it as the core does; keep the detail only.
        let prefix = format!("restore target {target} is not empty: ");
        let detail = message.strip_prefix(&prefix).unwrap_or(&message).to_owned();
        return StrategyError::TargetNotEmpty { target: target.to_owned(), detail };
    }
    let value = raised.value(py);
    let format = |function: &str, args: Bound<'_, PyTuple>| -> Option<String> {
        let lines = py.import("traceback").ok()?.call_method1(function, args).ok()?;
        Some(lines.extract::<Vec<String>>().ok()?.concat().trim_end().to_owned())
    };
    // The exception first (what a log line shows), then the traceback (where it happened).
    let summary = PyTuple::new(py, [value.get_type().into_any(), value.clone().into_any()])
        .ok()
        .and_then(|args| format("format_exception_only", args))
        .unwrap_or_else(|| raised.to_string());
    let traceback = raised
        .traceback(py)
        .and_then(|tb| PyTuple::new(py, [tb]).ok())
        .and_then(|args| format("format_tb", args))
        .map_or_else(String::new, |tb| format!("\nTraceback (most recent call last):\n{tb}"));
    StrategyError::Custom { strategy: name.to_owned(), message: format!("{method}() raised {summary}{traceback}") }
}

/// A step's return value: `None`, or a dict with `bytes`, `files`, `unchanged`, `removed` (ints)
/// and `notes` (str to str).
fn step_report(returned: Option<&Bound<'_, PyAny>>) -> Result<StepReport, String> {
    let mut report = StepReport::default();
    let Some(value) = returned.filter(|v| !v.is_none()) else { return Ok(report) };
    let dict = value.cast::<PyDict>().map_err(|_| format!("must return None or a dict, not {}", type_name(value)))?;
    for (key, item) in dict.iter() {
        let key: String = key.extract().map_err(|_| "returned a dict with a non-str key".to_owned())?;
        let count = || item.extract::<u64>().map_err(|_| format!("returned `{key}` that is not a non-negative int"));
        match key.as_str() {
            "bytes" => report.bytes = count()?,
            "files" => report.files = count()?,
            "unchanged" => report.unchanged = count()?,
            "removed" => report.removed = count()?,
            "notes" => {
                report.notes =
                    item.extract().map_err(|_| "returned `notes` that is not a dict of str to str".to_owned())?
            }
            other => {
                return Err(format!(
                    "returned an unknown key `{other}` (known: bytes, files, unchanged, removed, notes)"
                ));
            }
        }
    }
    Ok(report)
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".to_owned())
}

fn with_ctx_and<T, U>(
    ctx: T,
    second: U,
) -> impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static
where
    T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>> + Send + 'static,
    U: pyo3::PyClass + Into<pyo3::PyClassInitializer<U>> + Send + 'static,
{
    move |py| PyTuple::new(py, [Bound::new(py, ctx)?.into_any(), Bound::new(py, second)?.into_any()])
}

fn with_one<U>(only: U) -> impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static
where
    U: pyo3::PyClass + Into<pyo3::PyClassInitializer<U>> + Send + 'static,
{
    move |py| PyTuple::new(py, [Bound::new(py, only)?.into_any()])
}

fn no_args() -> impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>> + Send + 'static {
    |py| Ok(PyTuple::empty(py))
}

// ---------------------------------------------------------------------------------------------

/// A database strategy written in Python.
#[derive(Debug)]
pub(crate) struct PyDatabaseStrategy {
    inner: PyStrategy,
    capabilities: DatabaseCapabilities,
}

impl PyDatabaseStrategy {
    pub(crate) fn new(py: Python<'_>, object: &Bound<'_, PyAny>) -> PyResult<Self> {
        let inner = PyStrategy::new(py, object, "database", &["backup", "restore"])?;
        let flags = inner.flags(py, &["incremental_prepare", "covered_by_filesystem", "atomic_snapshot"])?;
        let flag = |name: &str| flags.get(name).copied().unwrap_or(false);
        let capabilities = DatabaseCapabilities::new(
            flag("incremental_prepare"),
            flag("covered_by_filesystem"),
            flag("atomic_snapshot"),
        );
        Ok(Self { inner, capabilities })
    }
}

#[async_trait]
impl core_strategy::DatabaseStrategy for PyDatabaseStrategy {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> DatabaseCapabilities {
        self.capabilities
    }

    async fn check(&self) -> Result<(), StrategyError> {
        self.inner.call("check", true, None, no_args()).await.map(drop)
    }

    async fn prepare(&self, ctx: &core_strategy::StepContext) -> Result<(), StrategyError> {
        let ctx = StepContext::new(ctx, Phase::PrepareDatabase);
        self.inner.call("prepare", true, None, with_one(ctx)).await.map(drop)
    }

    async fn backup(&self, ctx: &core_strategy::StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        self.inner.call_step("backup", with_one(StepContext::new(ctx, Phase::BackupDatabase))).await
    }

    async fn check_restore_target(&self, target: &core_strategy::DatabaseTarget) -> Result<(), StrategyError> {
        let name = target.database.clone();
        let target = DatabaseTarget { database: target.database.clone() };
        self.inner.call("check_restore_target", true, Some(name), with_one(target)).await.map(drop)
    }

    async fn restore(
        &self,
        ctx: &core_strategy::RestoreContext,
        target: &core_strategy::DatabaseTarget,
    ) -> Result<StepReport, StrategyError> {
        let ctx = RestoreContext::new(ctx, Phase::RestoreDatabase);
        let target = DatabaseTarget { database: target.database.clone() };
        self.inner.call_step("restore", with_ctx_and(ctx, target)).await
    }
}

/// A filesystem strategy written in Python.
#[derive(Debug)]
pub(crate) struct PyFilesystemStrategy {
    inner: PyStrategy,
    capabilities: FilesystemCapabilities,
}

impl PyFilesystemStrategy {
    pub(crate) fn new(py: Python<'_>, object: &Bound<'_, PyAny>) -> PyResult<Self> {
        let inner = PyStrategy::new(py, object, "filesystem", &["backup", "restore"])?;
        let flags = inner.flags(py, &["incremental", "atomic_snapshot"])?;
        let flag = |name: &str| flags.get(name).copied().unwrap_or(false);
        Ok(Self { inner, capabilities: FilesystemCapabilities::new(flag("incremental"), flag("atomic_snapshot")) })
    }
}

#[async_trait]
impl core_strategy::FilesystemStrategy for PyFilesystemStrategy {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capabilities(&self) -> FilesystemCapabilities {
        self.capabilities
    }

    async fn check(&self) -> Result<(), StrategyError> {
        self.inner.call("check", true, None, no_args()).await.map(drop)
    }

    async fn prepare(&self, ctx: &core_strategy::StepContext) -> Result<(), StrategyError> {
        let ctx = StepContext::new(ctx, Phase::PrepareFilesystem);
        self.inner.call("prepare", true, None, with_one(ctx)).await.map(drop)
    }

    async fn backup(&self, ctx: &core_strategy::StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        self.inner.call_step("backup", with_one(StepContext::new(ctx, Phase::BackupFilesystem))).await
    }

    async fn check_restore_target(&self, target: &core_strategy::HomeTarget) -> Result<(), StrategyError> {
        let has_check =
            Python::attach(|py| self.inner.object.bind(py).hasattr("check_restore_target").unwrap_or(false));
        if !has_check {
            // The built-in strategies' rule: the home and every mapped data store new or empty.
            let mut folders = vec![target.home.clone()];
            folders.extend(target.data_stores.values().cloned());
            return tokio::task::spawn_blocking(move || {
                folders.iter().try_for_each(|f| core_strategy::filesystem::ensure_empty_target(f))
            })
            .await
            .map_err(|e| StrategyError::Custom { strategy: self.inner.name.clone(), message: e.to_string() })?;
        }
        let name = target.home.display().to_string();
        self.inner.call("check_restore_target", true, Some(name), with_one(HomeTarget::from(target))).await.map(drop)
    }

    async fn restore(
        &self,
        ctx: &core_strategy::RestoreContext,
        target: &core_strategy::HomeTarget,
    ) -> Result<StepReport, StrategyError> {
        let ctx = RestoreContext::new(ctx, Phase::RestoreFilesystem);
        self.inner.call_step("restore", with_ctx_and(ctx, HomeTarget::from(target))).await
    }
}

// ---------------------------------------------------------------------------------------------
// What Python strategies receive.

fn unit_arg(py: Python<'_>, unit: &str) -> PyResult<Unit> {
    match unit {
        "bytes" => Ok(Unit::Bytes),
        "files" => Ok(Unit::Files),
        other => Err(config_err(py, format!("unit `{other}` is not \"bytes\" or \"files\""))),
    }
}

/// Handed to a Python strategy's `prepare` and `backup`: which backup, where to write, how to
/// report, whether to stop.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct StepContext {
    inner: core_strategy::StepContext,
    phase: Phase,
}

impl StepContext {
    fn new(inner: &core_strategy::StepContext, phase: Phase) -> Self {
        Self { inner: inner.clone(), phase }
    }
}

#[pymethods]
impl StepContext {
    /// The id of the backup being made, e.g. ``"bitbucket-20260101-020000"``.
    #[getter]
    fn backup_id(&self) -> String {
        self.inner.backup_id().to_string()
    }

    /// The phase this call belongs to (``"prepare-database"``, ``"backup-filesystem"``…).
    #[getter]
    fn phase(&self) -> &'static str {
        self.phase.as_str()
    }

    /// The working folder (reused between runs, so copies can be incremental).
    #[getter]
    fn working_folder(&self) -> PathBuf {
        self.inner.working().root().to_owned()
    }

    /// Where a database strategy writes its dump: ``<working folder>/bitbucket-db``.
    #[getter]
    fn database_dir(&self) -> PathBuf {
        self.inner.working().database_dir()
    }

    /// Where a filesystem strategy copies the home: ``<working folder>/bitbucket-home``.
    #[getter]
    fn home_dir(&self) -> PathBuf {
        self.inner.working().home_dir()
    }

    /// Where data stores are copied: ``<working folder>/bitbucket-data-stores``.
    #[getter]
    fn data_stores_dir(&self) -> PathBuf {
        self.inner.working().data_stores_dir()
    }

    /// Where the data store at absolute path `source` is copied.
    fn data_store_dir(&self, source: PathBuf) -> PathBuf {
        self.inner.working().data_store_dir(&source)
    }

    /// Whether the run was cancelled (Ctrl-C, a failed sibling step, the locked-phase timeout):
    /// a long step checks it and stops, e.g. with `raise_if_cancelled()`.
    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Raise `bitbucket_diy.CancelledError` if the run was cancelled.
    fn raise_if_cancelled(&self, py: Python<'_>) -> PyResult<()> {
        raise_if(py, self.inner.is_cancelled())
    }

    /// Report progress in this phase: `done` so far of `total` (if known), in ``"bytes"`` or
    /// ``"files"``. Reaches the orchestrator's progress callback.
    #[pyo3(signature = (done, total = None, unit = "bytes"))]
    fn progress(&self, py: Python<'_>, done: u64, total: Option<u64>, unit: &str) -> PyResult<()> {
        self.inner.progress(self.phase, done, total, unit_arg(py, unit)?);
        Ok(())
    }

    /// Report a warning: kept in the backup report and sent to the progress callback.
    fn warn(&self, message: String) {
        self.inner.warn(message);
    }

    fn __repr__(&self) -> String {
        format!(
            "StepContext(backup_id={}, phase={})",
            py_repr(self.inner.backup_id().as_str()),
            py_repr(self.phase.as_str())
        )
    }
}

fn raise_if(py: Python<'_>, cancelled: bool) -> PyResult<()> {
    if cancelled {
        let class = error_class(py, "CancelledError")?;
        return Err(PyErr::from_value(class.call0()?));
    }
    Ok(())
}

/// Handed to a Python strategy's `restore`: the extracted backup (in working-folder layout),
/// what it recorded, how to report, whether to stop.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct RestoreContext {
    inner: core_strategy::RestoreContext,
    phase: Phase,
}

impl RestoreContext {
    fn new(inner: &core_strategy::RestoreContext, phase: Phase) -> Self {
        Self { inner: inner.clone(), phase }
    }
}

#[pymethods]
impl RestoreContext {
    /// The id of the backup being restored.
    #[getter]
    fn backup_id(&self) -> String {
        self.inner.metadata().id.to_string()
    }

    /// The phase (``"restore-database"`` or ``"restore-filesystem"``).
    #[getter]
    fn phase(&self) -> &'static str {
        self.phase.as_str()
    }

    /// The extracted backup's root (a temporary folder, removed after the restore).
    #[getter]
    fn source_folder(&self) -> PathBuf {
        self.inner.source().root().to_owned()
    }

    /// The extracted database dump: what the database strategy's `backup` wrote.
    #[getter]
    fn database_dir(&self) -> PathBuf {
        self.inner.source().database_dir()
    }

    /// The extracted home copy.
    #[getter]
    fn home_dir(&self) -> PathBuf {
        self.inner.source().home_dir()
    }

    /// The extracted data-store copies.
    #[getter]
    fn data_stores_dir(&self) -> PathBuf {
        self.inner.source().data_stores_dir()
    }

    /// Where the extraction holds the data store originally at `source`.
    fn data_store_dir(&self, source: PathBuf) -> PathBuf {
        self.inner.source().data_store_dir(&source)
    }

    /// What the backup recorded, as a dict: ``id``, ``created_at``, versions, and under
    /// ``database``/``filesystem`` the strategy ``name`` and the ``notes`` its backup returned.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_data(py, self.inner.metadata())
    }

    /// Whether the restore was cancelled.
    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }

    /// Raise `bitbucket_diy.CancelledError` if the restore was cancelled.
    fn raise_if_cancelled(&self, py: Python<'_>) -> PyResult<()> {
        raise_if(py, self.inner.is_cancelled())
    }

    /// Report progress in this phase (see `StepContext.progress`).
    #[pyo3(signature = (done, total = None, unit = "bytes"))]
    fn progress(&self, py: Python<'_>, done: u64, total: Option<u64>, unit: &str) -> PyResult<()> {
        self.inner.emit(Event::Progress { phase: self.phase, done, total, unit: unit_arg(py, unit)? });
        Ok(())
    }

    /// Report a warning to the progress callback.
    fn warn(&self, message: String) {
        self.inner.emit(Event::Warning { message });
    }

    fn __repr__(&self) -> String {
        format!(
            "RestoreContext(backup_id={}, phase={})",
            py_repr(self.inner.metadata().id.as_str()),
            py_repr(self.phase.as_str())
        )
    }
}

/// Where a database is restored: a **new** database the strategy creates (or an existing, empty
/// one). `check_restore_target` must refuse one that holds data.
#[pyclass(module = "bitbucket_diy", frozen, get_all)]
pub(crate) struct DatabaseTarget {
    /// The new database's name (for a file-based database, whatever the strategy makes of it).
    database: String,
}

#[pymethods]
impl DatabaseTarget {
    fn __repr__(&self) -> String {
        format!("DatabaseTarget(database={})", py_repr(&self.database))
    }
}

/// Where a home is restored: a new or empty folder, and one for each remapped data store.
#[pyclass(module = "bitbucket_diy", frozen, get_all)]
pub(crate) struct HomeTarget {
    /// The new home.
    home: PathBuf,
    /// Original data-store path → new path (unmapped stores go back to their original path).
    data_stores: BTreeMap<PathBuf, PathBuf>,
}

impl From<&core_strategy::HomeTarget> for HomeTarget {
    fn from(target: &core_strategy::HomeTarget) -> Self {
        Self { home: target.home.clone(), data_stores: target.data_stores.clone() }
    }
}

#[pymethods]
impl HomeTarget {
    fn __repr__(&self) -> String {
        format!("HomeTarget(home={})", path_repr(&self.home))
    }
}

/// Refuse `folder` if it exists and is a file or a non-empty folder, as the built-in filesystem
/// strategies do (dotfiles count). Raises `RestoreTargetError`.
#[pyfunction]
pub(crate) fn ensure_empty_target(py: Python<'_>, folder: PathBuf) -> PyResult<()> {
    py.detach(|| core_strategy::filesystem::ensure_empty_target(&folder))
        .map_err(|e| crate::errors::error_of_kind(py, e.kind(), &e.to_string()))
}
