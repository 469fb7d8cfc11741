//! Writes admitted entries under an extraction target without ever leaving it.
//!
//! The entry rules ([`super::policy`]) already refuse `..`, absolute paths and paths through
//! symlinks; this module makes the file system calls themselves unable to escape, in the spirit of
//! GNU tar's delayed symlinks:
//!
//! - every path is resolved one component at a time from a descriptor of the target, with
//!   `O_NOFOLLOW | O_DIRECTORY`: a symlink met on the way is an error, never followed;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`: nothing existing is overwritten,
//!   nothing is written through a link;
//! - entries arrive in the order the rules ([`super::policy`]) admit, each folder before its
//!   content: a folder is complete once an entry outside it arrives. Only then are its symlinks
//!   created (no later entry can be written through one) and its mode and time set (a read-only
//!   folder still receives its content, and its time is not changed by it). Memory holds only the
//!   folders leading to the current entry, however many the archive has.
//!
//! On any failure the caller calls [`Extractor::abandon`], which removes everything written: the
//! target was empty, and a half-extracted tree must not pass for a restore.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::strategy::ArchiveError;

use super::policy::is_inside;
use super::stream::{IO_BUFFER, Progress};

/// Why copying an entry's data stopped.
pub(crate) enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The source ended after `got` of the declared bytes.
    Short {
        /// Bytes actually there.
        got: u64,
    },
}

/// Where a file entry's content comes from.
pub(crate) struct FileData<'a> {
    /// The content.
    pub reader: &'a mut dyn Read,
    /// Its declared size.
    pub size: u64,
    /// Maps a read failure (cancelled, local I/O, corrupt archive).
    pub read_error: &'a dyn Fn(io::Error) -> ArchiveError,
    /// Counts the bytes copied, when the reader does not.
    pub progress: Option<&'a mut Progress>,
}

