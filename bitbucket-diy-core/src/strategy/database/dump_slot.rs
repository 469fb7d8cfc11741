//! Where a dump is written and how it replaces the previous one.
//!
//! A dump goes to `<working>/bitbucket-db.partial/` and only a complete, synced dump is swapped
//! into `bitbucket-db/`. The reference scripts delete the previous dump before writing the new
//! one, so a failed run leaves no dump at all; here the previous complete dump survives any
//! failure, cancellation or crash:
//!
//! - Linux swaps the two folders in one `renameat2(RENAME_EXCHANGE)`; elsewhere (or on a
//!   filesystem without it) the old dump is first renamed to `bitbucket-db.previous/`.
//! - A run that finds `bitbucket-db.previous/` without `bitbucket-db/` (a crash between the two
//!   renames) puts it back before doing anything else.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::strategy::{StrategyError, WorkingFolder};

/// Size of a finished dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DumpSize {
    /// Bytes in regular files.
    pub(crate) bytes: u64,
    /// Regular files.
    pub(crate) files: u64,
}

/// The dump folder of a working folder, its in-progress twin and the old dump's parking place.
#[derive(Debug, Clone)]
pub(crate) struct DumpSlot {
    root: PathBuf,
    complete: PathBuf,
    partial: PathBuf,
    previous: PathBuf,
}

impl DumpSlot {
    /// The slot of `working`.
    pub(crate) fn new(working: &WorkingFolder) -> Self {
        let complete = working.database_dir();
        let name = WorkingFolder::DATABASE;
        Self {
            root: working.root().to_owned(),
            partial: working.root().join(format!("{name}.partial")),
            previous: working.root().join(format!("{name}.previous")),
            complete,
        }
    }

    /// Where the dump in progress is written.
    pub(crate) fn partial(&self) -> &Path {
        &self.partial
    }

    /// Recover from an interrupted run and clear the partial folder. With `create`, the partial
    /// folder is created empty (`0700`); otherwise it is left absent for tools that create it.
    pub(crate) async fn begin(&self, create: bool) -> Result<(), StrategyError> {
        let slot = self.clone();
        blocking(move || slot.begin_blocking(create)).await
    }

    /// Remove the partial dump after a failure. Best effort: a leftover is removed by the next
    /// run's [`Self::begin`], and never taken for a complete dump. Tried a few times because a
    /// killed tool's workers may still be closing files for a moment.
    pub(crate) async fn discard(&self) {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let slot = self.clone();
            let removed = blocking(move || {
                remove_any(&slot.partial).map_err(|e| StrategyError::io("removing", &slot.partial, e))
            })
            .await;
            match removed {
                Ok(()) => return,
                Err(e) if attempt == ATTEMPTS => {
                    tracing::warn!(error = %e, "could not remove the partial database dump; the next run will");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    /// After the tool that wrote the partial dump ended: commit it when `written` is `Ok`,
    /// discard it when that or the commit failed.
    pub(crate) async fn finish<T>(&self, written: Result<T, StrategyError>) -> Result<DumpSize, StrategyError> {
        let committed = match written {
            Ok(_) => self.commit().await,
            Err(e) => Err(e),
        };
        if committed.is_err() {
            self.discard().await;
        }
        committed
    }

    /// Sync the partial dump, make it the complete one and remove the previous dump.
    pub(crate) async fn commit(&self) -> Result<DumpSize, StrategyError> {
        let slot = self.clone();
        blocking(move || slot.commit_blocking()).await
    }

    fn begin_blocking(&self, create: bool) -> Result<(), StrategyError> {
        fs::create_dir_all(&self.root).map_err(|e| StrategyError::io("creating", &self.root, e))?;
        if self.previous.exists() {
            if self.complete.exists() {
                remove_any(&self.previous).map_err(|e| StrategyError::io("removing", &self.previous, e))?;
            } else {
                tracing::warn!(previous = %self.previous.display(), "restoring the previous dump after an interrupted run");
                fs::rename(&self.previous, &self.complete)
                    .map_err(|e| StrategyError::io("restoring", &self.previous, e))?;
            }
        }
        remove_any(&self.partial).map_err(|e| StrategyError::io("removing the stale", &self.partial, e))?;
        if create {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&self.partial)
                .map_err(|e| StrategyError::io("creating", &self.partial, e))?;
        }
        Ok(())
    }

    fn commit_blocking(&self) -> Result<DumpSize, StrategyError> {
        let size = sync_tree(&self.partial)?;
        if self.complete.exists() {
            self.swap_in()?;
            remove_any(&self.previous)
                .map_err(|e| StrategyError::io("removing the previous dump", &self.previous, e))?;
        } else {
            fs::rename(&self.partial, &self.complete).map_err(|e| StrategyError::io("renaming", &self.partial, e))?;
        }
        sync_dir(&self.root)?;
        Ok(size)
    }

    /// Put the partial dump in place of the complete one; the old dump ends up in `previous`.
    fn swap_in(&self) -> Result<(), StrategyError> {
        remove_any(&self.previous).map_err(|e| StrategyError::io("removing", &self.previous, e))?;
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            match renameat_with(CWD, &self.partial, CWD, &self.complete, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    return fs::rename(&self.partial, &self.previous)
                        .map_err(|e| StrategyError::io("renaming the previous dump", &self.partial, e));
                }
                // Older kernels and some filesystems (overlayfs on old kernels, NFS) lack the flag.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {}
                Err(e) => return Err(StrategyError::io("swapping in", &self.partial, e.into())),
            }
        }
        fs::rename(&self.complete, &self.previous).map_err(|e| StrategyError::io("renaming", &self.complete, e))?;
        fs::rename(&self.partial, &self.complete).map_err(|e| StrategyError::io("renaming", &self.partial, e))
    }
}

