//! What happens during a run, as a typed stream.
//!
//! The core never draws progress bars or prints: it calls an [`EventSink`]. The CLI renders
//! events with indicatif or as JSON lines, the Python module hands them to a callable.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// A named step of a backup, restore or verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Phase {
    /// Initial database work while the instance still runs.
    PrepareDatabase,
    /// Initial home copy while the instance still runs.
    PrepareFilesystem,
    /// `POST /mvc/maintenance/lock`.
    Lock,
    /// `POST /mvc/admin/backups?external=true`.
    StartBackup,
    /// Waiting until `db-state` and `scm-state` are `DRAINED`.
    Drain,
    /// The consistent database dump, or the export of its snapshot.
    BackupDatabase,
    /// Writing a dump from a snapshot exported while drained, after the unlock.
    DumpDatabase,
    /// The consistent home copy.
    BackupFilesystem,
    /// Progress 100 and `DELETE /mvc/maintenance/lock`.
    Unlock,
    /// Writing the archive.
    Archive,
    /// Removing archives beyond the newest N.
    Retention,
    /// Reading an archive into a restore folder.
    Extract,
    /// Restoring the database into a new database.
    RestoreDatabase,
    /// Restoring the home into a new folder.
    RestoreFilesystem,
    /// Removing stale git lock files after a restore.
    CleanGitLocks,
    /// Checking an archive against its manifest.
    Verify,
    /// Running a user hook.
    Hook,
}

impl Phase {
    /// The kebab-case name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PrepareDatabase => "prepare-database",
            Phase::PrepareFilesystem => "prepare-filesystem",
            Phase::Lock => "lock",
            Phase::StartBackup => "start-backup",
            Phase::Drain => "drain",
            Phase::BackupDatabase => "backup-database",
            Phase::DumpDatabase => "dump-database",
            Phase::BackupFilesystem => "backup-filesystem",
            Phase::Unlock => "unlock",
            Phase::Archive => "archive",
            Phase::Retention => "retention",
            Phase::Extract => "extract",
            Phase::RestoreDatabase => "restore-database",
            Phase::RestoreFilesystem => "restore-filesystem",
            Phase::CleanGitLocks => "clean-git-locks",
            Phase::Verify => "verify",
            Phase::Hook => "hook",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a progress count measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Files or entries.
    Files,
}

/// One thing that happened. Never carries a password or a token.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A phase began.
    PhaseStarted {
        /// Which.
        phase: Phase,
    },
    /// Work done within a phase so far.
    Progress {
        /// Which phase.
        phase: Phase,
        /// Done so far.
        done: u64,
        /// Total, when known.
        total: Option<u64>,
        /// What is counted.
        unit: Unit,
    },
    /// A phase ended successfully.
    PhaseFinished {
        /// Which.
        phase: Phase,
        /// How long it took.
        #[serde(with = "crate::serde_duration")]
        elapsed: Duration,
    },
    /// The instance is locked for maintenance.
    Locked {
        /// Who holds the lock, as Bitbucket reports it.
        owner: String,
    },
    /// Both `db-state` and `scm-state` reached `DRAINED`.
    Drained {
        /// How long the drain took.
        #[serde(with = "crate::serde_duration")]
        waited: Duration,
    },
    /// A percentage was reported to Bitbucket.
    ProgressReported {
        /// 0–100.
        percentage: u8,
    },
    /// The instance left maintenance mode.
    Unlocked {
        /// From lock to unlock.
        #[serde(with = "crate::serde_duration")]
        lock_window: Duration,
    },
    /// Something worth a human's attention that did not stop the run.
    Warning {
        /// What.
        message: String,
    },
    /// An archive is complete under its final name.
    ArchiveWritten {
        /// Where.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// An old archive was removed by retention.
    ArchivePruned {
        /// Which.
        path: PathBuf,
    },
    /// A step is retrying after a transient failure.
    Retrying {
        /// What is retried.
        what: String,
        /// Attempt number, from 2.
        attempt: u32,
        /// Why the previous attempt failed.
        reason: String,
    },
}

/// Receives events. Implementations must be cheap and must not block for long: they are called
/// from the thread doing the work.
pub trait EventSink: Send + Sync {
    /// Called for each event, in order per phase.
    fn emit(&self, event: &Event);
}

impl fmt::Debug for dyn EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

/// Discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: &Event) {}
}

/// Logs events through `tracing` (the default when no sink is given).
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingEvents;

impl EventSink for TracingEvents {
    fn emit(&self, event: &Event) {
        match event {
            Event::Warning { message } => tracing::warn!("{message}"),
            Event::Progress { .. } => tracing::trace!(?event),
            other => tracing::info!(?other),
        }
    }
}

/// Keeps every event in memory: for tests and for reports.
#[derive(Debug, Default, Clone)]
pub struct RecordedEvents(Arc<Mutex<Vec<Event>>>);

impl RecordedEvents {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of what was recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl EventSink for RecordedEvents {
    fn emit(&self, event: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}

/// Sends each event to several sinks.
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fanout({} sinks)", self.0.len())
    }
}

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}
