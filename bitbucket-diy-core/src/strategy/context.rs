//! What every step receives and returns.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backup_id::BackupId;
use crate::events::{Event, EventSink, Phase, Unit};

/// The backup working folder and its fixed layout, shared with the reference scripts:
///
/// ```text
/// <root>/bitbucket-db/                     database dump (strategy-specific content)
/// <root>/bitbucket-home/                   copy of the home
/// <root>/bitbucket-data-stores/<path>/     copy of each data store, by its absolute path
/// <root>/.bitbucket-diy/                   our own state (run lock, completion marker)
/// ```
///
/// It is reused from one run to the next so the copy is incremental. An archive holds the first
/// three and a manifest; our state folder is never archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingFolder {
    root: PathBuf,
}

impl WorkingFolder {
    /// Folder name of the database dump.
    pub const DATABASE: &'static str = "bitbucket-db";
    /// Folder name of the home copy.
    pub const HOME: &'static str = "bitbucket-home";
    /// Folder name of the data-store copies.
    pub const DATA_STORES: &'static str = "bitbucket-data-stores";
    /// Folder name of bitbucket-diy's own state.
    pub const STATE: &'static str = ".bitbucket-diy";

    /// A working folder at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the database strategy writes its dump.
    pub fn database_dir(&self) -> PathBuf {
        self.root.join(Self::DATABASE)
    }

    /// Where the home is copied.
    pub fn home_dir(&self) -> PathBuf {
        self.root.join(Self::HOME)
    }

    /// Where the data stores are copied.
    pub fn data_stores_dir(&self) -> PathBuf {
        self.root.join(Self::DATA_STORES)
    }

    /// Where the data store at absolute `source` is copied: its path below
    /// `bitbucket-data-stores/`, as the reference scripts do.
    pub fn data_store_dir(&self, source: &Path) -> PathBuf {
        let relative: PathBuf = source.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        self.data_stores_dir().join(relative)
    }

    /// bitbucket-diy's own state folder (never archived).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(Self::STATE)
    }
}

/// Handed to every backup step: who we are, where to write, where to report, when to stop.
#[derive(Clone)]
pub struct StepContext {
    backup_id: BackupId,
    working: WorkingFolder,
    events: Arc<dyn EventSink>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("backup_id", &self.backup_id)
            .field("working", &self.working)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

impl StepContext {
    /// A context for one run.
    pub fn new(
        backup_id: BackupId,
        working: WorkingFolder,
        events: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> Self {
        Self { backup_id, working, events, cancel }
    }

    /// The backup being made.
    pub fn backup_id(&self) -> &BackupId {
        &self.backup_id
    }

    /// The working folder.
    pub fn working(&self) -> &WorkingFolder {
        &self.working
    }

    /// Report an event.
    pub fn emit(&self, event: Event) {
        self.events.emit(&event);
    }

    /// Report progress within `phase`.
    pub fn progress(&self, phase: Phase, done: u64, total: Option<u64>, unit: Unit) {
        self.events.emit(&Event::Progress { phase, done, total, unit });
    }

    /// Report a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.events.emit(&Event::Warning { message: message.into() });
    }

    /// The sink, for strategies that hand it to helpers.
    pub fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    /// Fires when the run is cancelled: long steps select on it or poll [`Self::is_cancelled`],
    /// stop their children, and return [`crate::StrategyError::Cancelled`].
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// What a step did, recorded in the report and the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Bytes written or copied.
    pub bytes: u64,
    /// Files written or copied.
    pub files: u64,
    /// Files examined and found unchanged (incremental copies).
    #[serde(default)]
    pub unchanged: u64,
    /// Files removed because they disappeared from the source.
    #[serde(default)]
    pub removed: u64,
    /// Wall time.
    #[serde(with = "crate::serde_duration")]
    pub elapsed: Duration,
    /// Facts a restore needs or a human wants (tool versions, format, flags).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

impl StepReport {
    /// An empty report with a note.
    pub fn note(mut self, key: &str, value: impl Into<String>) -> Self {
        self.notes.insert(key.to_owned(), value.into());
        self
    }
}
