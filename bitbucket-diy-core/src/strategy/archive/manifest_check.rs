//! Checks an archive's manifest against the entries found in it while the manifest is parsed.
//!
//! A manifest lists every entry of the backup, about 180 bytes of JSON each; a home of many
//! files would cost hundreds of bytes of memory per file if either list were held. Instead the
//! entries found are spooled to an unnamed temporary file as they stream by, and when the
//! manifest (the archive's last entry) arrives, each listed entry is compared with the one found
//! at its position as it is parsed, then dropped. When they all agree, the spooled entries *are*
//! the manifest's. Memory stays flat whatever the number of files.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::archive_format::{BackupMetadata, EntryDifference, ManifestEntry, ManifestSummary, Tally};
use crate::strategy::{ArchiveError, StepContext};

use super::stream::{self, IO_BUFFER};

/// The entries found in an archive, in order, spooled to disk as JSON lines.
#[derive(Debug)]
pub(crate) struct FoundEntries {
    spool: BufWriter<File>,
    /// Where the spool lives (for errors: the file itself has no name).
    folder: PathBuf,
    tally: Tally,
}

impl FoundEntries {
    /// An empty list spooled to an unnamed file in `folder`, gone when dropped.
    pub(crate) fn new_in(folder: &Path) -> Result<Self, ArchiveError> {
        let file = tempfile::tempfile_in(folder).map_err(|e| spool_error(folder, e))?;
        Ok(Self {
            spool: BufWriter::with_capacity(IO_BUFFER, file),
            folder: folder.to_owned(),
            tally: Tally::default(),
        })
    }

    /// An empty list for a check that writes nothing (`verify`): spooled in the working folder,
    /// on the backups' own disk, or in the system's temporary folder (often RAM-backed) when this
    /// host has no writable working folder.
    pub(crate) fn for_verify(ctx: &StepContext) -> Result<Self, ArchiveError> {
        Self::new_in(ctx.working().root()).or_else(|_| Self::new_in(&std::env::temp_dir()))
    }

    /// Records the next entry found.
    pub(crate) fn push(&mut self, entry: &ManifestEntry) -> Result<(), ArchiveError> {
        serde_json::to_writer(&mut self.spool, entry)
            .map_err(io::Error::from)
            .and_then(|()| self.spool.write_all(b"\n"))
            .map_err(|e| spool_error(&self.folder, e))?;
        self.tally.add(entry);
        Ok(())
    }

    /// The summary of the entries pushed, under `metadata`.
    pub(crate) fn summary(&self, metadata: BackupMetadata) -> ManifestSummary {
        self.tally.summary(metadata)
    }

