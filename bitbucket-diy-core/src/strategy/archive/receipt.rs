//! Receipts: a small JSON file next to an archive that cannot show its own metadata cheaply (an
//! encrypted archive, a remote one), written only after the archive is complete and checked.
//!
//! `<archive name>.json` holds the archive's size and SHA-256 and the backup's metadata. Listing
//! reads receipts, never archives, so it needs no key and no download; an archive without its
//! receipt is an unfinished write and is not listed. The metadata is in clear (ids, times,
//! versions, strategy names and notes: no repository or database content, no secret), so the
//! backup host can list and prune encrypted backups without a private key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::archive_format::BackupMetadata;
use crate::strategy::ArchiveError;

/// The suffix of a receipt after its archive's name.
pub(crate) const SUFFIX: &str = ".json";

/// The receipt format this version writes and reads.
const RECEIPT_VERSION: u32 = 1;

/// What is known of a complete archive without reading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Receipt {
    /// [`RECEIPT_VERSION`].
    pub receipt_version: u32,
    /// The archive's file or object name.
    pub archive: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of its bytes (as stored: encrypted when encrypted).
    pub sha256: String,
    /// Whether it is age-encrypted.
    pub encrypted: bool,
    /// The backup's metadata (the archive's first entry).
    pub metadata: BackupMetadata,
}

impl Receipt {
    pub(crate) fn new(archive: &str, bytes: u64, sha256: String, encrypted: bool, metadata: BackupMetadata) -> Self {
        Self { receipt_version: RECEIPT_VERSION, archive: archive.to_owned(), bytes, sha256, encrypted, metadata }
    }

    pub(crate) fn to_json(&self, archive: &Path) -> Result<Vec<u8>, ArchiveError> {
        serde_json::to_vec_pretty(self).map_err(|e| ArchiveError::io("writing", archive, std::io::Error::other(e)))
    }

    /// Parses a receipt; `receipt` names it in errors.
    pub(crate) fn parse(bytes: &[u8], receipt: &Path) -> Result<Self, ArchiveError> {
        let parsed: Receipt = serde_json::from_slice(bytes).map_err(|e| ArchiveError::Corrupt {
            archive: receipt.to_owned(),
            reason: format!("the receipt is not valid: {e}"),
        })?;
        if parsed.receipt_version > RECEIPT_VERSION {
            return Err(ArchiveError::UnsupportedFormat {
                archive: receipt.to_owned(),
                found: parsed.receipt_version,
                supported: RECEIPT_VERSION,
            });
        }
        Ok(parsed)
    }

    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    /// The whole archive, read back, must be what was written.
    pub(crate) fn check(&self, archive: &Path, sha256: &str, bytes: u64) -> Result<(), ArchiveError> {
        let mismatch = |reason: String| ArchiveError::Mismatch {
            archive: archive.to_owned(),
            entry: self.archive.clone(),
            reason,
        };
        if bytes != self.bytes {
            return Err(mismatch(format!(
                "the stored archive holds {bytes} bytes, {} were recorded when it was written",
                self.bytes
            )));
        }
        if sha256 != self.sha256 {
            return Err(mismatch(format!(
                "checksum mismatch: the stored archive's SHA-256 is {sha256}, {} was recorded when it was written",
                self.sha256
            )));
        }
        Ok(())
    }
}
