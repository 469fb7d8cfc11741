//! The `bitbucket_diy._core` extension module: PyO3 wrappers over `bitbucket-diy-core`, re-exported
//! with docstrings by the pure-Python package `bitbucket_diy` (see `python/bitbucket_diy`).
//!
//! Everything here converts arguments, calls the core, and converts results and errors; every
//! decision lives in the core. Long calls run on one tokio runtime while the calling thread is
//! detached from the interpreter ([`runtime`]).

mod callback;
mod client;
mod convert;
mod errors;
mod logging;
mod orchestrator;
mod reports;
mod runtime;
mod simulator;
mod strategies;

use std::path::PathBuf;

use bitbucket_diy_core::ErrorKind;
use bitbucket_diy_core::sample_home::{SampleHomeError, SampleHomeSpec, generate};
use pyo3::prelude::*;

/// Generate a sample Bitbucket home of real git repositories at `path` (absent or empty), to
/// rehearse backups and test strategies. `preset` is ``"tiny"`` (a few repositories, well under
/// 2 MB) or ``"demo"`` (a few MB); `total_bytes` instead asks for about that many bytes on disk.
/// Returns the home's (canonical) path. Needs ``git``.
#[pyfunction]
#[pyo3(signature = (path, preset = "tiny", *, total_bytes = None))]
fn sample_home(py: Python<'_>, path: PathBuf, preset: &str, total_bytes: Option<u64>) -> PyResult<PathBuf> {
    let spec = match (preset, total_bytes) {
        (_, Some(total)) => SampleHomeSpec::with_total_bytes(total),
        ("tiny", None) => SampleHomeSpec::tiny(),
        ("demo", None) => SampleHomeSpec::demo(),
        (other, None) => {
            return Err(errors::config_err(
                py,
                format!("unknown sample home preset `{other}` (use \"tiny\" or \"demo\")"),
            ));
        }
    };
    let generated = py.detach(|| generate(&path, &spec)).map_err(|e| {
        let kind = match &e {
            SampleHomeError::GitMissing => ErrorKind::ToolMissing,
            SampleHomeError::InvalidSpec(_) => ErrorKind::Config,
            SampleHomeError::Io { .. } => ErrorKind::Io,
            _ => ErrorKind::Strategy,
        };
        errors::error_of_kind(py, kind, &e.to_string())
    })?;
    Ok(generated.root)
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<client::MaintenanceClient>()?;
    m.add_class::<client::MaintenanceLock>()?;
    m.add_class::<client::BackupTask>()?;
    m.add_class::<client::ApplicationProperties>()?;
    m.add_class::<client::InstanceStatus>()?;
    m.add_class::<client::MaintenanceState>()?;
    m.add_class::<simulator::Simulator>()?;
    m.add_class::<orchestrator::BackupOrchestrator>()?;
    m.add_class::<reports::BackupReport>()?;
    m.add_class::<reports::RestoreReport>()?;
    m.add_class::<reports::ArchiveInfo>()?;
    m.add_class::<reports::VerifyReport>()?;
    m.add_class::<reports::StepReport>()?;
    m.add_class::<strategies::StepContext>()?;
    m.add_class::<strategies::RestoreContext>()?;
    m.add_class::<strategies::DatabaseTarget>()?;
    m.add_class::<strategies::HomeTarget>()?;
    m.add_function(wrap_pyfunction!(strategies::ensure_empty_target, m)?)?;
    m.add_function(wrap_pyfunction!(sample_home, m)?)?;
    Ok(())
}
