//! `none`: no archive; the working folder is the backup.
//!
//! # Contract with the orchestrator
//!
//! The working folder is rewritten in place by every run, so "is there a complete backup here?"
//! is answered by one marker: `<working>/.bitbucket-diy/backup.json` (the archive format's
//! [`METADATA_PATH`]).
//!
//! - The orchestrator removes the marker at the start of every run, before any step changes the
//!   working folder. From then until [`NoArchive::write`] succeeds the folder is not listed: a
//!   half-updated working folder is never taken for a backup, even after a crash.
//! - `write` hashes the tree into the manifest ([`MANIFEST_PATH`]), then writes the marker; both
//!   atomically (temporary dotfile, fsync, rename, fsync of the folder), marker last. It also
//!   removes a marker still present, should a caller skip the first step.
//! - `remove` deletes the marker and the manifest, never the data: the next run copies
//!   incrementally into it.
//!
//! There is one backup at most: retention has nothing to prune.

use std::fs;
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::archive_format::{
    BackupMetadata, EntryKind, MANIFEST_PATH, METADATA_PATH, ManifestEntry, ManifestSummary, ManifestWriter,
};
use crate::events::Phase;
use crate::strategy::{ArchiveError, ArchiveInfo, ArchiveStrategy, StepContext, VerifyReport, WorkingFolder};

use super::file_archive::{create_private_folder, finish_extraction, sync_folder};
use super::manifest_check::{self, FoundEntries};
use super::policy::{self, EntryRules};
use super::reader::{parse_metadata, require_match};
use super::safe_extract::{Extractor, FileData};
use super::stream::{self, HashingReader, IO_BUFFER, Progress};
use super::tree::{self, ARCHIVED_FOLDERS, TreeEntry};

/// The working folder itself, marked as a backup once complete.
#[derive(Debug, Clone)]
pub struct NoArchive {
    working: WorkingFolder,
}

impl NoArchive {
    /// Backups recorded in `working` (its [`ArchiveStrategy::folder`] is the working folder root).
    pub fn new(working: WorkingFolder) -> Self {
        Self { working }
    }

    fn root(&self) -> &Path {
        self.working.root()
    }

    fn marker_path(&self) -> PathBuf {
        self.root().join(METADATA_PATH)
    }

    fn manifest_path(&self) -> PathBuf {
        self.root().join(MANIFEST_PATH)
    }

    fn write_blocking(&self, metadata: &BackupMetadata, ctx: &StepContext) -> Result<ArchiveInfo, ArchiveError> {
        let marker = self.marker_path();
        remove_if_present(&marker)?;
        tree::warn_if_nothing_to_archive(self.root(), ctx);
        let total = tree::total_file_bytes(self.root(), ctx)?;
        let mut progress = Progress::start(ctx, Phase::Archive, Some(total));
        let state = self.working.state_dir();
        create_private_folder(&state)?;
        // The manifest is written entry by entry as the tree is hashed: never held in memory.
        let manifest_path = self.manifest_path();
        let summary = write_atomically(&manifest_path, |out| {
            let write_error = |e| ArchiveError::io("writing", &manifest_path, e);
            let mut manifest = ManifestWriter::new(out, metadata).map_err(write_error)?;
            tree::walk(self.root(), ctx, |entry| {
                if entry.kind == EntryKind::Symlink {
                    let target = entry.link.as_deref().unwrap_or_default();
                    if let Err(reason) = policy::check_symlink_target(&entry.rel, target) {
                        progress.ctx().warn(format!(
                            "{} is kept as a symlink, but extraction will refuse it: {reason}",
                            entry.abs.display()
                        ));
                    }
                }
                manifest.push(&hash_entry(&entry, &mut progress)?).map_err(write_error)
            })?;
            progress.report();
            if ctx.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            manifest.finish().map(|(_, summary)| summary).map_err(write_error)
        })?;
        let metadata_json = serde_json::to_vec_pretty(metadata).map_err(|e| json_error(&marker, e))?;
        write_atomically(&marker, |out| {
            out.write_all(&metadata_json).map_err(|e| ArchiveError::io("writing", &marker, e))
        })?;
        sync_folder(&state)?;
        Ok(ArchiveInfo { metadata: metadata.clone(), path: self.root().to_owned(), bytes: summary.bytes })
    }

