//! One compressed tar file per backup, in one folder: what `tar-zstd` and `tar-gz` share.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::archive_format::{
    BackupMetadata, MANIFEST_PATH, METADATA_PATH, ManifestEntry, ManifestSummary, ManifestWriter,
};
use crate::events::Phase;
use crate::strategy::{ArchiveError, ArchiveInfo, StepContext, VerifyReport, WorkingFolder};

use super::DatabaseExtracted;
use super::codec::Codec;
use super::extract_pipeline;
use super::manifest_check::FoundEntries;
use super::reader::{self, VerifySink};
use super::receipt::{self, Receipt};
use super::safe_extract::Extractor;
use super::sealing::{DigestWriter, Sealing, is_encrypted_name};
use super::stream::{self, IO_BUFFER};
use super::writer;

/// The archives of one folder, compressed with `C`, encrypted when `sealing` says so.
///
/// An encrypted archive (`<id>.<ext>.age`) has a receipt (`<id>.<ext>.age.json`) beside it,
/// renamed into place after the archive: listing reads receipts, so it needs no identity.
#[derive(Debug, Clone)]
pub(crate) struct FileArchive<C: Codec> {
    folder: PathBuf,
    codec: C,
    sealing: Sealing,
}

/// An archive written under its temporary name, synced, not yet renamed into place.
pub(crate) struct Staged {
    temp: tempfile::NamedTempFile,
    path: PathBuf,
    receipt: Option<Receipt>,
    /// Lower-case hex SHA-256 of the archive's bytes.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) sha256: String,
    /// Its size.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) bytes: u64,
}

impl<C: Codec> FileArchive<C> {
    /// Archives kept in `folder` (created owner-only on the first write).
    pub(crate) fn new(folder: PathBuf, codec: C) -> Self {
        Self { folder, codec, sealing: Sealing::default() }
    }