    /// Every entry pushed, from the first. Nothing may be pushed after a replay.
    pub(crate) fn replay(
        &mut self,
    ) -> Result<impl Iterator<Item = Result<ManifestEntry, ArchiveError>> + '_, ArchiveError> {
        let folder = &self.folder;
        self.spool.flush().map_err(|e| spool_error(folder, e))?;
        let mut file = self.spool.get_ref();
        file.rewind().map_err(|e| spool_error(folder, e))?;
        let lines = serde_json::Deserializer::from_reader(BufReader::with_capacity(IO_BUFFER, file)).into_iter();
        Ok(lines.map(move |entry| entry.map_err(|e| spool_error(folder, e.into()))))
    }

    fn contains_path(&mut self, path: &str) -> Result<bool, ArchiveError> {
        for entry in self.replay()? {
            if entry?.path == path {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn spool_error(folder: &Path, error: io::Error) -> ArchiveError {
    ArchiveError::io("spooling the list of entries found in", folder, error)
}

/// What the manifest said.
#[derive(Debug)]
pub(crate) struct CheckedManifest {
    /// The manifest's copy of the metadata.
    pub metadata: BackupMetadata,
    /// The first place where the entries found depart from the listed ones.
    pub difference: Option<EntryDifference>,
}

/// Parses the manifest JSON from `input`, comparing its entries with `found`.
pub(crate) fn read_and_check(
    archive: &Path,
    input: impl Read,
    found: &mut FoundEntries,
) -> Result<CheckedManifest, ArchiveError> {
    let (metadata, outcome, _) = {
        let mut replay = found.replay()?;
        parse(archive, input, &mut replay)?
    };
    let difference = match outcome {
        Outcome::Compared(difference) => difference,
        Outcome::Misplaced { actual, listed_later: false, .. } => {
            Some(EntryDifference { entry: actual, reason: "present in the backup but not in the manifest".to_owned() })
        }
        Outcome::Misplaced { expected, listed_later: true, .. } => Some(if found.contains_path(&expected)? {
            EntryDifference { entry: expected, reason: "out of the order the manifest lists".to_owned() }
        } else {
            missing(&expected)
        }),
    };
    Ok(CheckedManifest { metadata, difference })
}

/// Parses the manifest JSON from `input` for its metadata and counts only, holding none of its
/// entries.
pub(crate) fn read_summary(archive: &Path, input: impl Read) -> Result<ManifestSummary, ArchiveError> {
    let (metadata, _, listed) = parse(archive, input, &mut std::iter::empty())?;
    Ok(listed.summary(metadata))
}

/// Parses the manifest JSON from `input`, comparing its entries with `found` and counting them.
fn parse(
    archive: &Path,
    input: impl Read,
    found: &mut Replay<'_>,
) -> Result<(BackupMetadata, Outcome, Tally), ArchiveError> {
    let reader = std::io::BufReader::with_capacity(IO_BUFFER, input);
    let mut json = serde_json::Deserializer::from_reader(reader);
    let mut spool_failure = None;
    let seed = ManifestSeed { found, spool_failure: &mut spool_failure };
    let parsed = seed.deserialize(&mut json).and_then(|checked| json.end().map(|()| checked));
    if let Some(failure) = spool_failure {
        return Err(failure);
    }
    parsed.map_err(|e| {
        if e.is_io() {
            stream::read_error(archive, e.into())
        } else if e.is_eof() {
            ArchiveError::Corrupt {
                archive: archive.to_owned(),
                reason: "the archive ends inside the manifest (truncated)".to_owned(),
            }
        } else {
            ArchiveError::Corrupt { archive: archive.to_owned(), reason: format!("the manifest is invalid: {e}") }
        }
    })
}

/// The entries found, replayed from the spool.
type Replay<'r> = dyn Iterator<Item = Result<ManifestEntry, ArchiveError>> + 'r;

/// How the listed entries compared with the ones found.
enum Outcome {
    /// Entry by entry: the first difference, if any.
    Compared(Option<EntryDifference>),
    /// At the listed `expected`'s position, the backup holds `actual`, another path; whether the
    /// manifest lists `actual` further on decides the words (out of order, or not listed).
    Misplaced { expected: String, actual: String, listed_later: bool },
}

/// `{"metadata": …, "entries": […]}`, in any order; other keys are ignored.
struct ManifestSeed<'s, 'r> {
    found: &'s mut Replay<'r>,
    /// A spool that could not be read (reported instead of the parse error it causes).
    spool_failure: &'s mut Option<ArchiveError>,
}

impl<'de> DeserializeSeed<'de> for ManifestSeed<'_, '_> {
    type Value = (BackupMetadata, Outcome, Tally);

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ManifestSeed<'_, '_> {
    type Value = (BackupMetadata, Outcome, Tally);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manifest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = None;
        let mut outcome = None;
        let Self { found, spool_failure } = self;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" if metadata.is_none() => metadata = Some(map.next_value::<BackupMetadata>()?),
                "entries" if outcome.is_none() => {
                    outcome = Some(
                        map.next_value_seed(EntriesSeed { found: &mut *found, spool_failure: &mut *spool_failure })?,
                    );
                }
                "metadata" | "entries" => return Err(de::Error::custom(format_args!("duplicate field `{key}`"))),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let metadata = metadata.ok_or_else(|| de::Error::missing_field("metadata"))?;
        let (outcome, listed) = outcome.ok_or_else(|| de::Error::missing_field("entries"))?;
        Ok((metadata, outcome, listed))
    }
}

/// The entries array, each compared with the entry found at its position.
struct EntriesSeed<'s, 'r> {
    found: &'s mut Replay<'r>,
    spool_failure: &'s mut Option<ArchiveError>,
}

impl EntriesSeed<'_, '_> {
    /// The next entry found; a spool that cannot be read ends the parse.
    fn next_found<E: de::Error>(&mut self) -> Result<Option<ManifestEntry>, E> {
        match self.found.next().transpose() {
            Ok(entry) => Ok(entry),
            Err(e) => {
                *self.spool_failure = Some(e);
                Err(E::custom("the list of entries found could not be read back"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, '_> {
    type Value = (Outcome, Tally);

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, '_> {
    type Value = (Outcome, Tally);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of manifest entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut difference = None;
        let mut misplaced: Option<(String, String, bool)> = None;
        let mut tally = Tally::default();
        while let Some(listed) = seq.next_element::<ManifestEntry>()? {
            tally.add(&listed);
            if let Some((_, actual, listed_later)) = misplaced.as_mut() {
                *listed_later |= listed.path == *actual;
            } else if difference.is_none() {
                match self.next_found()? {
                    Some(actual) if actual.path == listed.path => {
                        difference = listed
                            .difference(&actual)
                            .map(|reason| EntryDifference { entry: listed.path.clone(), reason });
                    }
                    Some(actual) => misplaced = Some((listed.path, actual.path, false)),
                    None => difference = Some(missing(&listed.path)),
                }
            }
        }
        if let Some((expected, actual, listed_later)) = misplaced {
            return Ok((Outcome::Misplaced { expected, actual, listed_later }, tally));
        }
        if difference.is_none()
            && let Some(extra) = self.next_found()?
        {
            difference = Some(EntryDifference {
                entry: extra.path,
                reason: "present in the backup but not in the manifest".to_owned(),
            });
        }
        Ok((Outcome::Compared(difference), tally))
    }
}

fn missing(path: &str) -> EntryDifference {
    EntryDifference { entry: path.to_owned(), reason: "listed in the manifest but missing from the backup".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive_format::{EntryKind, Manifest};

    fn file(path: &str, content: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.to_owned(),
            kind: EntryKind::File,
            size: content.len() as u64,
            sha256: Some(format!("{content:0>64}")),
            link: None,
        }
    }

    fn manifest(entries: Vec<ManifestEntry>) -> Manifest {
        let metadata = crate::archive_format::test_metadata();
        Manifest { metadata, entries }
    }

    fn found(entries: &[ManifestEntry]) -> FoundEntries {
        let mut found = FoundEntries::new_in(&std::env::temp_dir()).unwrap();
        for e in entries {
            found.push(e).unwrap();
        }
        found
    }

    /// The streaming check agrees with `Manifest::first_difference` on every kind of departure.
    #[test]
    fn agrees_with_first_difference() {
        let a = file("a", "1");
        let b = file("b", "2");
        let c = file("c", "3");
        let cases: Vec<(Vec<ManifestEntry>, Vec<ManifestEntry>)> = vec![
            (vec![a.clone(), b.clone()], vec![a.clone(), b.clone()]),
            (vec![a.clone(), b.clone()], vec![a.clone()]),
            (vec![a.clone()], vec![a.clone(), b.clone()]),
            (vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]),
            (vec![a.clone(), b.clone()], vec![a.clone(), c.clone()]),
            (vec![a.clone(), b.clone(), c.clone()], vec![a.clone(), c.clone()]),
            (vec![a.clone(), b.clone()], vec![a.clone(), file("b", "22")]),
            (vec![a.clone(), b.clone()], vec![a.clone(), file("b", "9")]),
            (vec![], vec![a.clone()]),
            (vec![a.clone()], vec![]),
        ];
        for (listed, present) in cases {
            let manifest = manifest(listed.clone());
            let json = serde_json::to_vec(&manifest).unwrap();
            let checked = read_and_check(Path::new("x"), &json[..], &mut found(&present)).unwrap();
            assert_eq!(checked.metadata, manifest.metadata);
            assert_eq!(
                checked.difference,
                manifest.first_difference(&present),
                "listed {listed:?}, present {present:?}"
            );
        }
    }

    #[test]
    fn the_summary_counts_what_the_manifest_lists() {
        let manifest = manifest(vec![file("a", "1"), file("b", "22")]);
        let json = serde_json::to_vec(&manifest).unwrap();
        let summary = read_summary(Path::new("x"), &json[..]).unwrap();
        assert_eq!(summary, ManifestSummary::of(&manifest));
        assert_eq!((summary.entries, summary.files, summary.bytes), (2, 2, 3));
    }

    #[test]
    fn entries_before_metadata_and_unknown_keys_are_read() {
        let a = file("a", "1");
        let manifest = manifest(vec![a.clone()]);
        let json = format!(
            r#"{{"entries": {}, "future": [1, 2], "metadata": {}}}"#,
            serde_json::to_string(&manifest.entries).unwrap(),
            serde_json::to_string(&manifest.metadata).unwrap()
        );
        let checked = read_and_check(Path::new("x"), json.as_bytes(), &mut found(&[a])).unwrap();
        assert_eq!(checked.difference, None);
    }

    #[test]
    fn a_truncated_or_broken_manifest_is_corrupt() {
        let manifest = manifest(vec![file("a", "1")]);
        let json = serde_json::to_vec(&manifest).unwrap();
        for bytes in [&json[..json.len() / 2], b"{\"metadata\": 1}", b"[]", b"{} trailing"] {
            let error = read_and_check(Path::new("x"), bytes, &mut found(&[])).unwrap_err();
            assert!(matches!(error, ArchiveError::Corrupt { .. }), "{error}");
        }
    }
}
