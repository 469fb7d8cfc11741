//! The on-disk format of a backup: the layout of the archived tree and its manifest, versioned.
//!
//! Every archive holds, besides the working folder's `bitbucket-db/`, `bitbucket-home/` and
//! `bitbucket-data-stores/`:
//!
//! - [`METADATA_PATH`] as its **first** entry: [`BackupMetadata`], so `list` reads a few KB of an
//!   archive, not the whole of it;
//! - [`MANIFEST_PATH`] as its **last** entry: the [`Manifest`] with every entry's size and SHA-256,
//!   written after the content has streamed through the hasher; an archive cut short has none,
//!   so it can never pass verification.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backup_id::BackupId;
use crate::strategy::StepReport;

/// Path of the metadata entry inside an archive.
pub const METADATA_PATH: &str = ".bitbucket-diy/backup.json";
/// Path of the manifest entry inside an archive.
pub const MANIFEST_PATH: &str = ".bitbucket-diy/manifest.json";
/// The manifest format this version writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// What was backed up, how and when. Stored first in every archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupMetadata {
    /// [`FORMAT_VERSION`] at the time of writing.
    pub format_version: u32,
    /// The backup's id.
    pub id: BackupId,
    /// When the consistent point was reached (drained, or the snapshot taken).
    pub created_at: jiff::Timestamp,
    /// bitbucket-diy's version.
    pub tool_version: String,
    /// Bitbucket's version, when it could be read.
    #[serde(default)]
    pub bitbucket_version: Option<String>,
    /// The instance URL (never credentials).
    #[serde(default)]
    pub instance_url: Option<String>,
    /// Made without a lock, from atomic snapshots.
    #[serde(default)]
    pub zero_downtime: bool,
    /// From lock to unlock.
    #[serde(default, with = "option_secs")]
    pub lock_window: Option<Duration>,
    /// The database strategy and what it recorded.
    pub database: StrategyRecord,
    /// The filesystem strategy and what it recorded.
    pub filesystem: StrategyRecord,
    /// Absolute paths of the data stores, as configured when the backup was made.
    #[serde(default)]
    pub data_stores: Vec<PathBuf>,
}

/// Which strategy made part of a backup, and its notes (versions, formats, flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyRecord {
    /// The strategy's name (`postgresql`, `native`, …).
    pub name: String,
    /// What its backup step reported.
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

impl StrategyRecord {
    /// A record of `name` from its step report.
    pub fn from_report(name: &str, report: &StepReport) -> Self {
        Self { name: name.to_owned(), notes: report.notes.clone() }
    }
}

/// The kind of an archive entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (stored, never followed).
    Symlink,
}

/// One entry of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative path inside the archive, `/`-separated.
    pub path: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Size in bytes (files only).
    #[serde(default)]
    pub size: u64,
    /// Lower-case hex SHA-256 of the content (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The last entry of every archive: the metadata again and every entry with its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Same as the first entry's.
    pub metadata: BackupMetadata,
    /// Every entry but the two of bitbucket-diy itself, in archive order.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// Total bytes of regular files (saturating: a manifest read from disk may claim anything).
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().fold(0u64, |total, e| total.saturating_add(e.size))
    }

    /// Number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries.iter().filter(|e| e.kind == EntryKind::File).count()
    }

    /// The first way in which `found` (the entries actually read, in order) differs from this
    /// manifest, or `None` when they agree entry for entry.
    ///
    /// ```
    /// # use bitbucket_diy_core::archive_format::{EntryKind, ManifestEntry};
    /// # fn check(manifest: &bitbucket_diy_core::archive_format::Manifest) {
    /// let found = vec![ManifestEntry {
    ///     path: "bitbucket-home".into(), kind: EntryKind::Dir, size: 0, sha256: None, link: None,
    /// }];
    /// if let Some(difference) = manifest.first_difference(&found) {
    ///     eprintln!("{}: {}", difference.entry, difference.reason);
    /// }
    /// # }
    /// ```
    pub fn first_difference(&self, found: &[ManifestEntry]) -> Option<EntryDifference> {
        for (expected, actual) in self.entries.iter().zip(found) {
            if expected.path != actual.path {
                return Some(self.misplaced(found, expected, actual));
            }
            if let Some(reason) = expected.difference(actual) {
                return Some(EntryDifference { entry: expected.path.clone(), reason });
            }
        }
        if let Some(missing) = self.entries.get(found.len()) {
            return Some(EntryDifference {
                entry: missing.path.clone(),
                reason: "listed in the manifest but missing from the backup".to_owned(),
            });
        }
        found.get(self.entries.len()).map(|extra| EntryDifference {
            entry: extra.path.clone(),
            reason: "present in the backup but not in the manifest".to_owned(),
        })
    }

    fn misplaced(&self, found: &[ManifestEntry], expected: &ManifestEntry, actual: &ManifestEntry) -> EntryDifference {
        let listed = self.entries.iter().any(|e| e.path == actual.path);
        if !listed {
            return EntryDifference {
                entry: actual.path.clone(),
                reason: "present in the backup but not in the manifest".to_owned(),
            };
        }
        let present = found.iter().any(|e| e.path == expected.path);
        let reason = if present {
            "out of the order the manifest lists".to_owned()
        } else {
            "listed in the manifest but missing from the backup".to_owned()
        };
        EntryDifference { entry: expected.path.clone(), reason }
    }
}

