//! What a run reports, and the phase timer that fills it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backup_id::BackupId;
use crate::events::{Event, EventSink, Phase};
use crate::strategy::StepReport;

/// How long one phase took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// Its wall time.
    #[serde(with = "crate::serde_duration")]
    pub elapsed: Duration,
}

/// The outcome of a successful backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The backup's id.
    pub id: BackupId,
    /// The archive written (for `none`: the working folder).
    pub archive: PathBuf,
    /// The archive's size.
    pub archive_bytes: u64,
    /// From lock to unlock; `None` in zero-downtime mode.
    #[serde(with = "option_secs")]
    pub lock_window: Option<Duration>,
    /// How long Bitbucket took to drain (inside the lock window).
    #[serde(with = "option_secs")]
    pub drain_wait: Option<Duration>,
    /// The whole run.
    #[serde(with = "crate::serde_duration")]
    pub total: Duration,
    /// Each phase's duration, in the order they ran.
    pub phases: Vec<PhaseTiming>,
    /// What the consistent database step did.
    pub database: StepReport,
    /// What the consistent filesystem step did.
    pub filesystem: StepReport,
    /// Made without a lock.
    pub zero_downtime: bool,
    /// Archives removed by retention.
    pub pruned: Vec<PathBuf>,
    /// Warnings raised during the run (a lost progress report, a failed late hook).
    pub warnings: Vec<String>,
    /// When the run started.
    pub started_at: jiff::Timestamp,
    /// When it ended.
    pub finished_at: jiff::Timestamp,
}

/// The outcome of a successful restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub id: BackupId,
    /// The archive it came from.
    pub archive: PathBuf,
    /// The new home.
    pub home: PathBuf,
    /// The new database, when the strategy restores one.
    pub database: Option<String>,
    /// What the database restore did.
    pub database_step: StepReport,
    /// What the home restore did.
    pub filesystem_step: StepReport,
    /// Stale git lock files removed from the restored repositories.
    pub git_locks_removed: Vec<PathBuf>,
    /// Each phase's duration.
    pub phases: Vec<PhaseTiming>,
    /// The whole restore.
    #[serde(with = "crate::serde_duration")]
    pub total: Duration,
}

/// Emits phase start and finish events and remembers the durations.
#[derive(Clone)]
pub(crate) struct PhaseTimer {
    events: Arc<dyn EventSink>,
    timings: Arc<Mutex<Vec<PhaseTiming>>>,
    current: Arc<Mutex<Option<Phase>>>,
    started: Arc<Mutex<Vec<Phase>>>,
}

impl PhaseTimer {
    pub(crate) fn new(events: Arc<dyn EventSink>) -> Self {
        Self { events, timings: Arc::default(), current: Arc::default(), started: Arc::default() }
    }

    /// Run `work` as `phase`: started/finished events around it, its time recorded on success.
    pub(crate) async fn run<T, E>(&self, phase: Phase, work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        self.events.emit(&Event::PhaseStarted { phase });
        if let Ok(mut current) = self.current.lock() {
            *current = Some(phase);
        }
        if let Ok(mut started) = self.started.lock() {
            started.push(phase);
        }
        let start = Instant::now();
        let result = work.await;
        let elapsed = start.elapsed();
        if result.is_ok() {
            self.events.emit(&Event::PhaseFinished { phase, elapsed });
            if let Ok(mut timings) = self.timings.lock() {
                timings.push(PhaseTiming { phase, elapsed });
            }
        }
        result
    }

    /// The phase started last: where a cancellation struck.
    pub(crate) fn current(&self) -> Option<Phase> {
        self.current.lock().ok().and_then(|c| *c)
    }

    /// Whether `phase` was started, whatever its outcome.
    pub(crate) fn has_started(&self, phase: Phase) -> bool {
        self.started.lock().is_ok_and(|started| started.contains(&phase))
    }

    pub(crate) fn timings(&self) -> Vec<PhaseTiming> {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

mod option_secs {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