    /// The same, sealed (encrypted) as `sealing` says.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    pub(crate) fn sealed(mut self, sealing: Sealing) -> Self {
        self.sealing = sealing;
        self
    }

    /// The archive folder.
    pub(crate) fn folder(&self) -> &Path {
        &self.folder
    }

    /// The file name of a backup's archive: `<id>.<ext>`, `.age` appended when encrypting.
    pub(crate) fn archive_name(&self, metadata: &BackupMetadata) -> String {
        format!("{}.{}{}", metadata.id, C::EXTENSION, self.sealing.suffix())
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
        let staged = self.stage(metadata, |out, path| {
            let digest = self.sealing.is_configured();
            self.write_stream(out, root, metadata, path, digest, ctx).map(|(_, sha256, bytes)| (sha256, bytes))
        })?;
        if ctx.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        self.publish(staged, metadata)
    }

    /// Writes the compressed (and sealed) tar stream of `root` into `out`; returns `out`, the
    /// archive's SHA-256 (when `digest`, else empty) and size.
    pub(crate) fn write_stream<W: Write>(
        &self,
        out: W,
        root: &Path,
        metadata: &BackupMetadata,
        path: &Path,
        digest: bool,
        ctx: &StepContext,
    ) -> Result<(W, String, u64), ArchiveError> {
        let digest = DigestWriter::new(out, digest);
        let sealed = self.sealing.wrap_writer(digest, path)?;
        let encoder = self.codec.encoder(sealed).map_err(|e| ArchiveError::io("writing", path, e))?;
        let tar_out = BufWriter::with_capacity(IO_BUFFER, encoder);
        let tar_out = writer::write_tar(tar_out, root, metadata, path, ctx)?;
        let encoder = tar_out.into_inner().map_err(|e| ArchiveError::io("writing", path, e.into_error()))?;
        let sealed = C::finish(encoder).map_err(|e| ArchiveError::io("writing", path, e))?;
        let mut digest = sealed.finish().map_err(|e| ArchiveError::io("writing", path, e))?;
        digest.flush().map_err(|e| ArchiveError::io("writing", path, e))?;
        Ok(digest.finish())
    }

    /// Writes an archive under a temporary dotfile name through `fill` (given the file and the
    /// final path), and syncs it. Dropping the result removes the temporary file.
    pub(crate) fn stage(
        &self,
        metadata: &BackupMetadata,
        fill: impl FnOnce(&mut dyn Write, &Path) -> Result<(String, u64), ArchiveError>,
    ) -> Result<Staged, ArchiveError> {
        create_private_folder(&self.folder)?;
        let name = self.archive_name(metadata);
        let path = self.folder.join(&name);
        if fs::symlink_metadata(&path).is_ok() {
            return Err(ArchiveError::AlreadyExists { path });
        }
        // A dotfile ending in `.partial`: never listed, and removed when dropped (error, cancel).
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.folder)
            .map_err(|e| ArchiveError::io("creating a temporary file in", &self.folder, e))?;
        let (sha256, bytes) = {
            let mut file_out = BufWriter::with_capacity(IO_BUFFER, temp.as_file_mut());
            let (sha256, bytes) = fill(&mut file_out, &path)?;
            file_out.flush().map_err(|e| ArchiveError::io("writing", &path, e))?;
            (sha256, bytes)
        };
        temp.as_file().sync_all().map_err(|e| ArchiveError::io("syncing", temp.path(), e))?;
        let receipt =
            self.sealing.is_configured().then(|| Receipt::new(&name, bytes, sha256.clone(), true, metadata.clone()));
        Ok(Staged { temp, path, receipt, sha256, bytes })
    }

    /// Renames a staged archive into place, then its receipt: only then is it listed.
    pub(crate) fn publish(&self, staged: Staged, metadata: &BackupMetadata) -> Result<ArchiveInfo, ArchiveError> {
        let Staged { temp, path, receipt, .. } = staged;
        let receipt_temp = match &receipt {
            Some(receipt) => Some(self.stage_receipt(receipt, &path)?),
            None => None,
        };
        temp.persist_noclobber(&path).map_err(|e| match e.error.kind() {
            io::ErrorKind::AlreadyExists => ArchiveError::AlreadyExists { path: path.clone() },
            _ => ArchiveError::io("renaming the temporary file to", &path, e.error),
        })?;
        if let Some(receipt_temp) = receipt_temp {
            let receipt_path = receipt_path(&path);
            receipt_temp
                .persist(&receipt_path)
                .map_err(|e| ArchiveError::io("renaming a receipt to", &receipt_path, e.error))?;
        }
        sync_folder(&self.folder)?;
        let bytes = fs::metadata(&path).map_err(|e| ArchiveError::io("reading", &path, e))?.len();
        Ok(ArchiveInfo { metadata: metadata.clone(), path, bytes })
    }

    fn stage_receipt(&self, receipt: &Receipt, archive: &Path) -> Result<tempfile::NamedTempFile, ArchiveError> {
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{}{}.", receipt.archive, receipt::SUFFIX))
            .suffix(".partial")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.folder)
            .map_err(|e| ArchiveError::io("creating a temporary file in", &self.folder, e))?;
        temp.write_all(&receipt.to_json(archive)?).map_err(|e| ArchiveError::io("writing", temp.path(), e))?;
        temp.as_file().sync_all().map_err(|e| ArchiveError::io("syncing", temp.path(), e))?;
        Ok(temp)
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
        let encrypted_suffix = format!("{suffix}{}", super::sealing::ENCRYPTED_SUFFIX);
        let mut found = Vec::new();
        for item in items {
            let item = item.map_err(|e| ArchiveError::io("listing", &self.folder, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temporary files of unfinished writes are dotfiles: never listed.
            if name.starts_with('.') || !(name.ends_with(&suffix) || name.ends_with(&encrypted_suffix)) {
                continue;
            }
            let path = item.path();
            let read = |path: &Path| {
                if is_encrypted_name(name) {
                    read_receipt(path).map(|r| r.metadata)
                } else {
                    reader::read_metadata::<C>(path)
                }
            };
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() => match read(&path) {
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
            // The receipt first: a crash in between leaves an unlisted file, never a listed
            // backup without its archive.
            let receipt = receipt_path(&path);
            match fs::remove_file(&receipt) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ArchiveError::io("removing", &receipt, e));
                }
                _ => {}
            }
            fs::remove_file(&path).map_err(|e| ArchiveError::io("removing", &path, e))?;
            sync_folder(&folder)
        })
        .await
        .map_err(stream::join_error)?
    }

    pub(crate) async fn verify(&self, archive: &ArchiveInfo, ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        let path = archive.path.clone();
        let sealing = self.sealing.clone();
        stream::run_blocking(ctx, move |ctx| {
            let mut sink = VerifySink::new(&path);
            let found = FoundEntries::for_verify(&ctx)?;
            let scanned = reader::scan::<C>(&path, &sealing, &ctx, Phase::Verify, &mut sink, found)?;
            Ok(VerifyReport::of(path, scanned.manifest))
        })
        .await
    }

    /// Extracts into `target`; `database_extracted` is called once the database folder is
    /// written (and at the latest when the extraction succeeded).
    pub(crate) async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
        database_extracted: Option<DatabaseExtracted>,
    ) -> Result<ManifestSummary, ArchiveError> {
        let path = archive.path.clone();
        let target = target.to_owned();
        let sealing = self.sealing.clone();
        stream::run_blocking(ctx, move |ctx| {
            let mut extractor = Extractor::prepare(&path, &target)?;
            let (extracted, database_extracted) =
                extract_into::<C>(&path, &sealing, &mut extractor, &ctx, database_extracted);
            let extracted = extracted.and_then(|manifest| extractor.finish().map(|()| manifest));
            match &extracted {
                Ok(_) => database_extracted.map_or((), |callback| callback()),
                Err(_) => extractor.abandon(),
            }
            extracted
        })
        .await
    }
}

