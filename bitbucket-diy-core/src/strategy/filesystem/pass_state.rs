//! When each copy pass into the working folder started, so the next pass knows which files it
//! may trust by size and modification time alone.
//!
//! rsync's quick check (same size, same mtime: skip) misses a file rewritten at the same size
//! within the same timestamp tick as the previous copy of it: a 41-byte loose ref updated twice
//! in one second is the real case, and the stale ref then points at a commit the database does
//! not know. The `native` and `rsync` strategies close that gap the same way: a file whose
//! size and mtime match its copy is trusted only when its mtime **and** ctime are clearly older
//! than the start of the last completed pass into that copy. Any write to the file after that
//! pass started moves its ctime past the start (ctime cannot be set back, unlike mtime), so an
//! older ctime proves the copy that pass made or kept is still current. Everything else is
//! compared or copied again.
//!
//! The record is written only after a pass completed and its copy was flushed; an interrupted
//! pass leaves the previous record in place, which stays valid because it is older.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::strategy::StrategyError;

/// How much older than the previous pass's start a timestamp must be to be trusted: covers
/// filesystems that store whole or even seconds (ext3, HFS+, FAT's two seconds), the kernel's
/// coarse clock lagging `SystemTime::now()` by a tick, and small clock differences with an NFS
/// server that stamps the files. Files touched within this window before a pass are merely
/// compared again, which is cheap.
pub const TIMESTAMP_SLACK: Duration = Duration::from_secs(5);

/// File in the working folder's state folder holding the records.
pub(crate) const PASS_RECORDS_FILE: &str = "filesystem-passes.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct PassRecords {
    #[serde(default)]
    passes: BTreeMap<PathBuf, PassRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PassRecord {
    /// When the last completed pass into this copy started.
    started_at: jiff::Timestamp,
    /// Which strategy ran it (for humans).
    strategy: String,
}

/// The pass records of one working folder.
#[derive(Debug, Clone)]
pub(crate) struct PassLog {
    file: PathBuf,
}

impl PassLog {
    /// The records kept in `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self { file: state_dir.join(PASS_RECORDS_FILE) }
    }

    /// Whether `root` is a working folder that copy passes use (so its content must be copied,
    /// never moved away).
    pub(crate) fn is_in_use(root: &Path) -> bool {
        root.join(crate::strategy::WorkingFolder::STATE).join(PASS_RECORDS_FILE).exists()
    }

    fn read(&self) -> PassRecords {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Unreadable records only cost a comparison of every file: never fail for that.
                tracing::warn!(file = %self.file.display(), "ignoring unreadable pass records: {e}");
                PassRecords::default()
            }),
            Err(_) => PassRecords::default(),
        }
    }

    /// Files whose mtime and ctime are both before this instant may be trusted when their size
    /// and mtime match the copy in `dest`; `None` when no completed pass is recorded.
    pub(crate) fn trusted_before(&self, dest: &Path) -> Option<SystemTime> {
        let record = self.read().passes.get(dest).cloned()?;
        let nanos = u64::try_from(record.started_at.as_nanosecond()).ok()?;
        (SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)).checked_sub(TIMESTAMP_SLACK)
    }

    /// Record that a pass into `dest` that started at `started` completed.
    pub(crate) fn record_completed(
        &self,
        dest: &Path,
        started: SystemTime,
        strategy: &str,
    ) -> Result<(), StrategyError> {
        let mut records = self.read();
        let started_at = jiff::Timestamp::try_from(started)
            .map_err(|e| StrategyError::io("recording the copy pass in", &self.file, std::io::Error::other(e)))?;
        records.passes.insert(dest.to_owned(), PassRecord { started_at, strategy: strategy.to_owned() });
        let json = serde_json::to_vec_pretty(&records)
            .map_err(|e| StrategyError::io("recording the copy pass in", &self.file, std::io::Error::other(e)))?;
        write_atomically(&self.file, &json)
    }
}

/// Write `bytes` to a temporary file beside `path`, fsync it, rename it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StrategyError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| StrategyError::io("creating", dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| StrategyError::io("creating a file in", dir, e))?;
    tmp.write_all(bytes).map_err(|e| StrategyError::io("writing", tmp.path().to_owned(), e))?;
    tmp.as_file().sync_all().map_err(|e| StrategyError::io("flushing", tmp.path().to_owned(), e))?;
    tmp.persist(path).map_err(|e| StrategyError::io("writing", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_are_per_destination() {
        let dir = tempfile::tempdir().unwrap();
        let log = PassLog::new(dir.path());
        let dest = Path::new("/w/bitbucket-home");
        assert!(log.trusted_before(dest).is_none());
        let start = SystemTime::now();
        log.record_completed(dest, start, "native").unwrap();
        let trusted = PassLog::new(dir.path()).trusted_before(dest).unwrap();
        assert!(trusted <= start - TIMESTAMP_SLACK + Duration::from_micros(1));
        assert!(log.trusted_before(Path::new("/w/other")).is_none());
    }

    #[test]
    fn corrupt_records_trust_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PASS_RECORDS_FILE), b"{not json").unwrap();
        assert!(PassLog::new(dir.path()).trusted_before(Path::new("/w/x")).is_none());
    }
}