/// What a backup holds once every entry matched its manifest: the metadata and the counts.
///
/// The entries themselves stay on disk, in the archive's manifest and in an extracted tree's
/// [`MANIFEST_PATH`]: held in memory they would cost a few hundred bytes per file of the home.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestSummary {
    /// The backup's metadata (the manifest's copy, equal to the archive's first entry).
    pub metadata: BackupMetadata,
    /// Entries listed, bitbucket-diy's own two excepted.
    pub entries: u64,
    /// Regular files among them.
    pub files: u64,
    /// Bytes of file content (saturating).
    pub bytes: u64,
}

impl ManifestSummary {
    /// The summary of `manifest`.
    pub fn of(manifest: &Manifest) -> Self {
        Self {
            metadata: manifest.metadata.clone(),
            entries: manifest.entries.len() as u64,
            files: manifest.file_count() as u64,
            bytes: manifest.total_bytes(),
        }
    }
}

/// Counts of entries as they go by, for a [`ManifestSummary`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    entries: u64,
    files: u64,
    bytes: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, entry: &ManifestEntry) {
        self.entries += 1;
        if entry.kind == EntryKind::File {
            self.files += 1;
        }
        self.bytes = self.bytes.saturating_add(entry.size);
    }

    pub(crate) fn summary(self, metadata: BackupMetadata) -> ManifestSummary {
        ManifestSummary { metadata, entries: self.entries, files: self.files, bytes: self.bytes }
    }
}

/// Writes a [`Manifest`] as JSON one entry at a time, so that a manifest of any length is never
/// held in memory: the metadata, then one entry per line.
///
/// ```
/// # use bitbucket_diy_core::archive_format::{EntryKind, ManifestEntry, ManifestWriter, Manifest};
/// # fn write(metadata: &bitbucket_diy_core::archive_format::BackupMetadata) -> std::io::Result<()> {
/// let mut writer = ManifestWriter::new(Vec::new(), metadata)?;
/// writer.push(&ManifestEntry {
///     path: "bitbucket-home".into(), kind: EntryKind::Dir, size: 0, sha256: None, link: None,
/// })?;
/// let (json, summary) = writer.finish()?;
/// let manifest: Manifest = serde_json::from_slice(&json).unwrap();
/// assert_eq!(manifest.entries.len() as u64, summary.entries);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ManifestWriter<W: std::io::Write> {
    out: W,
    metadata: BackupMetadata,
    tally: Tally,
}

impl<W: std::io::Write> ManifestWriter<W> {
    /// Starts the manifest of the backup described by `metadata`.
    pub fn new(mut out: W, metadata: &BackupMetadata) -> std::io::Result<Self> {
        out.write_all(b"{\n\"metadata\": ")?;
        serde_json::to_writer_pretty(&mut out, metadata)?;
        out.write_all(b",\n\"entries\": [")?;
        Ok(Self { out, metadata: metadata.clone(), tally: Tally::default() })
    }

    /// Appends the next entry, in archive order.
    pub fn push(&mut self, entry: &ManifestEntry) -> std::io::Result<()> {
        self.out.write_all(if self.tally.entries == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut self.out, entry)?;
        self.tally.add(entry);
        Ok(())
    }