    /// The marker's metadata, what the manifest lists (counts), and the manifest file to check
    /// against, when the working folder holds a backup.
    fn read_marker(&self, strict: bool) -> Result<Option<Marked>, ArchiveError> {
        let marker = self.marker_path();
        let metadata_json = match fs::read(&marker) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ArchiveError::io("reading", marker, e)),
        };
        let metadata = parse_metadata(self.root(), &metadata_json, strict)?;
        let manifest_path = self.manifest_path();
        let mut manifest = match fs::File::open(&manifest_path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::MissingManifest { archive: self.root().to_owned() });
            }
            Err(e) => return Err(ArchiveError::io("reading", manifest_path, e)),
        };
        let listed = manifest_check::read_summary(self.root(), &manifest)?;
        manifest.rewind().map_err(|e| ArchiveError::io("reading", &manifest_path, e))?;
        Ok(Some(Marked { metadata, listed, manifest }))
    }

    fn require_marker(&self) -> Result<Marked, ArchiveError> {
        self.read_marker(true)?.ok_or_else(|| ArchiveError::NotFound {
            name: self.root().display().to_string(),
            folder: self.root().to_owned(),
            available: Vec::new(),
        })
    }

    /// Compares the entries `found` with the manifest in `manifest` (a file), and the metadata.
    fn check(
        &self,
        metadata: &BackupMetadata,
        manifest: fs::File,
        found: &mut FoundEntries,
    ) -> Result<ManifestSummary, ArchiveError> {
        let checked = manifest_check::read_and_check(self.root(), manifest, found)?;
        require_match(self.root(), metadata, checked, found)
    }

    fn verify_blocking(&self, ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        let Marked { metadata, listed, manifest } = self.require_marker()?;
        let mut progress = Progress::start(ctx, Phase::Verify, Some(listed.bytes));
        let mut rules = EntryRules::default();
        let mut found = FoundEntries::for_verify(ctx)?;
        tree::walk(self.root(), ctx, |entry| {
            self.admit(&mut rules, &entry)?;
            found.push(&hash_entry(&entry, &mut progress)?)
        })?;
        progress.report();
        let summary = self.check(&metadata, manifest, &mut found)?;
        Ok(VerifyReport::of(self.root().to_owned(), summary))
    }

    fn admit(&self, rules: &mut EntryRules, entry: &TreeEntry) -> Result<(), ArchiveError> {
        rules.admit(&entry.rel, entry.kind, entry.link.as_deref()).map_err(|reason| ArchiveError::UnsafeEntry {
            archive: self.root().to_owned(),
            entry: entry.rel.clone(),
            reason,
        })
    }

    fn extract_blocking(&self, target: &Path, ctx: &StepContext) -> Result<ManifestSummary, ArchiveError> {
        self.refuse_target_inside(target)?;
        let marked = self.require_marker()?;
        let mut extractor = Extractor::prepare(self.root(), target)?;
        let extracted =
            self.copy_tree(&mut extractor, marked, ctx).and_then(|manifest| extractor.finish().map(|()| manifest));
        if extracted.is_err() {
            extractor.abandon();
        }
        extracted
    }

    fn copy_tree(
        &self,
        extractor: &mut Extractor,
        marked: Marked,
        ctx: &StepContext,
    ) -> Result<ManifestSummary, ArchiveError> {
        let Marked { metadata, listed, manifest } = marked;
        let mut progress = Progress::start(ctx, Phase::Extract, Some(listed.bytes));
        let mut rules = EntryRules::default();
        let mut found = FoundEntries::new_in(extractor.target())?;
        tree::walk(self.root(), ctx, |entry| {
            self.admit(&mut rules, &entry)?;
            let mode = entry.mode();
            let mtime = entry.mtime();
            let recorded = match entry.kind {
                EntryKind::Dir => {
                    extractor.folder(&entry.rel, mode, mtime)?;
                    ManifestEntry { path: entry.rel, kind: EntryKind::Dir, size: 0, sha256: None, link: None }
                }
                EntryKind::Symlink => {
                    let target = entry.link.unwrap_or_default();
                    extractor.symlink(&entry.rel, &target, mtime)?;
                    ManifestEntry {
                        path: entry.rel,
                        kind: EntryKind::Symlink,
                        size: 0,
                        sha256: None,
                        link: Some(target),
                    }
                }
                EntryKind::File => {
                    let size = entry.meta.len();
                    let file = tree::open_no_follow(&entry.abs)?;
                    let mut data = BufReader::with_capacity(IO_BUFFER, file).take(size);
                    let source = entry.abs.clone();
                    let read_error = |e: io::Error| match stream::origin(e) {
                        stream::IoOrigin::Cancelled => ArchiveError::Cancelled,
                        stream::IoOrigin::LocalRead { path, source } => ArchiveError::io("reading", path, source),
                        stream::IoOrigin::Other(e) => ArchiveError::io("reading", source.clone(), e),
                    };
                    let data =
                        FileData { reader: &mut data, size, read_error: &read_error, progress: Some(&mut progress) };
                    let sha256 = extractor.file(&entry.rel, mode, mtime, data)?;
                    ManifestEntry { path: entry.rel, kind: EntryKind::File, size, sha256: Some(sha256), link: None }
                }
            };
            found.push(&recorded)
        })?;
        progress.report();
        self.check(&metadata, manifest, &mut found)?;
        finish_extraction(extractor, &metadata, found.replay()?)
    }

    /// Extracting into the tree being read would copy it into itself.
    fn refuse_target_inside(&self, target: &Path) -> Result<(), ArchiveError> {
        let absolute = |p: &Path| std::path::absolute(p).map_err(|e| ArchiveError::io("resolving", p, e));
        let target_abs = absolute(target)?;
        let root_abs = absolute(self.root())?;
        let inside = target_abs.starts_with(root_abs.join(WorkingFolder::STATE))
            || ARCHIVED_FOLDERS.iter().any(|folder| target_abs.starts_with(root_abs.join(folder)));
        if inside {
            return Err(ArchiveError::io(
                "extracting into",
                target,
                io::Error::new(io::ErrorKind::InvalidInput, "the target lies inside the working folder being copied"),
            ));
        }
        Ok(())
    }
}

