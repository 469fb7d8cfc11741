//! One backup at a time per working folder.
//!
//! The lock is an OS file lock (`flock`) on `<working>/.bitbucket-diy/run.lock`, whose content
//! names the holder (pid, start time, host) for the error message. The kernel drops the lock when
//! its holder dies, however it dies, so a lock left by a dead process is taken over without any
//! guessing from pids.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::strategy::WorkingFolder;

/// File name of the run lock inside the state folder.
const LOCK_FILE: &str = "run.lock";

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    since: String,
    #[serde(default)]
    host: String,
}

/// Held for the duration of a run; released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Take the run lock of `working`, creating its state folder (owner-only) if needed.
    pub fn acquire(working: &WorkingFolder) -> Result<Self, Error> {
        let state = working.state_dir();
        create_private_dir(working.root())?;
        create_private_dir(&state)?;
        let path = state.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("opening run lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(busy(working, &path, &mut file)),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        let holder = Holder { pid: std::process::id(), since: jiff::Timestamp::now().to_string(), host: hostname() };
        let text = serde_json::to_string(&holder).unwrap_or_default();
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(text.as_bytes())?;
            file.sync_data()
        };
        write(&mut file).map_err(|e| Error::io("writing run lock", &path, e))?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied, not deleted: deleting would let a waiter lock a file nobody else sees.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn busy(working: &WorkingFolder, path: &Path, file: &mut File) -> Error {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let holder: Holder = serde_json::from_str(&text).unwrap_or(Holder {
        pid: 0,
        since: "an unknown time".to_owned(),
        host: String::new(),
    });
    Error::Busy { folder: working.root().to_owned(), lock_file: path.to_owned(), pid: holder.pid, since: holder.since }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// Create `dir` (and parents) with owner-only permissions where we create it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io("creating", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_run_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let working = WorkingFolder::new(dir.path().join("work"));
        let first = RunLock::acquire(&working).unwrap();
        let err = RunLock::acquire(&working).unwrap_err();
        let Error::Busy { pid, .. } = &err else { panic!("{err}") };
        assert_eq!(*pid, std::process::id());
        assert!(err.to_string().contains("already running"), "{err}");
        drop(first);
        RunLock::acquire(&working).expect("free again after release");
    }

    #[test]
    fn lock_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let working = WorkingFolder::new(dir.path());
        std::fs::create_dir_all(working.state_dir()).unwrap();
        // A dead holder leaves its file behind, but the kernel released its flock.
        std::fs::write(working.state_dir().join(LOCK_FILE), r#"{"pid":999999,"since":"2020-01-01T00:00:00Z"}"#)
            .unwrap();
        let lock = RunLock::acquire(&working).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(text.contains(&format!("\"pid\":{}", std::process::id())), "{text}");
    }

    #[test]
    fn state_folder_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let working = WorkingFolder::new(dir.path().join("w"));
        let _lock = RunLock::acquire(&working).unwrap();
        for p in [working.root().to_owned(), working.state_dir()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
    }
}
