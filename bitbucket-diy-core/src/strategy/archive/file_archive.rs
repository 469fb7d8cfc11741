//! One compressed tar file per backup, in one folder: what `tar-zstd` and `tar-gz` share.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::archive_format::{BackupMetadata, MANIFEST_PATH, METADATA_PATH, Manifest};
use crate::events::Phase;
use crate::strategy::{ArchiveError, ArchiveInfo, StepContext, VerifyReport, WorkingFolder};

use super::codec::Codec;
use super::reader::{self, ExtractSink, VerifySink};
use super::safe_extract::Extractor;
use super::stream::{self, IO_BUFFER};
use super::writer;

/// The archives of one folder, compressed with `C`.
#[derive(Debug, Clone)]
pub(crate) struct FileArchive<C: Codec> {
    folder: PathBuf,
    codec: C,
}

impl<C: Codec> FileArchive<C> {
    /// Archives kept in `folder` (created owner-only on the first write).
    pub(crate) fn new(folder: PathBuf, codec: C) -> Self {
        Self { folder, codec }
    }

    /// The archive folder.
    pub(crate) fn folder(&self) -> &Path {
        &self.folder
    }

    /// The final path of a backup's archive.
    fn archive_path(&self, metadata: &BackupMetadata) -> PathBuf {
        self.folder.join(format!("{}.{}", metadata.id, C::EXTENSION))
    }

    pub(crate) async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        let this = self.clone();
        let root = source.root().to_owned();
        let metadata = metadata.clone();
        stream::run_blocking(ctx, move |ctx| this.write_blocking(&root, &metadata, &ctx)).await
    }

    fn write_blocking(
        &self,
        root: &Path,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        create_private_folder(&self.folder)?;
        let path = self.archive_path(metadata);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(ArchiveError::AlreadyExists { path });
        }
        // A dotfile ending in `.partial`: never listed, and removed when dropped (error, cancel).
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{}.{}.", metadata.id, C::EXTENSION))
            .suffix(".partial")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.folder)
            .map_err(|e| ArchiveError::io("creating a temporary file in", &self.folder, e))?;
        {
            let file_out = BufWriter::with_capacity(IO_BUFFER, temp.as_file_mut());
            let encoder = self.codec.encoder(file_out).map_err(|e| ArchiveError::io("writing", &path, e))?;
            let tar_out = BufWriter::with_capacity(IO_BUFFER, encoder);
            let (tar_out, _manifest) = writer::write_tar(tar_out, root, metadata, &path, ctx)?;
            let encoder = tar_out.into_inner().map_err(|e| ArchiveError::io("writing", &path, e.into_error()))?;
            let mut file_out = C::finish(encoder).map_err(|e| ArchiveError::io("writing", &path, e))?;
            file_out.flush().map_err(|e| ArchiveError::io("writing", &path, e))?;
        }
        temp.as_file().sync_all().map_err(|e| ArchiveError::io("syncing", temp.path(), e))?;
        if ctx.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        temp.persist_noclobber(&path).map_err(|e| match e.error.kind() {
            io::ErrorKind::AlreadyExists => ArchiveError::AlreadyExists { path: path.clone() },
            _ => ArchiveError::io("renaming the temporary file to", &path, e.error),
        })?;
        sync_folder(&self.folder)?;
        let bytes = fs::metadata(&path).map_err(|e| ArchiveError::io("reading", &path, e))?.len();
        Ok(ArchiveInfo { metadata: metadata.clone(), path, bytes })
    }

    pub(crate) async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.list_blocking()).await.map_err(stream::join_error)?
    }

    fn list_blocking(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        let items = match fs::read_dir(&self.folder) {
            Ok(items) => items,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ArchiveError::io("listing", &self.folder, e)),
        };
        let suffix = format!(".{}", C::EXTENSION);
        let mut found = Vec::new();
        for item in items {
            let item = item.map_err(|e| ArchiveError::io("listing", &self.folder, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temporary files of unfinished writes are dotfiles: never listed.
            if name.starts_with('.') || !name.ends_with(&suffix) {
                continue;
            }
            let path = item.path();
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => match reader::read_metadata::<C>(&path) {
                    Ok(metadata) => found.push(ArchiveInfo { metadata, path, bytes: meta.len() }),
                    Err(e) => {
                        tracing::warn!(archive = %path.display(), error = %e, "skipping an unreadable archive")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(archive = %path.display(), error = %e, "skipping an unreadable archive")
                }
            }
        }
        sort_newest_first(&mut found);
        Ok(found)
    }

    pub(crate) async fn remove(&self, archive: &ArchiveInfo) -> Result<(), ArchiveError> {
        if archive.path.parent() != Some(self.folder.as_path()) {
            return Err(ArchiveError::NotFound {
                name: archive.path.display().to_string(),
                folder: self.folder.clone(),
                available: Vec::new(),
            });
        }
        let path = archive.path.clone();
        let folder = self.folder.clone();
        tokio::task::spawn_blocking(move || {
            fs::remove_file(&path).map_err(|e| ArchiveError::io("removing", &path, e))?;
            sync_folder(&folder)
        })
        .await
        .map_err(stream::join_error)?
    }

    pub(crate) async fn verify(&self, archive: &ArchiveInfo, ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        let path = archive.path.clone();
        stream::run_blocking(ctx, move |ctx| {
            let mut sink = VerifySink::new(&path);
            let scanned = reader::scan::<C>(&path, &ctx, Phase::Verify, &mut sink)?;
            Ok(VerifyReport {
                path,
                entries: scanned.manifest.entries.len() as u64,
                bytes: scanned.bytes,
                manifest: scanned.manifest,
            })
        })
        .await
    }

    pub(crate) async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
    ) -> Result<Manifest, ArchiveError> {
        let path = archive.path.clone();
        let target = target.to_owned();
        stream::run_blocking(ctx, move |ctx| {
            let mut extractor = Extractor::prepare(&path, &target)?;
            let extracted = extract_into::<C>(&path, &mut extractor, &ctx)
                .and_then(|manifest| extractor.finish().map(|()| manifest));
            if extracted.is_err() {
                extractor.abandon();
            }
            extracted
        })
        .await
    }
}