/// The extraction, and the database callback when the content did not call it.
fn extract_into<C: Codec>(
    path: &Path,
    sealing: &Sealing,
    extractor: &mut Extractor,
    ctx: &StepContext,
    database_extracted: Option<DatabaseExtracted>,
) -> (Result<ManifestSummary, ArchiveError>, Option<DatabaseExtracted>) {
    let found = match FoundEntries::new_in(extractor.target()) {
        Ok(found) => found,
        Err(e) => return (Err(e), database_extracted),
    };
    let (scanned, database_extracted) = extract_pipeline::extract_with(path, extractor, database_extracted, |sink| {
        reader::scan::<C>(path, sealing, ctx, Phase::Extract, sink, found)
    });
    let extracted = scanned.and_then(|mut scanned| {
        let entries = scanned.found.replay()?;
        finish_extraction(extractor, &scanned.metadata, entries)
    });
    (extracted, database_extracted)
}

/// `<archive>.json`.
fn receipt_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(receipt::SUFFIX);
    PathBuf::from(name)
}

/// The metadata of an encrypted archive, from its receipt.
fn read_receipt(archive: &Path) -> Result<Receipt, ArchiveError> {
    let path = receipt_path(archive);
    let bytes = fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ArchiveError::Corrupt {
            archive: archive.to_owned(),
            reason: format!("its receipt {} is missing (an unfinished write?)", path.display()),
        },
        _ => ArchiveError::io("reading", &path, e),
    })?;
    Receipt::parse(&bytes, &path)
}

/// After the content matched the manifest: the folders still open completed (symlinks, modes,
/// times), then bitbucket-diy's own files (the manifest written from `entries`, the ones found),
/// so an extracted tree is marked as a backup only once complete.
pub(crate) fn finish_extraction(
    extractor: &mut Extractor,
    metadata: &BackupMetadata,
    entries: impl Iterator<Item = Result<ManifestEntry, ArchiveError>>,
) -> Result<ManifestSummary, ArchiveError> {
    extractor.complete_all()?;
    let mtime = metadata.created_at.as_second();
    let summary = extractor.own_file(MANIFEST_PATH, mtime, |out, write_error| {
        let mut manifest = ManifestWriter::new(out, metadata).map_err(write_error)?;
        for entry in entries {
            manifest.push(&entry?).map_err(write_error)?;
        }
        manifest.finish().map(|(_, summary)| summary).map_err(write_error)
    })?;
    extractor.own_json(METADATA_PATH, metadata, mtime)?;
    Ok(summary)
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
