//! A Prometheus textfile for node_exporter's textfile collector, written after every run, so a
//! team is alerted when backups silently stop (alert on `time() - bitbucket_diy_last_success_timestamp_seconds`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::orchestrator::BackupReport;

/// What one run leaves in the metrics file.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    /// When the run ended.
    pub finished_at: jiff::Timestamp,
    /// How long it took.
    pub duration: Duration,
    /// The process exit code (0 on success).
    pub exit_code: i32,
    /// The error kind, on failure.
    pub error_kind: Option<ErrorKind>,
    /// Lock window, when the instance was locked and unlocked.
    pub lock_window: Option<Duration>,
    /// Archive size, on success.
    pub archive_bytes: Option<u64>,
}

impl RunMetrics {
    /// Metrics of a finished backup run.
    pub fn from_outcome(outcome: &Result<BackupReport, Error>, duration: Duration) -> Self {
        match outcome {
            Ok(report) => Self {
                finished_at: report.finished_at,
                duration,
                exit_code: 0,
                error_kind: None,
                lock_window: report.lock_window,
                archive_bytes: Some(report.archive_bytes),
            },
            Err(e) => Self {
                finished_at: jiff::Timestamp::now(),
                duration,
                exit_code: e.kind().exit_code(),
                error_kind: Some(e.kind()),
                lock_window: None,
                archive_bytes: None,
            },
        }
    }
}

const LAST_SUCCESS: &str = "bitbucket_diy_last_success_timestamp_seconds";

/// Write `metrics` to `path` atomically (temporary file, rename), keeping the previous run's
/// last-success time when this run failed.
///
/// The file is world-readable (`0644`: node_exporter usually runs as another user; it holds no
/// secret). Metric names: `bitbucket_diy_last_run_timestamp_seconds`,
/// `bitbucket_diy_last_success_timestamp_seconds`, `bitbucket_diy_last_run_success`,
/// `bitbucket_diy_last_run_exit_code`, `bitbucket_diy_last_run_duration_seconds`,
/// `bitbucket_diy_last_lock_window_seconds`, `bitbucket_diy_last_archive_bytes` and, after a
/// failure, `bitbucket_diy_last_run_error{kind="…"}`.
///
/// ```
/// use std::time::Duration;
/// use bitbucket_diy_core::ErrorKind;
/// use bitbucket_diy_core::metrics::{RunMetrics, write_metrics};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("bitbucket_diy.prom");
/// let success = RunMetrics {
///     finished_at: "2026-04-12T02:15:09Z".parse().unwrap(),
///     duration: Duration::from_secs(42),
///     exit_code: 0,
///     error_kind: None,
///     lock_window: Some(Duration::from_millis(6100)),
///     archive_bytes: Some(73_400_320),
/// };
/// write_metrics(&path, &success)?;
/// let failure = RunMetrics {
///     finished_at: "2026-04-13T02:15:03Z".parse().unwrap(),
///     exit_code: ErrorKind::AlreadyLocked.exit_code(),
///     error_kind: Some(ErrorKind::AlreadyLocked),
///     lock_window: None,
///     archive_bytes: None,
///     ..success
/// };
/// write_metrics(&path, &failure)?;
///
/// let text = std::fs::read_to_string(&path).unwrap();
/// // A failed run keeps the previous success time: alert on its age.
/// assert!(text.contains("bitbucket_diy_last_success_timestamp_seconds 1775960109\n"));
/// assert!(text.contains("bitbucket_diy_last_run_exit_code 3\n"));
/// assert!(text.contains(r#"bitbucket_diy_last_run_error{kind="already-locked"} 1"#));
/// # Ok::<(), bitbucket_diy_core::Error>(())
/// ```
pub fn write_metrics(path: &Path, metrics: &RunMetrics) -> Result<(), Error> {
    let previous_success = std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines().find_map(|l| l.strip_prefix(LAST_SUCCESS).map(str::trim).and_then(|v| v.parse::<f64>().ok()))
    });
    let now = metrics.finished_at.as_millisecond() as f64 / 1000.0;
    let last_success = if metrics.exit_code == 0 { Some(now) } else { previous_success };

    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
        }
    };
    gauge("bitbucket_diy_last_run_timestamp_seconds", "When the last backup run ended.", Some(now));
    gauge(LAST_SUCCESS, "When the last successful backup ended.", last_success);
    gauge(
        "bitbucket_diy_last_run_success",
        "1 if the last run succeeded, else 0.",
        Some(f64::from(u8::from(metrics.exit_code == 0))),
    );
    gauge("bitbucket_diy_last_run_exit_code", "Exit code of the last run.", Some(f64::from(metrics.exit_code)));
    gauge(
        "bitbucket_diy_last_run_duration_seconds",
        "Wall time of the last run.",
        Some(metrics.duration.as_secs_f64()),
    );
    gauge(
        "bitbucket_diy_last_lock_window_seconds",
        "Lock to unlock of the last run.",
        metrics.lock_window.map(|d| d.as_secs_f64()),
    );
    gauge(
        "bitbucket_diy_last_archive_bytes",
        "Size of the last archive written.",
        metrics.archive_bytes.map(|b| b as f64),
    );
    if let Some(kind) = metrics.error_kind {
        text.push_str(&format!(
            "# HELP bitbucket_diy_last_run_error Error kind of the last failed run.\n# TYPE bitbucket_diy_last_run_error gauge\nbitbucket_diy_last_run_error{{kind=\"{kind}\"}} 1\n"
        ));
    }

    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".bitbucket-diy-metrics-")
        .tempfile_in(folder)
        .map_err(|e| Error::io("creating a metrics file in", folder, e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| Error::io("writing", tmp.path().to_owned(), e))?;
    // node_exporter usually runs as another user: the metrics hold no secret.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("setting permissions of", tmp.path().to_owned(), e))?;
    tmp.persist(path).map_err(|e| Error::io("writing", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(exit_code: i32, at: i64) -> RunMetrics {
        RunMetrics {
            finished_at: jiff::Timestamp::from_second(at).unwrap(),
            duration: Duration::from_secs(42),
            exit_code,
            error_kind: (exit_code != 0).then_some(ErrorKind::Strategy),
            lock_window: (exit_code == 0).then(|| Duration::from_millis(1500)),
            archive_bytes: (exit_code == 0).then_some(1234),
        }
    }

    #[test]
    fn failed_run_keeps_last_success_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bitbucket_diy.prom");
        write_metrics(&path, &metrics(0, 1_000)).unwrap();
        let ok = std::fs::read_to_string(&path).unwrap();
        assert!(ok.contains("bitbucket_diy_last_success_timestamp_seconds 1000\n"), "{ok}");
        assert!(ok.contains("bitbucket_diy_last_lock_window_seconds 1.5\n"), "{ok}");
        write_metrics(&path, &metrics(4, 2_000)).unwrap();
        let failed = std::fs::read_to_string(&path).unwrap();
        assert!(failed.contains("bitbucket_diy_last_success_timestamp_seconds 1000\n"), "{failed}");
        assert!(failed.contains("bitbucket_diy_last_run_timestamp_seconds 2000\n"), "{failed}");
        assert!(failed.contains("bitbucket_diy_last_run_success 0\n"), "{failed}");
        assert!(failed.contains("kind=\"strategy\""), "{failed}");
        assert!(!failed.contains("lock_window"), "{failed}");
    }
}
