//! Reads tar streams written by [`super::writer`]: the metadata alone (for `list`), or every entry
//! checked against the rules and the manifest (for `verify` and `extract`).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::archive_format::{
    BackupMetadata, EntryKind, FORMAT_VERSION, MANIFEST_PATH, METADATA_PATH, ManifestEntry, ManifestSummary,
};
use crate::events::Phase;
use crate::strategy::{ArchiveError, StepContext};

use super::codec::Codec;
use super::manifest_check::{self, CheckedManifest, FoundEntries};
use super::policy::{self, EntryRules};
use super::safe_extract::{CopyError, copy_and_hash};
use super::sealing::{Sealing, is_encrypted_name};
use super::stream::{self, CountingReader, IO_BUFFER, Progress};

/// The metadata entry is a few hundred bytes; anything this large is not ours.
const METADATA_LIMIT: u64 = 1 << 20;

/// Parses metadata JSON. `strict` refuses a format newer than this version reads (verify,
/// extract); `list` is lenient so that newer backups still show.
pub(crate) fn parse_metadata(archive: &Path, bytes: &[u8], strict: bool) -> Result<BackupMetadata, ArchiveError> {
    let corrupt = |reason: String| ArchiveError::Corrupt { archive: archive.to_owned(), reason };
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(format!("the metadata ({METADATA_PATH}) is not JSON: {e}")))?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt(format!("the metadata ({METADATA_PATH}) has no format_version")))?;
    if strict && version > u64::from(FORMAT_VERSION) {
        return Err(ArchiveError::UnsupportedFormat {
            archive: archive.to_owned(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| corrupt(format!("the metadata ({METADATA_PATH}) is invalid: {e}")))
}

/// Reads the first entry of the archive at `path` only: fast however large the archive.
pub(crate) fn read_metadata<C: Codec>(path: &Path) -> Result<BackupMetadata, ArchiveError> {
    let file = File::open(path).map_err(|e| ArchiveError::io("opening", path, e))?;
    let decoder = C::decoder(BufReader::with_capacity(64 << 10, file)).map_err(|e| stream::corrupt(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(|e| stream::corrupt(path, e))?;
    let first = match entries.next() {
        Some(entry) => entry.map_err(|e| stream::corrupt(path, e))?,
        None => {
            return Err(ArchiveError::MissingManifest { archive: path.to_owned() });
        }
    };
    let bytes = read_metadata_entry(path, first)?;
    parse_metadata(path, &bytes, false)
}

fn read_metadata_entry<R: Read>(archive: &Path, mut entry: tar::Entry<'_, R>) -> Result<Vec<u8>, ArchiveError> {
    let is_metadata = policy::normalize_path(&entry.path_bytes()).is_ok_and(|p| p == METADATA_PATH)
        && entry.header().entry_type().is_file();
    if !is_metadata {
        // Not one of ours (or damaged beyond its first entry): no metadata means no manifest.
        return Err(ArchiveError::MissingManifest { archive: archive.to_owned() });
    }
    let size = entry.size();
    if size > METADATA_LIMIT {
        return Err(ArchiveError::Corrupt {
            archive: archive.to_owned(),
            reason: format!("the metadata entry declares {size} bytes; at most {METADATA_LIMIT} are expected"),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.read_to_end(&mut bytes).map_err(|e| stream::read_error(archive, e))?;
    if bytes.len() as u64 != size {
        return Err(ArchiveError::Corrupt {
            archive: archive.to_owned(),
            reason: "the archive ends inside the metadata entry (truncated)".to_owned(),
        });
    }
    Ok(bytes)
}

/// Receives the entries of an archive as they stream by, once admitted by the rules.
pub(crate) trait EntrySink {
    /// A folder.
    fn folder(&mut self, path: &str, mode: u32, mtime: i64) -> Result<(), ArchiveError>;
    /// A regular file of `size` bytes; returns the SHA-256 of its content.
    fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: i64,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<String, ArchiveError>;
    /// A symlink (target already checked).
    fn symlink(&mut self, path: &str, target: &str, mtime: i64) -> Result<(), ArchiveError>;
}

/// What a full pass over an archive found, manifest and content agreeing.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The first entry.
    pub metadata: BackupMetadata,
    /// The last entry's metadata, and the counts of the entries it lists.
    pub manifest: ManifestSummary,
    /// The entries found, equal to the ones listed.
    pub found: FoundEntries,
}

/// Reads the archive at `path` to its end, admitting each entry by the rules, handing it to
/// `sink`, recording it in `found`, and checking everything against the manifest. Progress
/// follows the compressed file.
pub(crate) fn scan<C: Codec>(
    path: &Path,
    sealing: &Sealing,
    ctx: &StepContext,
    phase: Phase,
    sink: &mut dyn EntrySink,
    found: FoundEntries,
) -> Result<Scanned, ArchiveError> {
    let file = File::open(path).map_err(|e| ArchiveError::io("opening", path, e))?;
    let size = file.metadata().map_err(|e| ArchiveError::io("reading", path, e))?.len();
    let progress = Progress::start(ctx, phase, Some(size));
    let counted = CountingReader::new(file, path, progress);
    let encrypted = path.file_name().and_then(|n| n.to_str()).is_some_and(is_encrypted_name);
    let plain = sealing.open_reader(encrypted, BufReader::with_capacity(IO_BUFFER, counted), path)?;
    scan_stream::<C>(plain, path, ctx, sink, found)
}

/// Like [`scan`], over the archive's (decrypted) bytes from any source; `path` names the archive
/// in errors. Reads `input` to its end.
pub(crate) fn scan_stream<C: Codec>(
    input: impl Read,
    path: &Path,
    ctx: &StepContext,
    sink: &mut dyn EntrySink,
    mut found: FoundEntries,
) -> Result<Scanned, ArchiveError> {
    let decoder = C::decoder(BufReader::with_capacity(IO_BUFFER, input)).map_err(|e| stream::read_error(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let unsafe_entry = |entry: &str, reason: String| ArchiveError::UnsafeEntry {
        archive: path.to_owned(),
        entry: entry.to_owned(),
        reason,
    };
    let corrupt = |reason: String| ArchiveError::Corrupt { archive: path.to_owned(), reason };

    let mut rules = EntryRules::default();
    let mut manifest: Option<CheckedManifest> = None;
    let metadata = {
        let mut entries = archive.entries().map_err(|e| stream::read_error(path, e))?;
        let first = match entries.next() {
            Some(entry) => entry.map_err(|e| stream::read_error(path, e))?,
            None => {
                return Err(ArchiveError::MissingManifest { archive: path.to_owned() });
            }
        };
        let metadata = parse_metadata(path, &read_metadata_entry(path, first)?, true)?;

        for entry in entries {
            if ctx.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            let mut entry = entry.map_err(|e| stream::read_error(path, e))?;
            let raw_path = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw_path).into_owned();
            if manifest.is_some() {
                return Err(corrupt(format!("entry `{shown}` follows the manifest, which must be last")));
            }
            let name = policy::normalize_path(&raw_path).map_err(|reason| unsafe_entry(&shown, reason))?;
            let entry_type = entry.header().entry_type();
            if name == MANIFEST_PATH && entry_type.is_file() {
                // Nothing may follow the manifest: the rules' memory can go before it is parsed.
                rules = EntryRules::default();
                let declared = entry.size();
                manifest = Some(manifest_check::read_and_check(path, (&mut entry).take(declared), &mut found)?);
                continue;
            }
            let kind = policy::entry_kind(entry_type).map_err(|reason| unsafe_entry(&shown, reason))?;
            let link = match kind {
                EntryKind::Symlink => {
                    let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                    let target = String::from_utf8(target)
                        .map_err(|_| unsafe_entry(&shown, "the symlink target is not valid UTF-8".to_owned()))?;
                    Some(target)
                }
                _ => None,
            };
            rules.admit(&name, kind, link.as_deref()).map_err(|reason| unsafe_entry(&shown, reason))?;
            let header = entry.header();
            let mode = header.mode().map_err(|e| corrupt(format!("entry `{shown}`: {e}")))?;
            let mtime = header.mtime().map_err(|e| corrupt(format!("entry `{shown}`: {e}")))?;
            let mtime = i64::try_from(mtime).unwrap_or(i64::MAX);
            let recorded = match kind {
                EntryKind::Dir => {
                    sink.folder(&name, mode, mtime)?;
                    ManifestEntry { path: name, kind, size: 0, sha256: None, link: None }
                }
                EntryKind::Symlink => {
                    let target = link.unwrap_or_default();
                    sink.symlink(&name, &target, mtime)?;
                    ManifestEntry { path: name, kind, size: 0, sha256: None, link: Some(target) }
                }
                EntryKind::File => {
                    let size = entry.size();
                    let sha256 = sink.file(&name, mode, mtime, size, &mut entry)?;
                    ManifestEntry { path: name, kind, size, sha256: Some(sha256), link: None }
                }
            };
            found.push(&recorded)?;
        }
        metadata
    };

    // The compressor's checksum sits after the tar end marker: read through it.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| stream::read_error(path, e))?;

    drop(rules);
    let checked = manifest.ok_or_else(|| ArchiveError::MissingManifest { archive: path.to_owned() })?;
    let manifest = require_match(path, &metadata, checked, &found)?;
    Ok(Scanned { metadata, manifest, found })
}

/// The metadata must equal the manifest's copy, and the entries found the manifest's, in order;
/// then the found entries *are* the manifest's, and their summary is returned.
pub(crate) fn require_match(
    archive: &Path,
    metadata: &BackupMetadata,
    checked: CheckedManifest,
    found: &FoundEntries,
) -> Result<ManifestSummary, ArchiveError> {
    check_metadata(archive, metadata, &checked.metadata)?;
    match checked.difference {
        Some(difference) => Err(ArchiveError::Mismatch {
            archive: archive.to_owned(),
            entry: difference.entry,
            reason: difference.reason,
        }),
        None => Ok(found.summary(checked.metadata)),
    }
}

/// The manifest's format must be one this version reads, and its copy of the metadata the first
/// entry's.
fn check_metadata(archive: &Path, metadata: &BackupMetadata, listed: &BackupMetadata) -> Result<(), ArchiveError> {
    if listed.format_version > FORMAT_VERSION {
        return Err(ArchiveError::UnsupportedFormat {
            archive: archive.to_owned(),
            found: listed.format_version,
            supported: FORMAT_VERSION,
        });
    }
    if listed != metadata {
        return Err(ArchiveError::Mismatch {
            archive: archive.to_owned(),
            entry: METADATA_PATH.to_owned(),
            reason: "differs from the copy in the manifest".to_owned(),
        });
    }
    Ok(())
}

/// Hashes file content without writing it anywhere.
pub(crate) struct VerifySink {
    archive: std::path::PathBuf,
    buf: Vec<u8>,
}

impl VerifySink {
    /// For the archive at `archive`.
    pub(crate) fn new(archive: &Path) -> Self {
        Self { archive: archive.to_owned(), buf: vec![0; IO_BUFFER] }
    }
}

impl EntrySink for VerifySink {
    fn folder(&mut self, _path: &str, _mode: u32, _mtime: i64) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn file(
        &mut self,
        path: &str,
        _mode: u32,
        _mtime: i64,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<String, ArchiveError> {
        copy_and_hash(data, size, &mut io::sink(), &mut self.buf, None).map_err(|e| match e {
            CopyError::Read(e) | CopyError::Write(e) => stream::read_error(&self.archive, e),
            CopyError::Short { got } => ArchiveError::Corrupt {
                archive: self.archive.clone(),
                reason: format!("entry `{path}` declares {size} bytes but only {got} follow (truncated)"),
            },
        })
    }

    fn symlink(&mut self, _path: &str, _target: &str, _mtime: i64) -> Result<(), ArchiveError> {
        Ok(())
    }
}
