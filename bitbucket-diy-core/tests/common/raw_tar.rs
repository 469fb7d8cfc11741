//! Hand-built tar streams for hostile-archive tests: the tar crate's low-level `Header` API with
//! raw name bytes, so nothing sanitises what an attacker would write.

// Test helpers: panicking on a broken fixture is the point.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;

use bitbucket_diy_core::archive_format::{
    BackupMetadata, EntryKind, MANIFEST_PATH, METADATA_PATH, Manifest, ManifestEntry,
};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// A tar stream under construction, one raw block at a time.
pub struct RawTar {
    bytes: Vec<u8>,
    pub manifest: Vec<ManifestEntry>,
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn header(name: &[u8], kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_600_000_000);
    let slot = &mut header.as_old_mut().name;
    assert!(name.len() <= slot.len(), "name too long for a raw header");
    slot[..name.len()].copy_from_slice(name);
    header
}

impl RawTar {
    /// Starts with `metadata` as the first entry.
    pub fn with_metadata(metadata: &BackupMetadata) -> Self {
        let mut tar = Self { bytes: Vec::new(), manifest: Vec::new() };
        let json = serde_json::to_vec(metadata).unwrap();
        tar.raw(METADATA_PATH.as_bytes(), EntryType::Regular, &json, None, None);
        tar
    }

    /// An empty stream (no metadata).
    pub fn empty() -> Self {
        Self { bytes: Vec::new(), manifest: Vec::new() }
    }

    /// Any entry: raw name, type, data, a declared size (default: the data's) and a link name.
    /// The data is padded to the block size only when it matches the declared size.
    pub fn raw(
        &mut self,
        name: &[u8],
        kind: EntryType,
        data: &[u8],
        declared: Option<u64>,
        link: Option<&[u8]>,
    ) -> &mut Self {
        let size = declared.unwrap_or(data.len() as u64);
        let mut header = header(name, kind, size);
        if let Some(link) = link {
            let slot = &mut header.as_old_mut().linkname;
            slot[..link.len()].copy_from_slice(link);
        }
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        if size == data.len() as u64 {
            let pad = (512 - data.len() % 512) % 512;
            self.bytes.extend(std::iter::repeat_n(0u8, pad));
        }
        self
    }

    /// A folder, recorded in the manifest.
    pub fn folder(&mut self, path: &str) -> &mut Self {
        self.raw(path.as_bytes(), EntryType::Directory, b"", None, None);
        self.manifest.push(ManifestEntry {
            path: path.into(),
            kind: EntryKind::Dir,
            size: 0,
            sha256: None,
            link: None,
        });
        self
    }

    /// A file, recorded in the manifest with its true size and hash.
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(path.as_bytes(), EntryType::Regular, data, None, None);
        self.manifest.push(ManifestEntry {
            path: path.into(),
            kind: EntryKind::File,
            size: data.len() as u64,
            sha256: Some(sha256(data)),
            link: None,
        });
        self
    }

    /// A symlink, recorded in the manifest.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path.as_bytes(), EntryType::Symlink, b"", None, Some(target.as_bytes()));
        self.manifest.push(ManifestEntry {
            path: path.into(),
            kind: EntryKind::Symlink,
            size: 0,
            sha256: None,
            link: Some(target.into()),
        });
        self
    }

    /// The manifest entry listing what was recorded so far.
    pub fn manifest(&mut self, metadata: &BackupMetadata) -> &mut Self {
        let manifest = Manifest { metadata: metadata.clone(), entries: self.manifest.clone() };
        let json = serde_json::to_vec(&manifest).unwrap();
        self.raw(MANIFEST_PATH.as_bytes(), EntryType::Regular, &json, None, None)
    }

    /// The end-of-archive marker.
    pub fn end(&mut self) -> &mut Self {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self
    }

    /// The uncompressed stream.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the stream zstd-compressed to `path`.
    pub fn write_zstd(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, zstd::encode_all(&self.bytes[..], 3).unwrap()).unwrap();
    }

    /// Writes the stream gzip-compressed to `path`.
    pub fn write_gzip(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&self.bytes).unwrap();
        std::fs::write(path, encoder.finish().unwrap()).unwrap();
    }
}
