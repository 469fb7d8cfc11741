//! Archives on object storage: `tar-zstd` archives streamed to S3 (and S3-compatible stores), GCS
//! or Azure through the `object_store` crate, optionally with a local copy, optionally encrypted.
//!
//! A write streams tar → zstd → (age) → multipart upload, hashing what it sends; with
//! `keep_local` the same bytes also go to a temporary file in the local folder. Nothing is ever
//! visible half-written:
//!
//! 1. the archive's bytes go to a **multipart upload**, which the store shows under the final
//!    name only once completed; on any failure or cancellation the upload is aborted;
//! 2. after completion the object's size is checked, and with `verify_upload` (the default) the
//!    object is read back and its SHA-256 compared with the one computed while uploading; a
//!    mismatch deletes it;
//! 3. only then is the **receipt** `<archive>.json` (size, SHA-256, the backup's metadata) put
//!    beside it, and only archives with a receipt are listed;
//! 4. the local copy, if any, is renamed into place last.
//!
//! `verify` and `extract` stream the object through the same reader as local archives (never a
//! full download to disk first) and check its SHA-256 against the receipt as well as every entry
//! against the manifest.

mod store;
mod transfer;

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::mpsc;

use crate::archive_format::{BackupMetadata, ManifestSummary};
use crate::events::Phase;
use crate::strategy::{ArchiveError, ArchiveInfo, ArchiveStrategy, StepContext, VerifyReport, WorkingFolder};

use super::codec::{Codec, Zstd};
use super::extract_pipeline;
use super::file_archive::{Staged, finish_extraction, sort_newest_first};
use super::manifest_check::FoundEntries;
use super::reader::{self, Scanned, VerifySink};
use super::receipt::{self, Receipt};
use super::safe_extract::Extractor;
use super::sealing::{DigestReader, Sealing};
use super::stream::{self, CountingReader, IO_BUFFER, Progress};
use super::tar_zstd::TarZstdArchive;

use store::remote_error;
pub use store::{RemoteCredentials, RemoteStore};
use transfer::{PartWriter, PendingUpload, RemoteReader, Tee, take_failure};

/// How archives are uploaded and kept remotely; defaults match `[archive.remote]`'s.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteOptions {
    /// Also keep each archive in the local folder (false: upload only, nothing written locally).
    pub keep_local: bool,
    /// Keep the newest N archives in the store; `None` uses the `keep` retention is given
    /// (`archive.keep`); 0 keeps all.
    pub keep: Option<usize>,
    /// Read each uploaded archive back and compare its SHA-256 before it is listed.
    pub verify_upload: bool,
    /// Size of upload parts in bytes (5 MiB at least; doubled every 2,500 parts).
    pub part_size: usize,
    /// Parts uploaded at once (memory: about `part_size` × (`upload_concurrency` + 2)).
    pub upload_concurrency: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self { keep_local: true, keep: None, verify_upload: true, part_size: 16 << 20, upload_concurrency: 4 }
    }
}

/// `tar-zstd` archives in an object store (see the module documentation for the guarantees).
///
/// [`ArchiveInfo::path`] of a remote archive is its URL (`s3://bucket/prefix/<id>.tar.zst`), so
/// `find` accepts the id, the object name or the URL.
#[derive(Debug, Clone)]
pub struct RemoteArchive {
    store: RemoteStore,
    local: TarZstdArchive,
    sealing: Sealing,
    options: RemoteOptions,
}

impl RemoteArchive {
    /// Archives in `store`, compressed at zstd `level` by `threads` workers (0: one per core).
    /// `local_folder` receives the local copies when `options.keep_local`; it is also what
    /// [`ArchiveStrategy::folder`] reports.
    pub fn new(store: RemoteStore, local_folder: PathBuf, level: i32, threads: u32, options: RemoteOptions) -> Self {
        Self { store, local: TarZstdArchive::new(local_folder, level, threads), sealing: Sealing::default(), options }
    }

    /// The same, with archives (remote and local copies) encrypted to `encryption`'s recipients
    /// and read with its identities.
    #[cfg(feature = "encryption")]
    pub fn encrypted(mut self, encryption: Arc<crate::encryption::Encryption>) -> Self {
        self.sealing = Sealing::age(encryption.clone());
        self.local = self.local.encrypted(encryption);
        self
    }

    /// The store.
    pub fn store(&self) -> &RemoteStore {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &RemoteOptions {
        &self.options
    }

    /// The archives kept in the local folder (`keep_local`), as a local strategy.
    pub fn local_copies(&self) -> &TarZstdArchive {
        &self.local
    }

    async fn exists(&self, name: &str) -> Result<bool, ArchiveError> {
        match self.store.inner().head(&self.store.key(name)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote_error("looking for", &self.store.location(name), e)),
        }
    }