/// Run blocking file work off the async runtime.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, StrategyError>
where
    F: FnOnce() -> Result<T, StrategyError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        StrategyError::io("running file work for", PathBuf::from("the database dump"), io::Error::other(e))
    })?
}

/// Remove a file or a folder tree; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsync every file and folder below `root` and count the files.
fn sync_tree(root: &Path) -> Result<DumpSize, StrategyError> {
    let mut size = DumpSize::default();
    for entry in walkdir::WalkDir::new(root).follow_links(false).contents_first(true) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_owned();
            StrategyError::io("reading", path, e.into())
        })?;
        let file_type = entry.file_type();
        if file_type.is_file() {
            let file = fs::File::open(entry.path()).map_err(|e| StrategyError::io("opening", entry.path(), e))?;
            file.sync_all().map_err(|e| StrategyError::io("syncing", entry.path(), e))?;
            let meta = file.metadata().map_err(|e| StrategyError::io("reading", entry.path(), e))?;
            size.bytes += meta.len();
            size.files += 1;
        } else if file_type.is_dir() {
            sync_dir(entry.path())?;
        }
    }
    Ok(size)
}

fn sync_dir(dir: &Path) -> Result<(), StrategyError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StrategyError::io("syncing", dir, e))
}

/// Size of a dump folder (for restore reports).
pub(crate) fn tree_size(root: &Path) -> DumpSize {
    let mut size = DumpSize::default();
    for entry in walkdir::WalkDir::new(root).follow_links(false).into_iter().flatten() {
        if entry.file_type().is_file() {
            size.files += 1;
            size.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[tokio::test]
    async fn commit_replaces_the_previous_dump() {
        let tmp = tempfile::tempdir().unwrap();
        let working = WorkingFolder::new(tmp.path());
        write(&working.database_dir().join("old.sql"), "old");
        let slot = DumpSlot::new(&working);
        slot.begin(true).await.unwrap();
        write(&slot.partial().join("new.sql"), "new!");
        let size = slot.commit().await.unwrap();
        assert_eq!(size, DumpSize { bytes: 4, files: 1 });
        assert_eq!(fs::read_to_string(working.database_dir().join("new.sql")).unwrap(), "new!");
        assert!(!working.database_dir().join("old.sql").exists());
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(WorkingFolder::DATABASE)]);
    }

    #[tokio::test]
    async fn discard_keeps_the_previous_dump() {
        let tmp = tempfile::tempdir().unwrap();
        let working = WorkingFolder::new(tmp.path());
        write(&working.database_dir().join("old.sql"), "old");
        let slot = DumpSlot::new(&working);
        slot.begin(true).await.unwrap();
        write(&slot.partial().join("half.sql"), "ha");
        slot.discard().await;
        assert!(!slot.partial().exists());
        assert_eq!(fs::read_to_string(working.database_dir().join("old.sql")).unwrap(), "old");
    }

    #[tokio::test]
    async fn begin_recovers_a_dump_parked_by_a_crash_and_clears_a_stale_partial() {
        let tmp = tempfile::tempdir().unwrap();
        let working = WorkingFolder::new(tmp.path());
        let slot = DumpSlot::new(&working);
        write(&slot.previous.join("old.sql"), "old");
        write(&slot.partial().join("stale.sql"), "stale");
        slot.begin(false).await.unwrap();
        assert_eq!(fs::read_to_string(working.database_dir().join("old.sql")).unwrap(), "old");
        assert!(!slot.partial().exists() && !slot.previous.exists());
    }
}