/// Copies exactly `size` bytes of `data` into `out`, hashing them; returns the hex SHA-256.
pub(crate) fn copy_and_hash(
    data: &mut dyn Read,
    size: u64,
    out: &mut dyn Write,
    buf: &mut [u8],
    mut progress: Option<&mut Progress>,
) -> Result<String, CopyError> {
    let mut hasher = Sha256::new();
    let mut remaining = size;
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(CopyError::Short { got: size - remaining });
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        remaining -= n as u64;
        if let Some(progress) = progress.as_deref_mut() {
            progress.advance(n as u64).map_err(CopyError::Read)?;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The permission bits restored: setuid and setgid are dropped, since extracting as root must
/// never create a privileged executable from archive content (a Bitbucket home needs none).
fn restored_mode(mode: u32) -> Mode {
    Mode::from_raw_mode(mode & 0o1777)
}

fn mtime_only(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: mtime, tv_nsec: 0 },
    }
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

#[derive(Debug)]
struct DelayedSymlink {
    path: String,
    target: String,
    mtime: i64,
}

/// A folder written but not yet complete: its mode and time, and the symlinks it holds, wait
/// until an entry outside it arrives.
#[derive(Debug)]
struct OpenFolder {
    path: String,
    mode: u32,
    mtime: i64,
    symlinks: Vec<DelayedSymlink>,
}

/// Creates entries under one target folder.
#[derive(Debug)]
pub(crate) struct Extractor {
    archive: PathBuf,
    target: PathBuf,
    created_target: bool,
    root: OwnedFd,
    /// The folder of the previous entry: consecutive entries mostly share it.
    parent_cache: Option<(String, OwnedFd)>,
    /// The folders leading to the last entry, outermost first.
    open: Vec<OpenFolder>,
    /// Symlinks outside any folder of the archive (at the top level), created last.
    top_symlinks: Vec<DelayedSymlink>,
    buf: Vec<u8>,
}

impl Extractor {
    /// Opens `target`, which must be an empty folder or not exist (it is then created, owner-only).
    pub(crate) fn prepare(archive: &Path, target: &Path) -> Result<Self, ArchiveError> {
        let mut created_target = false;
        match fs::read_dir(target) {
            Ok(mut items) => {
                if let Some(item) = items.next() {
                    let name = item
                        .map(|i| i.file_name().to_string_lossy().into_owned())
                        .unwrap_or_else(|_| "an unreadable entry".to_owned());
                    return Err(ArchiveError::io(
                        "extracting into",
                        target,
                        io::Error::new(
                            io::ErrorKind::DirectoryNotEmpty,
                            format!("the folder is not empty (it holds `{name}`); extraction needs an empty folder"),
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(target)
                    .map_err(|e| ArchiveError::io("creating", target, e))?;
                created_target = true;
            }
            Err(e) => return Err(ArchiveError::io("reading", target, e)),
        }
        // The target itself may be a symlink the operator chose (`/restore` → a big disk); only
        // what is below it is resolved without following links.
        let root = rustix::fs::open(target, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| ArchiveError::io("opening", target, e.into()))?;
        Ok(Self {
            archive: archive.to_owned(),
            target: target.to_owned(),
            created_target,
            root,
            parent_cache: None,
            open: Vec::new(),
            top_symlinks: Vec::new(),
            buf: vec![0; IO_BUFFER],
        })
    }

    fn unsafe_entry(&self, entry: &str, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::UnsafeEntry { archive: self.archive.clone(), entry: entry.to_owned(), reason: reason.into() }
    }

    fn io_error(&self, entry: &str, error: io::Error) -> ArchiveError {
        ArchiveError::io("extracting", self.target.join(entry), error)
    }

    /// A descriptor of the folder `parent` (relative), created as needed, reached without
    /// following any symlink.
    fn parent_fd(&mut self, entry: &str, parent: &str) -> Result<BorrowedFd<'_>, ArchiveError> {
        if parent.is_empty() {
            return Ok(self.root.as_fd());
        }
        let cached = self.parent_cache.as_ref().is_some_and(|(path, _)| path == parent);
        if !cached {
            let mut current: Option<OwnedFd> = None;
            for name in parent.split('/') {
                let dir = current.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
                let next = open_or_create_folder(dir, name).map_err(|e| match e {
                    Errno::LOOP | Errno::NOTDIR => self.unsafe_entry(
                        entry,
                        format!("`{parent}` is not a folder on disk (a symlink or a file is in the way)"),
                    ),
                    other => self.io_error(entry, other.into()),
                })?;
                current = Some(next);
            }
            let Some(fd) = current else {
                return Ok(self.root.as_fd());
            };
            self.parent_cache = Some((parent.to_owned(), fd));
        }
        match &self.parent_cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Ok(self.root.as_fd()),
        }
    }

    /// Completes the open folders `path` is not in: every entry of theirs has arrived.
    fn arrive(&mut self, path: &str) -> Result<(), ArchiveError> {
        while self.open.last().is_some_and(|folder| !is_inside(path, &folder.path)) {
            if let Some(folder) = self.open.pop() {
                self.complete(folder)?;
            }
        }
        Ok(())
    }

    /// Creates the symlinks of `folder`, then gives it its mode and time.
    fn complete(&mut self, folder: OpenFolder) -> Result<(), ArchiveError> {
        self.create_symlinks(&folder.symlinks)?;
        let (parent, name) = split_parent(&folder.path);
        let dir = self.parent_fd(&folder.path, parent)?;
        let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| self.io_error(&folder.path, e.into()))?;
        rustix::fs::fchmod(&fd, restored_mode(folder.mode)).map_err(|e| self.io_error(&folder.path, e.into()))?;
        rustix::fs::futimens(&fd, &mtime_only(folder.mtime)).map_err(|e| self.io_error(&folder.path, e.into()))
    }

    /// A folder entry. Its mode and time are applied once it is complete.
    pub(crate) fn folder(&mut self, path: &str, mode: u32, mtime: i64) -> Result<(), ArchiveError> {
        self.arrive(path)?;
        let (parent, name) = split_parent(path);
        let dir = self.parent_fd(path, parent)?;
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // Created earlier as the parent of an entry listed before its folder.
                let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io_error(path, e.into()))?;
                if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Directory {
                    return Err(self.unsafe_entry(path, "a non-folder entry of the same name exists"));
                }
            }
            Err(e) => return Err(self.io_error(path, e.into())),
        }
        self.open.push(OpenFolder { path: path.to_owned(), mode, mtime, symlinks: Vec::new() });
        Ok(())
    }

    /// A regular file, its content read from `data`; returns its SHA-256. Data shorter than
    /// declared is an unsafe entry (truncation).
    pub(crate) fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: i64,
        data: FileData<'_>,
    ) -> Result<String, ArchiveError> {
        let FileData { reader, size, read_error, progress } = data;
        let mut file = self.create_file(path)?;
        let mut buf = std::mem::take(&mut self.buf);
        let copied = copy_and_hash(reader, size, &mut file, &mut buf, progress);
        self.buf = buf;
        let sha256 = match copied {
            Ok(sha) => sha,
            Err(CopyError::Read(e)) => return Err(read_error(e)),
            Err(CopyError::Write(e)) => return Err(self.io_error(path, e)),
            Err(CopyError::Short { got }) => {
                return Err(self.unsafe_entry(
                    path,
                    format!("it declares {size} bytes but only {got} follow (truncated or forged size)"),
                ));
            }
        };
        self.close_file(path, &file, mode, mtime)?;
        Ok(sha256)
    }

    /// Creates the regular file `path`, owner-only, for its content to be written: never over
    /// anything that exists, never through a symlink.
    pub(crate) fn create_file(&mut self, path: &str) -> Result<File, ArchiveError> {
        self.arrive(path)?;
        let (parent, name) = split_parent(path);
        let dir = self.parent_fd(path, parent)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(Errno::EXIST) => Err(self.unsafe_entry(path, "an entry of the same name exists already")),
            Err(e) => Err(self.io_error(path, e.into())),
        }
    }

    /// Gives a written file its mode and time.
    pub(crate) fn close_file(&self, path: &str, file: &File, mode: u32, mtime: i64) -> Result<(), ArchiveError> {
        rustix::fs::fchmod(file, restored_mode(mode)).map_err(|e| self.io_error(path, e.into()))?;
        rustix::fs::futimens(file, &mtime_only(mtime)).map_err(|e| self.io_error(path, e.into()))
    }

    /// A write to the file `entry` failed.
    pub(crate) fn write_error(&self, entry: &str, error: io::Error) -> ArchiveError {
        self.io_error(entry, error)
    }

    /// A symlink, created once its folder is complete.
    pub(crate) fn symlink(&mut self, path: &str, target: &str, mtime: i64) -> Result<(), ArchiveError> {
        self.arrive(path)?;
        let link = DelayedSymlink { path: path.to_owned(), target: target.to_owned(), mtime };
        let (parent, _) = split_parent(path);
        match self.open.last_mut() {
            Some(folder) if folder.path == parent => folder.symlinks.push(link),
            _ => self.top_symlinks.push(link),
        }
        Ok(())
    }

    /// Completes every open folder, deepest first, then creates the top-level symlinks: the
    /// archive's entries are all written.
    pub(crate) fn complete_all(&mut self) -> Result<(), ArchiveError> {
        while let Some(folder) = self.open.pop() {
            self.complete(folder)?;
        }
        let top = std::mem::take(&mut self.top_symlinks);
        self.create_symlinks(&top)
    }

    fn create_symlinks(&mut self, symlinks: &[DelayedSymlink]) -> Result<(), ArchiveError> {
        for link in symlinks {
            let (parent, name) = split_parent(&link.path);
            let dir = self.parent_fd(&link.path, parent)?;
            match rustix::fs::symlinkat(link.target.as_str(), dir, name) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    return Err(self.unsafe_entry(&link.path, "an entry of the same name exists already"));
                }
                Err(e) => return Err(self.io_error(&link.path, e.into())),
            }
            let dir = self.parent_fd(&link.path, parent)?;
            rustix::fs::utimensat(dir, name, &mtime_only(link.mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.io_error(&link.path, e.into()))?;
        }
        Ok(())
    }

    /// Writes one of bitbucket-diy's own files as pretty JSON, owner-only.
    pub(crate) fn own_json(
        &mut self,
        path: &str,
        value: &impl serde::Serialize,
        mtime: i64,
    ) -> Result<(), ArchiveError> {
        self.own_file(path, mtime, |out, write_error| {
            serde_json::to_writer_pretty(out, value).map_err(|e| write_error(io::Error::other(e)))
        })
    }

    /// Writes one of bitbucket-diy's own files, owner-only, through a buffer: `write` gets the
    /// output and the way to name a write error.
    pub(crate) fn own_file<T>(
        &mut self,
        path: &str,
        mtime: i64,
        write: impl FnOnce(&mut dyn Write, &dyn Fn(io::Error) -> ArchiveError) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        let file = self.create_file(path)?;
        let mut out = io::BufWriter::with_capacity(IO_BUFFER, &file);
        let written = write(&mut out, &|e| self.io_error(path, e))?;
        out.flush().map_err(|e| self.io_error(path, e))?;
        drop(out);
        self.close_file(path, &file, 0o600, mtime)?;
        Ok(written)
    }

    /// The folder extracted into.
    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// Completes what is still open and releases the target.
    pub(crate) fn finish(&mut self) -> Result<(), ArchiveError> {
        self.complete_all()?;
        self.parent_cache = None;
        Ok(())
    }

    /// Removes everything written below the target (and the target, if it was created).
    pub(crate) fn abandon(self) {
        let Self { target, created_target, root, parent_cache, .. } = self;
        drop(parent_cache);
        drop(root);
        remove_contents(&target);
        if created_target && let Err(e) = fs::remove_dir(&target) {
            tracing::warn!(target = %target.display(), error = %e, "could not remove the extraction target");
        }
    }
}

fn open_or_create_folder(dir: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
        }
        other => other,
    }
}

/// Best-effort removal of a partly extracted tree. Folders may already carry read-only modes from
/// the archive, so they are made writable first; symlinks are removed, never followed.
fn remove_contents(target: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for item in walkdir::WalkDir::new(target).min_depth(1).follow_links(false).into_iter().flatten() {
        if item.file_type().is_dir() {
            let _ = fs::set_permissions(item.path(), fs::Permissions::from_mode(0o700));
        }
    }
    let Ok(children) = fs::read_dir(target) else {
        return;
    };
    for child in children.flatten() {
        let path = child.path();
        let removed = match child.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a partly extracted entry");
        }
    }
}
