//! Archive strategies: one file per backup, listed, pruned, verified and extracted.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;

use crate::archive_format::{BackupMetadata, ManifestSummary};
use crate::strategy::{ArchiveError, StepContext, WorkingFolder};

mod codec;
mod extract_pipeline;
mod file_archive;
mod manifest_check;
pub mod none;
mod policy;
mod reader;
mod receipt;
#[cfg(feature = "object-store")]
pub mod remote;
mod safe_extract;
mod sealing;
mod stream;
pub mod tar_gz;
pub mod tar_zstd;
mod tree;
mod writer;

pub use none::NoArchive;
#[cfg(feature = "object-store")]
pub use remote::{RemoteArchive, RemoteOptions, RemoteStore};
pub use tar_gz::TarGzArchive;
pub use tar_zstd::TarZstdArchive;

#[cfg(feature = "encryption")]
pub(crate) use stream::read_error;

/// One stored backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveInfo {
    /// The backup's metadata, read from the archive's first entry.
    pub metadata: BackupMetadata,
    /// Where it is.
    pub path: PathBuf,
    /// Its size on disk.
    pub bytes: u64,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The archive.
    pub path: PathBuf,
    /// Entries checked against the manifest.
    pub entries: u64,
    /// Bytes of file content hashed.
    pub bytes: u64,
    /// The manifest's metadata and counts (its entries stay in the archive).
    #[serde(skip)]
    pub manifest: ManifestSummary,
}

impl VerifyReport {
    /// The report on the archive at `path`, whose entries all matched `manifest`.
    pub fn of(path: PathBuf, manifest: ManifestSummary) -> Self {
        Self { path, entries: manifest.entries, bytes: manifest.bytes, manifest }
    }
}

/// Called once an extraction has written the whole database folder (see
/// [`ArchiveStrategy::extract_database_first`]).
pub type DatabaseExtracted = Box<dyn FnOnce() + Send>;

/// Turns a working folder into one archive and back.
///
/// Implementations write under a temporary name in the destination, fsync, then rename: a file
/// under an archive's final name is always complete.
#[async_trait]
pub trait ArchiveStrategy: Send + Sync + fmt::Debug {
    /// The name used in configuration (`tar-zstd`, `tar-gz`, `none`).
    fn name(&self) -> &str;

    /// Where archives are kept.
    fn folder(&self) -> &Path;

    /// Write one archive of `source` (its database, home and data-store folders) with
    /// `metadata` first and the manifest last.
    async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError>;

    /// Every complete archive, newest first. Temporary files of unfinished writes are not listed.
    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError>;

    /// Delete one archive.
    async fn remove(&self, archive: &ArchiveInfo) -> Result<(), ArchiveError>;

    /// Check every entry against the manifest without writing anything.
    async fn verify(&self, archive: &ArchiveInfo, ctx: &StepContext) -> Result<VerifyReport, ArchiveError>;

    /// Extract into `target` (an empty folder), refusing entries that would escape it, and
    /// check every file against the manifest on the way. The manifest is written into the
    /// target as [`MANIFEST_PATH`](crate::archive_format::MANIFEST_PATH); the summary returned
    /// holds its metadata and counts.
    async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
    ) -> Result<ManifestSummary, ArchiveError>;

    /// Like [`Self::extract`], calling `database_extracted` once the database folder is complete
    /// on disk, so that the database restore can run while the home is still being extracted.
    /// At that moment its files are not yet checked against the manifest (which comes last): the
    /// extraction's own result says whether they matched. The default calls it after `extract`
    /// succeeded; the built-in tar archives, which hold the database folder first, call it as soon
    /// as the first entry past that folder arrives.
    async fn extract_database_first(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
        database_extracted: DatabaseExtracted,
    ) -> Result<ManifestSummary, ArchiveError> {
        let manifest = self.extract(archive, target, ctx).await?;
        database_extracted();
        Ok(manifest)
    }

    /// Find an archive by backup id, file name or path.
    async fn find(&self, name: &str) -> Result<ArchiveInfo, ArchiveError> {
        let all = self.list().await?;
        let wanted = Path::new(name);
        let hit = all.iter().find(|a| {
            a.metadata.id.as_str() == name
                || a.path == wanted
                || a.path.file_name().is_some_and(|f| f == wanted.as_os_str())
        });
        match hit {
            Some(a) => Ok(a.clone()),
            None => Err(ArchiveError::NotFound {
                name: name.to_owned(),
                folder: self.folder().to_owned(),
                available: all.iter().map(|a| a.metadata.id.to_string()).collect(),
            }),
        }
    }

    /// Keep the newest `keep` archives and delete the rest; `keep == 0` keeps all.
    /// Returns what was deleted.
    async fn prune(&self, keep: usize) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        if keep == 0 {
            return Ok(Vec::new());
        }
        let all = self.list().await?;
        let mut removed = Vec::new();
        for old in all.into_iter().skip(keep) {
            self.remove(&old).await?;
            removed.push(old);
        }
        Ok(removed)
    }
}
