//! What runs return: read-only objects with a `to_dict()` (the CLI's `--json` shape) and a
//! `__repr__` that never shows a secret (none of these holds one).

use std::path::PathBuf;
use std::time::Duration;

use bitbucket_diy_core::orchestrator::{self as core_orchestrator, DeepVerifyReport, PhaseTiming};
use bitbucket_diy_core::strategy::{self as core_strategy};
use pyo3::prelude::*;

use crate::convert::{path_repr, py_repr, py_repr_opt, timestamp_to_py, to_py_data};

fn phases(timings: &[PhaseTiming]) -> Vec<(&'static str, Duration)> {
    timings.iter().map(|t| (t.phase.as_str(), t.elapsed)).collect()
}

/// What one database or filesystem step did.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct StepReport {
    inner: core_strategy::StepReport,
}

impl StepReport {
    fn new(inner: &core_strategy::StepReport) -> Self {
        Self { inner: inner.clone() }
    }
}

#[pymethods]
impl StepReport {
    /// Bytes written or copied.
    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes
    }

    /// Files written or copied.
    #[getter]
    fn files(&self) -> u64 {
        self.inner.files
    }

    /// Files found unchanged (incremental copies).
    #[getter]
    fn unchanged(&self) -> u64 {
        self.inner.unchanged
    }

    /// Files removed because they disappeared from the source.
    #[getter]
    fn removed(&self) -> u64 {
        self.inner.removed
    }

    /// Wall time.
    #[getter]
    fn elapsed(&self) -> Duration {
        self.inner.elapsed
    }

    /// Facts the step recorded (tool versions, formats), also stored in the backup.
    #[getter]
    fn notes(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.notes.clone()
    }

    /// The report as plain data (durations in seconds).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_data(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "StepReport(bytes={}, files={}, elapsed={:.3}s)",
            self.inner.bytes,
            self.inner.files,
            self.inner.elapsed.as_secs_f64()
        )
    }
}

/// The outcome of a successful backup.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct BackupReport {
    inner: core_orchestrator::BackupReport,
}

impl BackupReport {
    pub(crate) fn new(inner: core_orchestrator::BackupReport) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl BackupReport {
    /// The backup's id, e.g. ``"bitbucket-20260101-020000"``.
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// The archive written (for archive type ``none``: the working folder).
    #[getter]
    fn archive(&self) -> PathBuf {
        self.inner.archive.clone()
    }

    /// The archive's size in bytes.
    #[getter]
    fn archive_bytes(&self) -> u64 {
        self.inner.archive_bytes
    }

    /// How long Bitbucket was locked (lock request to unlock); `None` in zero-downtime mode.
    #[getter]
    fn lock_window(&self) -> Option<Duration> {
        self.inner.lock_window
    }

    /// How long Bitbucket took to drain (inside the lock window).
    #[getter]
    fn drain_wait(&self) -> Option<Duration> {
        self.inner.drain_wait
    }

    /// The whole run.
    #[getter]
    fn total(&self) -> Duration {
        self.inner.total
    }

    /// ``(phase, duration)`` of every phase, in the order they ran.
    #[getter]
    fn phases(&self) -> Vec<(&'static str, Duration)> {
        phases(&self.inner.phases)
    }

    /// What the consistent database step did.
    #[getter]
    fn database(&self) -> StepReport {
        StepReport::new(&self.inner.database)
    }

    /// What the consistent filesystem step did.
    #[getter]
    fn filesystem(&self) -> StepReport {
        StepReport::new(&self.inner.filesystem)
    }

    /// Made without a lock (atomic snapshots).
    #[getter]
    fn zero_downtime(&self) -> bool {
        self.inner.zero_downtime
    }

    /// Archives removed by retention.
    #[getter]
    fn pruned(&self) -> Vec<PathBuf> {
        self.inner.pruned.clone()
    }

    /// Warnings raised during the run (a lost progress report, a failed late hook…).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }

    /// When the run started (aware UTC `datetime`).
    #[getter]
    fn started_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        timestamp_to_py(py, self.inner.started_at)
    }

    /// When it ended (aware UTC `datetime`).
    #[getter]
    fn finished_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        timestamp_to_py(py, self.inner.finished_at)
    }

    /// The report as plain data, as the CLI prints it with ``--json`` (durations in seconds).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_data(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        let window = self.inner.lock_window.map_or("None".to_owned(), |w| format!("{:.3}s", w.as_secs_f64()));
        format!(
            "BackupReport(id={}, archive={}, archive_bytes={}, lock_window={window})",
            py_repr(self.inner.id.as_str()),
            path_repr(&self.inner.archive),
            self.inner.archive_bytes
        )
    }
}

/// The outcome of a successful restore.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct RestoreReport {
    inner: core_orchestrator::RestoreReport,
}

