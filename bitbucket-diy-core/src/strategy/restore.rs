//! What restore steps receive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::archive_format::BackupMetadata;
use crate::events::{Event, EventSink};
use crate::strategy::WorkingFolder;

/// Handed to every restore step: the extracted backup, what it recorded, where to report.
#[derive(Clone)]
pub struct RestoreContext {
    source: WorkingFolder,
    metadata: BackupMetadata,
    events: Arc<dyn EventSink>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for RestoreContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreContext").field("source", &self.source).field("backup", &self.metadata.id).finish()
    }
}

impl RestoreContext {
    /// A context for one restore.
    pub fn new(
        source: WorkingFolder,
        metadata: BackupMetadata,
        events: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> Self {
        Self { source, metadata, events, cancel }
    }

    /// The extracted backup, in working-folder layout.
    pub fn source(&self) -> &WorkingFolder {
        &self.source
    }

    /// What the backup recorded (strategy notes, data stores, versions).
    pub fn metadata(&self) -> &BackupMetadata {
        &self.metadata
    }

    /// Report an event.
    pub fn emit(&self, event: Event) {
        self.events.emit(&event);
    }

    /// The sink.
    pub fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    /// Fires when the restore is cancelled.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the restore was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Where the database is restored: a **new** database the strategy creates (or an existing,
/// empty one), on the server its configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTarget {
    /// The new database's name.
    pub database: String,
}

/// Where the home is restored: a **new**, empty folder, and one for each data store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeTarget {
    /// The new home.
    pub home: PathBuf,
    /// Original data-store path (as recorded in the backup) → new path.
    pub data_stores: BTreeMap<PathBuf, PathBuf>,
}

impl HomeTarget {
    /// A target with no data stores.
    pub fn new(home: impl AsRef<Path>) -> Self {
        Self { home: home.as_ref().to_owned(), data_stores: BTreeMap::new() }
    }
}
