//! `tar-gz`: the reference scripts' format.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::archive_format::{BackupMetadata, Manifest};
use crate::strategy::{ArchiveError, ArchiveInfo, ArchiveStrategy, StepContext, VerifyReport, WorkingFolder};

/// TODO(helper)
#[derive(Debug)]
pub struct TarGzArchive {
    folder: PathBuf,
}

#[async_trait]
impl ArchiveStrategy for TarGzArchive {
    fn name(&self) -> &str {
        "tar-gz"
    }
    fn folder(&self) -> &Path {
        &self.folder
    }
    async fn write(&self, _source: &WorkingFolder, _metadata: &BackupMetadata, _ctx: &StepContext) -> Result<ArchiveInfo, ArchiveError> {
        todo!()
    }
    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        todo!()
    }
    async fn remove(&self, _archive: &ArchiveInfo) -> Result<(), ArchiveError> {
        todo!()
    }
    async fn verify(&self, _archive: &ArchiveInfo, _ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        todo!()
    }
    async fn extract(&self, _archive: &ArchiveInfo, _target: &Path, _ctx: &StepContext) -> Result<Manifest, ArchiveError> {
        todo!()
    }
}
