//! Checks an archive's manifest against the entries found in it while the manifest is parsed.
//!
//! A manifest lists every entry of the backup, about 180 bytes of JSON and 250 bytes of memory
//! each: holding it parsed beside the entries found would double what a reader keeps for a home
//! of many files. Instead each listed entry is compared with the one found at its position as it
//! is parsed, then dropped; when they all agree, the entries found *are* the manifest's.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::archive_format::{BackupMetadata, EntryDifference, ManifestEntry};
use crate::strategy::ArchiveError;

use super::stream::{self, IO_BUFFER};

/// The entries found in an archive, in order.
///
/// One vector: a large one grows in place (`mremap`), and the capacity it reserves ahead is not
/// resident until used, so growing by doubling costs no memory that is not needed.
#[derive(Debug, Default)]
pub(crate) struct FoundEntries {
    entries: Vec<ManifestEntry>,
}

impl FoundEntries {
    pub(crate) fn push(&mut self, entry: ManifestEntry) {
        self.entries.push(entry);
    }

    fn get(&self, index: usize) -> Option<&ManifestEntry> {
        self.entries.get(index)
    }

    fn contains_path(&self, path: &str) -> bool {
        self.entries.iter().any(|e| e.path == path)
    }

    /// The entries.
    pub(crate) fn into_vec(self) -> Vec<ManifestEntry> {
        self.entries
    }
}

/// What the manifest said.
#[derive(Debug)]
pub(crate) struct CheckedManifest {
    /// The manifest's copy of the metadata.
    pub metadata: BackupMetadata,
    /// The first place where the entries found depart from the listed ones.
    pub difference: Option<EntryDifference>,
}

/// Parses the manifest JSON from `input` (`declared` bytes), comparing its entries with `found`.
pub(crate) fn read_and_check(
    archive: &Path,
    input: impl Read,
    found: &FoundEntries,
) -> Result<CheckedManifest, ArchiveError> {
    let reader = std::io::BufReader::with_capacity(IO_BUFFER, input);
    let mut json = serde_json::Deserializer::from_reader(reader);
    let parsed = ManifestSeed { found }.deserialize(&mut json).and_then(|checked| json.end().map(|()| checked));
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

/// `{"metadata": …, "entries": […]}`, in any order; other keys are ignored.
struct ManifestSeed<'f> {
    found: &'f FoundEntries,
}

impl<'de> DeserializeSeed<'de> for ManifestSeed<'_> {
    type Value = CheckedManifest;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ManifestSeed<'_> {
    type Value = CheckedManifest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manifest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut metadata = None;
        let mut difference = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" if metadata.is_none() => metadata = Some(map.next_value::<BackupMetadata>()?),
                "entries" if difference.is_none() => {
                    difference = Some(map.next_value_seed(EntriesSeed { found: self.found })?);
                }
                "metadata" | "entries" => return Err(de::Error::custom(format_args!("duplicate field `{key}`"))),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let metadata = metadata.ok_or_else(|| de::Error::missing_field("metadata"))?;
        let difference = difference.ok_or_else(|| de::Error::missing_field("entries"))?;
        Ok(CheckedManifest { metadata, difference })
    }
}

/// The entries array, each compared with the entry found at its position.
struct EntriesSeed<'f> {
    found: &'f FoundEntries,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Option<EntryDifference>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = Option<EntryDifference>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of manifest entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let found = self.found;
        let mut difference = None;
        // A found entry at a listed entry's position with another path: whether the manifest
        // lists it further on decides the words (out of order, or not in the manifest).
        let mut misplaced: Option<(ManifestEntry, String, bool)> = None;
        let mut index = 0;
        while let Some(listed) = seq.next_element::<ManifestEntry>()? {
            if difference.is_none() && misplaced.is_none() {
                match found.get(index) {
                    Some(actual) if actual.path == listed.path => {
                        difference = listed
                            .difference(actual)
                            .map(|reason| EntryDifference { entry: listed.path.clone(), reason });
                    }
                    Some(actual) => misplaced = Some((listed, actual.path.clone(), false)),
                    None => difference = Some(missing(&listed.path)),
                }
            } else if let Some((_, actual, listed_later)) = misplaced.as_mut() {
                *listed_later |= listed.path == *actual;
            }
            index += 1;
        }
        if let Some((expected, actual, listed)) = misplaced {
            difference = Some(if !listed {
                EntryDifference { entry: actual, reason: "present in the backup but not in the manifest".to_owned() }
            } else if found.contains_path(&expected.path) {
                EntryDifference { entry: expected.path, reason: "out of the order the manifest lists".to_owned() }
            } else {
                missing(&expected.path)
            });
        }
        if difference.is_none()
            && let Some(extra) = found.get(index)
        {
            difference = Some(EntryDifference {
                entry: extra.path.clone(),
                reason: "present in the backup but not in the manifest".to_owned(),
            });
        }
        Ok(difference)
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
        let mut found = FoundEntries::default();
        for e in entries {
            found.push(e.clone());
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
            let checked = read_and_check(Path::new("x"), &json[..], &found(&present)).unwrap();
            assert_eq!(checked.metadata, manifest.metadata);
            assert_eq!(
                checked.difference,
                manifest.first_difference(&present),
                "listed {listed:?}, present {present:?}"
            );
        }
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
        let checked = read_and_check(Path::new("x"), json.as_bytes(), &found(&[a])).unwrap();
        assert_eq!(checked.difference, None);
    }

    #[test]
    fn a_truncated_or_broken_manifest_is_corrupt() {
        let manifest = manifest(vec![file("a", "1")]);
        let json = serde_json::to_vec(&manifest).unwrap();
        for bytes in [&json[..json.len() / 2], b"{\"metadata\": 1}", b"[]", b"{} trailing"] {
            let error = read_and_check(Path::new("x"), bytes, &FoundEntries::default()).unwrap_err();
            assert!(matches!(error, ArchiveError::Corrupt { .. }), "{error}");
        }
    }
}
