//! `tar-gz`: the reference scripts' format, with our manifest and safe extraction.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::archive_format::{BackupMetadata, ManifestSummary};
use crate::strategy::{
    ArchiveError, ArchiveInfo, ArchiveStrategy, DatabaseExtracted, StepContext, VerifyReport, WorkingFolder,
};

use super::codec::{Codec, Gzip};
use super::file_archive::FileArchive;

/// `<backup id>.tar.gz` files in one folder: the layout of the reference scripts' `tar -czf`
/// archives (plus our metadata and manifest), for tools that expect gzip.
///
/// Same guarantees as [`super::TarZstdArchive`] (temporary dotfile, sync, rename; manifest;
/// checked extraction), but gzip compresses on one thread. GNU tar reads the result (`tar -xzf`).
#[derive(Debug, Clone)]
pub struct TarGzArchive {
    inner: FileArchive<Gzip>,
}

impl TarGzArchive {
    /// Archives kept in `folder` (created owner-only if missing), compressed at gzip `level` (1–9).
    pub fn new(folder: PathBuf, level: u32) -> Self {
        Self { inner: FileArchive::new(folder, Gzip { level }) }
    }

    /// The same, with archives encrypted to `encryption`'s recipients (`<id>.<ext>.age` with a
    /// receipt beside it) and decrypted with its identities.
    #[cfg(feature = "encryption")]
    pub fn encrypted(mut self, encryption: std::sync::Arc<crate::encryption::Encryption>) -> Self {
        self.inner = self.inner.sealed(super::sealing::Sealing::age(encryption));
        self
    }
}

#[async_trait]
impl ArchiveStrategy for TarGzArchive {
    fn name(&self) -> &str {
        Gzip::NAME
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