fn extract_into<C: Codec>(path: &Path, extractor: &mut Extractor, ctx: &StepContext) -> Result<Manifest, ArchiveError> {
    let scanned = {
        let mut sink = ExtractSink::new(path, extractor);
        reader::scan::<C>(path, ctx, Phase::Extract, &mut sink)?
    };
    finish_extraction(path, extractor, &scanned.metadata, scanned.manifest)
}

/// After the content matched the manifest: the delayed symlinks, then bitbucket-diy's own files,
/// so an extracted tree is marked as a backup only once complete.
pub(crate) fn finish_extraction(
    archive: &Path,
    extractor: &mut Extractor,
    metadata: &BackupMetadata,
    manifest: Manifest,
) -> Result<Manifest, ArchiveError> {
    extractor.create_symlinks()?;
    let json_error = |e: serde_json::Error| ArchiveError::io("writing", archive, io::Error::other(e));
    let mtime = metadata.created_at.as_second();
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(json_error)?;
    extractor.own_file(MANIFEST_PATH, &manifest_json, mtime)?;
    let metadata_json = serde_json::to_vec_pretty(metadata).map_err(json_error)?;
    extractor.own_file(METADATA_PATH, &metadata_json, mtime)?;
    Ok(manifest)
}

/// Newest first by creation time, then by id: within one second, runs are told apart by a `-N`
/// suffix, so the longer id, then the greater, is the later one (`x-10` after `x-9` after `x`).
pub(crate) fn sort_newest_first(archives: &mut [ArchiveInfo]) {
    let key = |a: &ArchiveInfo| {
        (a.metadata.created_at, a.metadata.id.as_str().len(), a.metadata.id.to_string(), a.path.clone())
    };
    archives.sort_by_key(|a| std::cmp::Reverse(key(a)));
}

/// Creates `folder` (and its parents) owner-only when missing; an existing folder is left as is.
pub(crate) fn create_private_folder(folder: &Path) -> Result<(), ArchiveError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| ArchiveError::io("creating", folder, e))
}

/// Makes a rename or removal in `folder` durable.
pub(crate) fn sync_folder(folder: &Path) -> Result<(), ArchiveError> {
    File::open(folder).and_then(|f| f.sync_all()).map_err(|e| ArchiveError::io("syncing", folder, e))
}