    /// The object name of a listed archive, refusing anything not in this store.
    fn object_name(&self, archive: &ArchiveInfo) -> Result<String, ArchiveError> {
        let shown = archive.path.to_string_lossy();
        shown
            .strip_prefix(self.store.url())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(str::to_owned)
            .ok_or_else(|| ArchiveError::NotFound {
                name: shown.into_owned(),
                folder: PathBuf::from(self.store.url()),
                available: Vec::new(),
            })
    }

    async fn receipt(&self, name: &str) -> Result<Receipt, ArchiveError> {
        let receipt_name = format!("{name}{}", receipt::SUFFIX);
        let location = self.store.location(&receipt_name);
        let body = async {
            let got = self.store.inner().get(&self.store.key(&receipt_name)).await?;
            got.bytes().await
        };
        let bytes = body.await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => ArchiveError::NotFound {
                name: name.to_owned(),
                folder: PathBuf::from(self.store.url()),
                available: Vec::new(),
            },
            e => remote_error("reading", &location, e),
        })?;
        Receipt::parse(&bytes, Path::new(&location))
    }

    async fn write_remote(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        let name = self.local.files().archive_name(metadata);
        let receipt_name = format!("{name}{}", receipt::SUFFIX);
        let location = self.store.location(&name);
        if self.exists(&receipt_name).await? || self.exists(&name).await? {
            return Err(ArchiveError::AlreadyExists { path: PathBuf::from(&location) });
        }
        let key = self.store.key(&name);
        let upload = self
            .store
            .inner()
            .put_multipart(&key)
            .await
            .map_err(|e| remote_error("starting the upload of", &location, e))?;
        let mut pending = PendingUpload::new(upload, location.clone());

        let concurrency = self.options.upload_concurrency.max(1);
        let (sender, receiver) = mpsc::channel::<Bytes>(concurrency);
        let job = {
            let files = self.local.files().clone();
            let keep_local = self.options.keep_local;
            let part_size = self.options.part_size;
            let root = source.root().to_owned();
            let metadata = metadata.clone();
            let shown = PathBuf::from(&location);
            stream::run_blocking(ctx, move |ctx| {
                let parts = PartWriter::new(sender, part_size);
                if keep_local {
                    let mut parts = Some(parts);
                    let staged = files.stage(&metadata, |file, path| {
                        let Some(parts) = parts.take() else { return Err(ArchiveError::Cancelled) };
                        let tee = Tee { first: file, second: parts };
                        let (tee, sha256, bytes) = files.write_stream(tee, &root, &metadata, path, true, &ctx)?;
                        tee.second.finish().map_err(|e| ArchiveError::io("uploading", &shown, e))?;
                        Ok((sha256, bytes))
                    })?;
                    Ok((staged.sha256.clone(), staged.bytes, Some(staged)))
                } else {
                    let (parts, sha256, bytes) = files.write_stream(parts, &root, &metadata, &shown, true, &ctx)?;
                    parts.finish().map_err(|e| ArchiveError::io("uploading", &shown, e))?;
                    Ok((sha256, bytes, None))
                }
            })
        };
        let cancel = ctx.cancellation().clone();
        let (written, uploaded) = tokio::join!(job, pending.upload_parts(receiver, concurrency, &cancel));
        // The upload's own error explains a write that stopped because the upload stopped.
        let (sha256, bytes, staged) = match (written, uploaded) {
            (Ok(written), Ok(_)) if !ctx.is_cancelled() => written,
            (Err(ArchiveError::Cancelled), _) | (_, Err(ArchiveError::Cancelled)) => {
                pending.abort().await;
                return Err(ArchiveError::Cancelled);
            }
            (_, Err(e)) | (Err(e), _) => {
                pending.abort().await;
                return Err(e);
            }
            (Ok(_), Ok(_)) => {
                pending.abort().await;
                return Err(ArchiveError::Cancelled);
            }
        };
        pending.complete().await?;

        if let Err(e) = self.check_upload(&name, &sha256, bytes, ctx).await {
            self.delete_quietly(&name).await;
            return Err(e);
        }
        let receipt = Receipt::new(&name, bytes, sha256, self.sealing.is_configured(), metadata.clone());
        let receipt_json = receipt.to_json(Path::new(&location))?;
        let receipt_location = self.store.location(&receipt_name);
        if let Err(e) = self.store.inner().put(&self.store.key(&receipt_name), PutPayload::from(receipt_json)).await {
            self.delete_quietly(&name).await;
            return Err(remote_error("writing", &receipt_location, e));
        }
        tracing::info!(archive = %location, bytes, "archive uploaded and checked");
        if let Some(staged) = staged {
            self.publish_local(staged, metadata, ctx).await;
        }
        Ok(ArchiveInfo { metadata: metadata.clone(), path: PathBuf::from(location), bytes })
    }

    /// The object must hold what was sent: its size always, its SHA-256 with `verify_upload`.
    async fn check_upload(&self, name: &str, sha256: &str, bytes: u64, ctx: &StepContext) -> Result<(), ArchiveError> {
        let location = self.store.location(name);
        let key = self.store.key(name);
        let expected = Receipt::new(name, bytes, sha256.to_owned(), false, placeholder_metadata(ctx));
        let head = self.store.inner().head(&key).await.map_err(|e| remote_error("checking", &location, e))?;
        if !self.options.verify_upload {
            return expected.check(Path::new(&location), sha256, head.size);
        }
        let got = self.store.inner().get(&key).await.map_err(|e| remote_error("reading back", &location, e))?;
        let shown = PathBuf::from(&location);
        stream::run_blocking(ctx, move |_ctx| {
            let body = RemoteReader::new(got.into_stream());
            let failure = body.failure();
            let read = DigestReader::new(body).finish();
            match (read, take_failure(&failure)) {
                (_, Some(e)) => Err(remote_error("reading back", &location, e)),
                (Err(e), None) => Err(ArchiveError::io("reading back", &shown, e)),
                (Ok((actual, actual_bytes)), None) => expected.check(&shown, &actual, actual_bytes),
            }
        })
        .await
    }

    async fn delete_quietly(&self, name: &str) {
        if let Err(e) = self.store.inner().delete(&self.store.key(name)).await {
            tracing::warn!(object = %self.store.location(name), error = %e, "could not delete a failed upload");
        }
    }

    /// The local copy is a convenience: the backup is complete once the remote copy is, so a
    /// failure here is a warning.
    async fn publish_local(&self, staged: Staged, metadata: &BackupMetadata, ctx: &StepContext) {
        let files = self.local.files().clone();
        let metadata = metadata.clone();
        let published = tokio::task::spawn_blocking(move || files.publish(staged, &metadata)).await;
        match published {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => ctx.warn(format!("the archive was uploaded, but its local copy could not be kept: {e}")),
            Err(e) => ctx.warn(format!("the archive was uploaded, but its local copy could not be kept: {e}")),
        }
    }

    /// Streams the archive through the reader pipeline into `sink`, then checks its SHA-256
    /// against the receipt. A damaged archive is reported as a checksum mismatch when the bytes
    /// differ from what was uploaded (the most precise cause).
    async fn scan_remote<S, T>(
        &self,
        archive: &ArchiveInfo,
        ctx: &StepContext,
        phase: Phase,
        prepare: impl FnOnce(&Path) -> Result<S, ArchiveError> + Send + 'static,
        run: impl FnOnce(&mut S, &mut dyn std::io::Read, &Path, &StepContext) -> Result<Scanned, ArchiveError>
        + Send
        + 'static,
        finish: impl FnOnce(S, &Path, Result<Scanned, ArchiveError>) -> Result<T, ArchiveError> + Send + 'static,
    ) -> Result<T, ArchiveError>
    where
        S: Send + 'static,
        T: Send + 'static,
    {
        let name = self.object_name(archive)?;
        let receipt = self.receipt(&name).await?;
        let location = self.store.location(&name);
        let got =
            self.store.inner().get(&self.store.key(&name)).await.map_err(|e| remote_error("reading", &location, e))?;
        let sealing = self.sealing.clone();
        stream::run_blocking(ctx, move |ctx| {
            let shown = PathBuf::from(&location);
            let mut state = prepare(&shown)?;
            let body = RemoteReader::new(got.into_stream());
            let failure = body.failure();
            let progress = Progress::start(&ctx, phase, Some(receipt.bytes));
            let mut digest = DigestReader::new(CountingReader::new(body, &shown, progress));
            let scanned = sealing
                .open_reader(receipt.encrypted, BufReader::with_capacity(IO_BUFFER, &mut digest), &shown)
                .and_then(|mut plain| run(&mut state, &mut plain, &shown, &ctx));
            let outcome = match scanned {
                Err(ArchiveError::Cancelled) => Err(ArchiveError::Cancelled),
                _ if ctx.is_cancelled() => Err(ArchiveError::Cancelled),
                scanned => {
                    let digested = digest.finish();
                    match (take_failure(&failure), digested) {
                        (Some(e), _) => Err(remote_error("reading", &location, e)),
                        (None, Ok((sha256, bytes))) => match receipt.check(&shown, &sha256, bytes) {
                            Err(mismatch) => Err(mismatch),
                            Ok(()) => scanned,
                        },
                        (None, Err(e)) => scanned.and(Err(stream::read_error(&shown, e))),
                    }
                }
            };
            finish(state, &shown, outcome)
        })
        .await
    }
}