/// A backup found in the working folder: its marker, and its manifest.
struct Marked {
    metadata: BackupMetadata,
    /// What the manifest lists (counts only).
    listed: ManifestSummary,
    /// The manifest, from its start, to check the tree against.
    manifest: fs::File,
}

/// The manifest entry of a tree entry, hashing file content.
fn hash_entry(entry: &TreeEntry, progress: &mut Progress) -> Result<ManifestEntry, ArchiveError> {
    match entry.kind {
        EntryKind::Dir => {
            Ok(ManifestEntry { path: entry.rel.clone(), kind: EntryKind::Dir, size: 0, sha256: None, link: None })
        }
        EntryKind::Symlink => Ok(ManifestEntry {
            path: entry.rel.clone(),
            kind: EntryKind::Symlink,
            size: 0,
            sha256: None,
            link: entry.link.clone(),
        }),
        EntryKind::File => {
            let size = entry.meta.len();
            let file = tree::open_no_follow(&entry.abs)?;
            let mut reader = HashingReader::new(BufReader::with_capacity(IO_BUFFER, file), &entry.abs, progress);
            let read = io::copy(&mut reader, &mut io::sink()).map_err(|e| match stream::origin(e) {
                stream::IoOrigin::Cancelled => ArchiveError::Cancelled,
                stream::IoOrigin::LocalRead { path, source } => ArchiveError::io("reading", path, source),
                stream::IoOrigin::Other(e) => ArchiveError::io("reading", &entry.abs, e),
            })?;
            if read != size {
                return Err(ArchiveError::io(
                    "reading",
                    &entry.abs,
                    io::Error::other(format!(
                        "the file changed size while it was hashed ({size} bytes when listed, {read} read)"
                    )),
                ));
            }
            Ok(ManifestEntry {
                path: entry.rel.clone(),
                kind: EntryKind::File,
                size,
                sha256: Some(reader.finish()),
                link: None,
            })
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), ArchiveError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ArchiveError::io("removing", path, e)),
    }
}