impl RestoreReport {
    pub(crate) fn new(inner: core_orchestrator::RestoreReport) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl RestoreReport {
    /// The id of the backup restored.
    #[getter]
    fn id(&self) -> String {
        self.inner.id.to_string()
    }

    /// The archive it came from.
    #[getter]
    fn archive(&self) -> PathBuf {
        self.inner.archive.clone()
    }

    /// The new home.
    #[getter]
    fn home(&self) -> PathBuf {
        self.inner.home.clone()
    }

    /// The new database, when the database strategy restores one.
    #[getter]
    fn database(&self) -> Option<String> {
        self.inner.database.clone()
    }

    /// What the database restore did.
    #[getter]
    fn database_step(&self) -> StepReport {
        StepReport::new(&self.inner.database_step)
    }

    /// What the home restore did.
    #[getter]
    fn filesystem_step(&self) -> StepReport {
        StepReport::new(&self.inner.filesystem_step)
    }

    /// Stale git lock files removed from the restored repositories.
    #[getter]
    fn git_locks_removed(&self) -> Vec<PathBuf> {
        self.inner.git_locks_removed.clone()
    }

    /// ``(phase, duration)`` of every phase.
    #[getter]
    fn phases(&self) -> Vec<(&'static str, Duration)> {
        phases(&self.inner.phases)
    }

    /// The whole restore.
    #[getter]
    fn total(&self) -> Duration {
        self.inner.total
    }

    /// The report as plain data (durations in seconds).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_data(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "RestoreReport(id={}, home={}, database={})",
            py_repr(self.inner.id.as_str()),
            path_repr(&self.inner.home),
            py_repr_opt(self.inner.database.as_deref())
        )
    }
}

/// One stored backup, as `BackupOrchestrator.list_backups()` finds it.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct ArchiveInfo {
    inner: core_strategy::ArchiveInfo,
}

impl ArchiveInfo {
    pub(crate) fn new(inner: core_strategy::ArchiveInfo) -> Self {
        Self { inner }
    }
}

#[pymethods]
impl ArchiveInfo {
    /// The backup's id.
    #[getter]
    fn id(&self) -> String {
        self.inner.metadata.id.to_string()
    }

    /// Where the archive is.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path.clone()
    }

    /// Its size on disk.
    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes
    }

    /// When the consistent point was reached (aware UTC `datetime`).
    #[getter]
    fn created_at<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        timestamp_to_py(py, self.inner.metadata.created_at)
    }

    /// The lock window of the backup, if it was locked.
    #[getter]
    fn lock_window(&self) -> Option<Duration> {
        self.inner.metadata.lock_window
    }

    /// Bitbucket's version at backup time, when it could be read.
    #[getter]
    fn bitbucket_version(&self) -> Option<String> {
        self.inner.metadata.bitbucket_version.clone()
    }

    /// The database strategy that made the backup (restore needs the same).
    #[getter]
    fn database_strategy(&self) -> String {
        self.inner.metadata.database.name.clone()
    }

    /// The filesystem strategy that made the backup.
    #[getter]
    fn filesystem_strategy(&self) -> String {
        self.inner.metadata.filesystem.name.clone()
    }

    /// Everything the backup recorded (its metadata), as plain data.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_data(py, &self.inner.metadata)
    }

    /// The archive as plain data: ``metadata``, ``path``, ``bytes``.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_data(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "ArchiveInfo(id={}, path={}, bytes={})",
            py_repr(self.inner.metadata.id.as_str()),
            path_repr(&self.inner.path),
            self.inner.bytes
        )
    }
}

/// What verifying an archive found.
#[pyclass(module = "bitbucket_diy", frozen)]
pub(crate) struct VerifyReport {
    inner: DeepVerifyReport,
    deep: bool,
}

impl VerifyReport {
    pub(crate) fn new(inner: DeepVerifyReport, deep: bool) -> Self {
        Self { inner, deep }
    }
}

#[pymethods]
impl VerifyReport {
    /// The archive verified.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.verify.path.clone()
    }

    /// Entries checked against the manifest.
    #[getter]
    fn entries(&self) -> u64 {
        self.inner.verify.entries
    }

    /// Bytes of content hashed.
    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.verify.bytes
    }

    /// Whether the archive was also extracted and every repository checked with ``git fsck``.
    #[getter]
    fn deep(&self) -> bool {
        self.deep
    }

    /// Repositories that passed ``git fsck`` (0 unless `deep`).
    #[getter]
    fn repositories(&self) -> usize {
        self.inner.repositories
    }

    /// The report as plain data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let data = to_py_data(py, &self.inner)?;
        data.set_item("deep", self.deep)?;
        Ok(data)
    }

    fn __repr__(&self) -> String {
        format!(
            "VerifyReport(path={}, entries={}, bytes={}, repositories={})",
            path_repr(&self.inner.verify.path),
            self.inner.verify.entries,
            self.inner.verify.bytes,
            self.inner.repositories
        )
    }
}