/// Only the id matters to a receipt used for a check.
fn placeholder_metadata(ctx: &StepContext) -> BackupMetadata {
    BackupMetadata {
        format_version: crate::archive_format::FORMAT_VERSION,
        id: ctx.backup_id().clone(),
        created_at: jiff::Timestamp::UNIX_EPOCH,
        tool_version: String::new(),
        bitbucket_version: None,
        instance_url: None,
        zero_downtime: false,
        lock_window: None,
        database: Default::default(),
        filesystem: Default::default(),
        data_stores: Vec::new(),
    }
}

#[async_trait]
impl ArchiveStrategy for RemoteArchive {
    fn name(&self) -> &str {
        Zstd::NAME
    }

    fn folder(&self) -> &Path {
        self.local.folder()
    }

    async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        self.write_remote(source, metadata, ctx).await
    }

    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        let prefix = self.store.prefix();
        let prefix = if prefix.as_ref().is_empty() { None } else { Some(prefix) };
        let listing = self
            .store
            .inner()
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| remote_error("listing", self.store.url(), e))?;
        let sizes: std::collections::HashMap<String, u64> = listing
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(|name| (name.to_owned(), o.size)))
            .collect();
        let receipts: Vec<String> = sizes
            .keys()
            .filter_map(|name| name.strip_suffix(receipt::SUFFIX))
            .filter(|archive| sizes.contains_key(*archive))
            .map(str::to_owned)
            .collect();
        let read = futures_util::stream::iter(receipts)
            .map(|name| async move {
                let receipt = self.receipt(&name).await;
                (name, receipt)
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let mut found = Vec::new();
        for (name, receipt) in read {
            let location = self.store.location(&name);
            match receipt {
                Ok(receipt) if Some(&receipt.bytes) == sizes.get(&name) && receipt.archive == name => {
                    found.push(ArchiveInfo {
                        metadata: receipt.metadata,
                        path: PathBuf::from(location),
                        bytes: receipt.bytes,
                    })
                }
                Ok(_) => tracing::warn!(archive = %location, "skipping an archive that does not match its receipt"),
                Err(e) => {
                    tracing::warn!(archive = %location, error = %e, "skipping an archive with an unreadable receipt")
                }
            }
        }
        sort_newest_first(&mut found);
        Ok(found)
    }

    async fn remove(&self, archive: &ArchiveInfo) -> Result<(), ArchiveError> {
        let name = self.object_name(archive)?;
        // The receipt first: an interruption leaves an unlisted object, never a listed backup
        // without its archive.
        let receipt_name = format!("{name}{}", receipt::SUFFIX);
        for object in [receipt_name, name] {
            match self.store.inner().delete(&self.store.key(&object)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(remote_error("deleting", &self.store.location(&object), e)),
            }
        }
        Ok(())
    }

    async fn verify(&self, archive: &ArchiveInfo, ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        self.scan_remote(
            archive,
            ctx,
            Phase::Verify,
            |shown| Ok(VerifySink::new(shown)),
            |sink, plain, shown, ctx| {
                let found = FoundEntries::for_verify(ctx)?;
                reader::scan_stream::<Zstd>(plain, shown, ctx, sink, found)
            },
            |_sink, _shown, scanned| scanned,
        )
        .await
        .map(|scanned| VerifyReport::of(archive.path.clone(), scanned.manifest))
    }

    async fn extract(
        &self,
        archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
    ) -> Result<ManifestSummary, ArchiveError> {
        let target = target.to_owned();
        self.scan_remote(
            archive,
            ctx,
            Phase::Extract,
            move |shown| Extractor::prepare(shown, &target),
            |extractor, plain, shown, ctx| {
                let found = FoundEntries::new_in(extractor.target())?;
                extract_pipeline::extract_with(shown, extractor, None, |sink| {
                    reader::scan_stream::<Zstd>(plain, shown, ctx, sink, found)
                })
                .0
            },
            |mut extractor, _shown, scanned| {
                let extracted = scanned.and_then(|mut scanned| {
                    finish_extraction(&mut extractor, &scanned.metadata, scanned.found.replay()?)
                        .and_then(|manifest| extractor.finish().map(|()| manifest))
                });
                if extracted.is_err() {
                    extractor.abandon();
                }
                extracted
            },
        )
        .await
    }

    /// Remote archives beyond `options.keep` (or `keep`), and local copies beyond `keep`.
    async fn prune(&self, keep: usize) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        let remote_keep = self.options.keep.unwrap_or(keep);
        let mut removed = Vec::new();
        if remote_keep > 0 {
            for old in self.list().await?.into_iter().skip(remote_keep) {
                self.remove(&old).await?;
                removed.push(old);
            }
        }
        removed.extend(self.local.prune(keep).await?);
        Ok(removed)
    }
}