/// Replaces `path` with what `write` writes: temporary dotfile, fsync, rename. Owner-only.
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(folder)
        .map_err(|e| ArchiveError::io("creating a temporary file in", folder, e))?;
    let mut out = io::BufWriter::with_capacity(IO_BUFFER, temp);
    let written = write(&mut out)?;
    let temp = out.into_inner().map_err(|e| ArchiveError::io("writing", path, e.into_error()))?;
    temp.as_file().sync_all().map_err(|e| ArchiveError::io("syncing", temp.path(), e))?;
    temp.persist(path).map_err(|e| ArchiveError::io("renaming the temporary file to", path, e.error))?;
    Ok(written)
}

fn json_error(path: &Path, error: serde_json::Error) -> ArchiveError {
    ArchiveError::io("writing", path, io::Error::other(error))
}

#[async_trait]
impl ArchiveStrategy for NoArchive {
    fn name(&self) -> &str {
        "none"
    }

    fn folder(&self) -> &Path {
        self.root()
    }

    async fn write(
        &self,
        source: &WorkingFolder,
        metadata: &BackupMetadata,
        ctx: &StepContext,
    ) -> Result<ArchiveInfo, ArchiveError> {
        if source.root() != self.root() {
            return Err(ArchiveError::Custom {
                strategy: "none".to_owned(),
                message: format!(
                    "the backup can only be recorded in the working folder itself ({}), not in {}",
                    self.root().display(),
                    source.root().display()
                ),
            });
        }
        let this = self.clone();
        let metadata = metadata.clone();
        stream::run_blocking(ctx, move |ctx| this.write_blocking(&metadata, &ctx)).await
    }

    async fn list(&self) -> Result<Vec<ArchiveInfo>, ArchiveError> {
        let this = self.clone();
        let listed = move || -> Result<Option<ArchiveInfo>, ArchiveError> {
            let Some(Marked { metadata, listed, .. }) = this.read_marker(false)? else {
                return Ok(None);
            };
            Ok(Some(ArchiveInfo { metadata, path: this.root().to_owned(), bytes: listed.bytes }))
        };
        let root = self.root().to_owned();
        tokio::task::spawn_blocking(move || match listed() {
            Ok(info) => Ok(info.into_iter().collect()),
            Err(e) => {
                tracing::warn!(folder = %root.display(), error = %e, "skipping an unreadable backup");
                Ok(Vec::new())
            }
        })
        .await
        .map_err(stream::join_error)?
    }

    async fn remove(&self, archive: &ArchiveInfo) -> Result<(), ArchiveError> {
        if archive.path != self.root() {
            return Err(ArchiveError::NotFound {
                name: archive.path.display().to_string(),
                folder: self.root().to_owned(),
                available: Vec::new(),
            });
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            remove_if_present(&this.marker_path())?;
            remove_if_present(&this.manifest_path())?;
            sync_folder(&this.working.state_dir())
        })
        .await
        .map_err(stream::join_error)?
    }

    async fn verify(&self, _archive: &ArchiveInfo, ctx: &StepContext) -> Result<VerifyReport, ArchiveError> {
        let this = self.clone();
        stream::run_blocking(ctx, move |ctx| this.verify_blocking(&ctx)).await
    }

    async fn extract(
        &self,
        _archive: &ArchiveInfo,
        target: &Path,
        ctx: &StepContext,
    ) -> Result<ManifestSummary, ArchiveError> {
        let this = self.clone();
        let target = target.to_owned();
        stream::run_blocking(ctx, move |ctx| this.extract_blocking(&target, &ctx)).await
    }
}