    /// Closes the JSON and returns the output with what was written.
    pub fn finish(mut self) -> std::io::Result<(W, ManifestSummary)> {
        self.out.write_all(b"\n]}\n")?;
        Ok((self.out, self.tally.summary(self.metadata)))
    }
}

/// Where a backup's content departs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDifference {
    /// The entry's path.
    pub entry: String,
    /// Expected vs found, in words.
    pub reason: String,
}

impl ManifestEntry {
    /// How `found` (same path) differs from this entry, in words.
    pub(crate) fn difference(&self, found: &ManifestEntry) -> Option<String> {
        if self.kind != found.kind {
            return Some(format!(
                "the manifest lists a {}, the backup holds a {}",
                self.kind.noun(),
                found.kind.noun()
            ));
        }
        if self.size != found.size {
            return Some(format!("the manifest lists {} bytes, the backup holds {}", self.size, found.size));
        }
        if self.sha256 != found.sha256 {
            return Some(format!(
                "SHA-256 differs: manifest {}, content {}",
                self.sha256.as_deref().unwrap_or("none"),
                found.sha256.as_deref().unwrap_or("none")
            ));
        }
        if self.link != found.link {
            return Some(format!(
                "symlink target differs: manifest `{}`, backup `{}`",
                self.link.as_deref().unwrap_or_default(),
                found.link.as_deref().unwrap_or_default()
            ));
        }
        None
    }
}

impl EntryKind {
    fn noun(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "folder",
            EntryKind::Symlink => "symlink",
        }
    }
}

mod option_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Metadata of a made-up backup, for unit tests.
#[cfg(test)]
pub(crate) fn test_metadata() -> BackupMetadata {
    BackupMetadata {
        format_version: FORMAT_VERSION,
        id: "b-1".parse().unwrap(),
        created_at: jiff::Timestamp::UNIX_EPOCH,
        tool_version: "0".into(),
        bitbucket_version: None,
        instance_url: None,
        zero_downtime: false,
        lock_window: None,
        database: StrategyRecord::default(),
        filesystem: StrategyRecord::default(),
        data_stores: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: EntryKind::File,
            size: content.len() as u64,
            sha256: Some(format!("sha-of-{content}")),
            link: None,
        }
    }

    #[test]
    fn the_streamed_manifest_reads_back_as_the_same_manifest() {
        let mut link = file("c", "");
        link.kind = EntryKind::Symlink;
        link.sha256 = None;
        link.link = Some("../a".into());
        for entries in [vec![], vec![file("a", "x")], vec![file("a", "x"), file("b", "yy"), link]] {
            let manifest = Manifest { metadata: test_metadata(), entries };
            let mut writer = ManifestWriter::new(Vec::new(), &manifest.metadata).unwrap();
            for entry in &manifest.entries {
                writer.push(entry).unwrap();
            }
            let (json, summary) = writer.finish().unwrap();
            assert_eq!(serde_json::from_slice::<Manifest>(&json).unwrap(), manifest);
            assert_eq!(summary, ManifestSummary::of(&manifest));
        }
    }

    #[test]
    fn differences_name_the_entry_and_what_differs() {
        let manifest = Manifest { metadata: test_metadata(), entries: vec![file("a", "x"), file("b", "y")] };
        assert_eq!(manifest.first_difference(&manifest.entries), None);

        let cases = [
            (vec![file("a", "x")], "b", "missing"),
            (vec![file("a", "x"), file("b", "y"), file("c", "z")], "c", "not in the manifest"),
            (vec![file("a", "x"), file("c", "z")], "c", "not in the manifest"),
            (vec![file("a", "x"), file("b", "Y")], "b", "SHA-256"),
            (vec![file("a", "x"), file("b", "yy")], "b", "bytes"),
            (vec![file("b", "y"), file("a", "x")], "a", "order"),
        ];
        for (found, entry, reason) in cases {
            let difference = manifest.first_difference(&found).expect("a difference");
            assert_eq!(difference.entry, entry, "{difference:?}");
            assert!(difference.reason.contains(reason), "{difference:?}");
        }
        let mut link = file("b", "y");
        link.kind = EntryKind::Symlink;
        let difference = manifest.first_difference(&[file("a", "x"), link]).expect("a difference");
        assert!(difference.reason.contains("symlink"), "{difference:?}");
    }
}
