//! Which backups passed verification, and when: a small JSON file kept beside the archives, so
//! `list` can say whether each backup was ever proven restorable.
//!
//! The file is `<archive folder>/.bitbucket-diy-verified.json` (for `archive.type = "none"`:
//! `<working folder>/.bitbucket-diy/verified.json`, outside the archived tree). Records are keyed
//! by backup id, written atomically (temporary file, fsync, rename) after every
//! [`BackupOrchestrator::verify`], and dropped when retention deletes their archive. Two
//! verifications finishing at the same instant may lose one record (the last writer wins): the
//! archives themselves are never at risk.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::orchestrator::{BackupOrchestrator, DeepVerifyReport};
use crate::strategy::ArchiveInfo;

/// File name of the log in an archive folder.
pub const VERIFY_LOG_FILE: &str = ".bitbucket-diy-verified.json";
/// File name of the log in the working folder's state folder (archive type `none`).
const VERIFY_LOG_IN_STATE: &str = "verified.json";
const FORMAT: u32 = 1;

/// The outcome of the last verification of one backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// When the verification ended.
    pub verified_at: jiff::Timestamp,
    /// Whether it passed.
    pub ok: bool,
    /// Whether it was a deep verification (test restore and `git fsck`).
    pub deep: bool,
    /// Entries checked against the manifest.
    #[serde(default)]
    pub entries: u64,
    /// Bytes hashed.
    #[serde(default)]
    pub bytes: u64,
    /// Repositories that passed `git fsck` (deep only).
    #[serde(default)]
    pub repositories: usize,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VerifyRecord {
    /// The record of a finished verification: passed, or failed because the archive is bad.
    /// `None` for failures that say nothing about the archive (cancelled, local I/O, a missing
    /// tool): those are not recorded.
    pub fn from_outcome(outcome: &Result<DeepVerifyReport, Error>, deep: bool) -> Option<Self> {
        let verified_at = jiff::Timestamp::now();
        match outcome {
            Ok(report) => Some(Self {
                verified_at,
                ok: true,
                deep,
                entries: report.verify.entries,
                bytes: report.verify.bytes,
                repositories: report.repositories,
                error: None,
            }),
            Err(e) if e.kind() == ErrorKind::Archive => Some(Self {
                verified_at,
                ok: false,
                deep,
                entries: 0,
                bytes: 0,
                repositories: 0,
                error: Some(e.to_string()),
            }),
            Err(_) => None,
        }
    }
}

/// Every record of one archive folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyLog {
    #[serde(default)]
    format: u32,
    /// Backup id → its last verification.
    #[serde(default)]
    pub backups: BTreeMap<String, VerifyRecord>,
}

impl VerifyLog {
    /// Read the log at `path`; a missing file is an empty log, and so is an unreadable one (with a
    /// warning): the log is a convenience, never a reason for `list` to fail.
    pub fn load(path: &Path) -> Self {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the verification log");
                return Self::default();
            }
        };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable verification log");
            Self::default()
        })
    }

    /// The last verification of `id`.
    pub fn get(&self, id: &str) -> Option<&VerifyRecord> {
        self.backups.get(id)
    }

    /// Write the log to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder).map_err(|e| Error::io("creating", folder, e))?;
        let mut log = self.clone();
        log.format = FORMAT;
        let json = serde_json::to_vec_pretty(&log).map_err(|e| Error::io("writing", path, std::io::Error::other(e)))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".bitbucket-diy-verified-")
            .tempfile_in(folder)
            .map_err(|e| Error::io("creating a temporary file in", folder, e))?;
        tmp.write_all(&json).map_err(|e| Error::io("writing", tmp.path().to_owned(), e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io("syncing", tmp.path().to_owned(), e))?;
        tmp.persist(path).map_err(|e| Error::io("writing", path, e.error))?;
        Ok(())
    }
}

/// A stored backup and its last verification.
#[derive(Debug, Clone, Serialize)]
pub struct ListedBackup {
    /// The archive.
    #[serde(flatten)]
    pub archive: ArchiveInfo,
    /// Its last verification, if it was ever verified.
    pub verification: Option<VerifyRecord>,
}

impl BackupOrchestrator {
    /// Where this orchestrator's verification log lives.
    pub fn verify_log_path(&self) -> PathBuf {
        if self.archive().name() == "none" {
            self.working_folder().state_dir().join(VERIFY_LOG_IN_STATE)
        } else {
            self.archive().folder().join(VERIFY_LOG_FILE)
        }
    }

    /// Every complete backup, newest first, with its last verification.
    pub async fn list_with_verification(&self) -> Result<Vec<ListedBackup>, Error> {
        let archives = self.list_backups().await?;
        let path = self.verify_log_path();
        let log = tokio::task::spawn_blocking(move || VerifyLog::load(&path))
            .await
            .map_err(|e| Error::io("reading the verification log", "", std::io::Error::other(e)))?;
        Ok(archives
            .into_iter()
            .map(|archive| {
                let verification = log.get(archive.metadata.id.as_str()).cloned();
                ListedBackup { archive, verification }
            })
            .collect())
    }

    /// Record the outcome of a verification of `archive` (see [`VerifyRecord::from_outcome`]).
    pub(crate) async fn record_verification(
        &self,
        archive: &ArchiveInfo,
        outcome: &Result<DeepVerifyReport, Error>,
        deep: bool,
    ) -> Result<(), Error> {
        let Some(record) = VerifyRecord::from_outcome(outcome, deep) else { return Ok(()) };
        let id = archive.metadata.id.to_string();
        self.update_log(move |log| {
            log.backups.insert(id, record);
        })
        .await
    }

    /// Drop the records of archives retention deleted.
    pub(crate) async fn forget_verifications(&self, removed: &[ArchiveInfo]) -> Result<(), Error> {
        if removed.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = removed.iter().map(|a| a.metadata.id.to_string()).collect();
        self.update_log(move |log| log.backups.retain(|id, _| !ids.contains(id))).await
    }

    async fn update_log(&self, change: impl FnOnce(&mut VerifyLog) + Send + 'static) -> Result<(), Error> {
        let path = self.verify_log_path();
        tokio::task::spawn_blocking(move || {
            let mut log = VerifyLog::load(&path);
            let before = log.clone();
            change(&mut log);
            if log == before {
                return Ok(());
            }
            log.save(&path)
        })
        .await
        .map_err(|e| Error::io("writing the verification log", "", std::io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ok: bool) -> VerifyRecord {
        VerifyRecord {
            verified_at: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            ok,
            deep: true,
            entries: 10,
            bytes: 100,
            repositories: 2,
            error: (!ok).then(|| "bad".to_owned()),
        }
    }

    #[test]
    fn log_round_trips_and_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VERIFY_LOG_FILE);
        assert_eq!(VerifyLog::load(&path), VerifyLog::default());
        let mut log = VerifyLog::default();
        log.backups.insert("bitbucket-1".into(), record(true));
        log.backups.insert("bitbucket-2".into(), record(false));
        log.save(&path).unwrap();
        let read = VerifyLog::load(&path);
        assert_eq!(read.get("bitbucket-1"), Some(&record(true)));
        assert_eq!(read.get("bitbucket-2").unwrap().error.as_deref(), Some("bad"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    }

    #[test]
    fn an_unreadable_log_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VERIFY_LOG_FILE);
        std::fs::write(&path, "{not json").unwrap();
        assert!(VerifyLog::load(&path).backups.is_empty());
    }
}
