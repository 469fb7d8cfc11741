//! `tar-zstd`: streaming tar with multithreaded zstd, manifest, safe extraction.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::archive_format::{BackupMetadata, ManifestSummary};
use crate::strategy::{
    ArchiveError, ArchiveInfo, ArchiveStrategy, DatabaseExtracted, StepContext, VerifyReport, WorkingFolder,
};

use super::codec::{Codec, Zstd};
use super::file_archive::FileArchive;

/// `<backup id>.tar.zst` files in one folder: the default archive strategy.
///
/// The working folder streams through tar and multithreaded zstd (with frame checksums) into a
/// temporary dotfile, which is synced and renamed only when complete; memory stays flat whatever
/// the size. Every file is hashed on the way into the manifest, the archive's last entry.
/// `verify` and `extract` check every entry against it. GNU tar reads the result
/// (`tar --zstd -xf`).
#[derive(Debug, Clone)]
pub struct TarZstdArchive {
    inner: FileArchive<Zstd>,
}

impl TarZstdArchive {
    /// Archives kept in `folder` (created owner-only if missing), compressed at zstd `level`
    /// (1–19) by `threads` workers (0 means one per core).
    pub fn new(folder: PathBuf, level: i32, threads: u32) -> Self {
        Self { inner: FileArchive::new(folder, Zstd { level, threads }) }
    }

    /// The same, with archives encrypted to `encryption`'s recipients (`<id>.<ext>.age` with a
    /// receipt beside it) and decrypted with its identities.
    #[cfg(feature = "encryption")]
    pub fn encrypted(mut self, encryption: std::sync::Arc<crate::encryption::Encryption>) -> Self {
        self.inner = self.inner.sealed(super::sealing::Sealing::age(encryption));
        self
    }

    /// The files underneath, for strategies built on them (remote archives' local copies).
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) fn files(&self) -> &FileArchive<Zstd> {
        &self.inner
    }
}

#[async_trait]
impl ArchiveStrategy for TarZstdArchive {
    fn name(&self) -> &str {
        Zstd::NAME
    }

    fn folder(&self) -> &Path {
        self.inner.folder()
    }

    async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        self.inner.write(source, metadata, ctx).await
    }

    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        self.inner.list().await
    }

    async fn remove(&self, archive: &ArchiveInfo) -> Result<(), ArchiveError> {
        self.inner.remove(archive).await
    }

    async fn verify(&self, archive: &ArchiveInfo, ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        self.inner.verify(archive, ctx).await
    }

    async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
    ) -> Result<ManifestSummary, ArchiveError> {
        self.inner.extract(archive, target, ctx, None).await
    }

    async fn extract_database_first(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
        database_extracted: DatabaseExtracted,
    ) -> Result<ManifestSummary, ArchiveError> {
        self.inner.extract(archive, target, ctx, Some(database_extracted)).await
    }
}
