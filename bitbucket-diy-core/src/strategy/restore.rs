//! What restore steps receive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::archive_format::BackupMetadata;
use crate::events::{Event, EventSink};
use crate::strategy::{StrategyError, WorkingFolder};

/// Handed to every restore step: the extracted backup, what it recorded, where to report.
#[derive(Clone)]
pub struct RestoreContext {
    source: WorkingFolder,
    metadata: BackupMetadata,
    events: Arc<dyn EventSink>,
    cancel: CancellationToken,
    verified: watch::Receiver<Verification>,
}

/// Where the extraction of the source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verification {
    /// Still extracting: files may be missing, and none is checked yet.
    Pending,
    /// Complete, every file matched the manifest.
    Verified,
    /// The extraction failed.
    Failed,
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
        let (_, verified) = watch::channel(Verification::Verified);
        Self { source, metadata, events, cancel, verified }
    }

    /// The same context for a source still being extracted; `verified` tells when that ends.
    pub(crate) fn while_extracting(mut self, verified: watch::Receiver<Verification>) -> Self {
        self.verified = verified;
        self
    }

    /// Waits until the source is completely extracted and every file matched the manifest.
    ///
    /// A database strategy that restores while the home is still being extracted (see
    /// [`crate::strategy::DatabaseStrategy::restores_while_extracting`]) calls this before it
    /// reports success, and undoes its restore when it fails: `Err(Cancelled)` means the
    /// extraction failed (its error is the one the restore reports).
    pub async fn source_verified(&self) -> Result<(), StrategyError> {
        let mut verified = self.verified.clone();
        match verified.wait_for(|v| *v != Verification::Pending).await.map(|v| *v) {
            Ok(Verification::Verified) => Ok(()),
            _ => Err(StrategyError::Cancelled),
        }
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
