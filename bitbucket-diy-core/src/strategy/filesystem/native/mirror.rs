//! The copy engine of `native`: make a destination tree equal to a source tree.
//!
//! One merge-walk per directory: list the source and the destination side by side, delete what
//! the source no longer has (or what is now excluded), then handle the entries in parallel on a
//! small rayon pool, recursing into subdirectories as they come (work stealing keeps both cores
//! busy on wide and on deep trees alike). Directory metadata is applied after a directory's
//! content, because writing into a directory changes its mtime.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use filetime::FileTime;
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::strategy::StrategyError;
use crate::strategy::filesystem::Excludes;

/// Running totals, read by the progress reporter while the copy goes on.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    pub unchanged: AtomicU64,
    pub removed: AtomicU64,
}

/// One mirroring job's settings.
pub(crate) struct Mirror<'a> {
    /// What to leave out (and delete from the destination).
    pub excludes: &'a Excludes,
    /// Files whose mtime and ctime are before this may be trusted on size and mtime alone.
    pub trusted_before: Option<SystemTime>,
    pub cancel: &'a CancellationToken,
    pub counters: &'a Counters,
    /// Copy owners too (only root may).
    pub preserve_owner: bool,
    /// Cleared after the first refused FICLONE, so an ext4 destination is not asked again.
    pub reflink: &'a AtomicBool,
    /// Sockets, FIFOs and devices met (never copied).
    pub skipped: &'a Mutex<Vec<PathBuf>>,
}

enum Verdict {
    Copy,
    Compare,
    Unchanged,
}

impl Mirror<'_> {
    /// Make `dst_root` a copy of `src_root` (a folder, or a symlink to one: the root is the only
    /// symlink ever followed, because homes are often symlinks to their volume).
    pub(crate) fn run(&self, src_root: &Path, dst_root: &Path) -> Result<(), StrategyError> {
        let src_meta = fs::metadata(src_root).map_err(|e| StrategyError::io("reading", src_root, e))?;
        if !src_meta.is_dir() {
            return Err(StrategyError::io("copying", src_root, io::Error::other("not a folder")));
        }
        match fs::symlink_metadata(dst_root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst_root).map_err(|e| StrategyError::io("replacing", dst_root, e))?;
                fs::create_dir_all(dst_root).map_err(|e| StrategyError::io("creating", dst_root, e))?;
            }
            Err(_) => fs::create_dir_all(dst_root).map_err(|e| StrategyError::io("creating", dst_root, e))?,
        }
        self.mirror_dir(src_root, dst_root, Path::new(""))?;
        self.apply_dir_metadata(dst_root, &src_meta)
    }

    /// Copy one entry of `src_dir` into `dst_dir`, whose counterpart does not exist yet.
    pub(crate) fn copy_new_entry(&self, src_dir: &Path, dst_dir: &Path, name: &OsStr) -> Result<(), StrategyError> {
        let src = src_dir.join(name);
        let meta = fs::symlink_metadata(&src).map_err(|e| StrategyError::io("reading", &src, e))?;
        self.mirror_entry(src_dir, dst_dir, Path::new(""), &SourceEntry { name: name.to_owned(), meta }, None)
    }

    fn check_cancel(&self) -> Result<(), StrategyError> {
        if self.cancel.is_cancelled() { Err(StrategyError::Cancelled) } else { Ok(()) }
    }

    fn mirror_dir(&self, src: &Path, dst: &Path, rel: &Path) -> Result<(), StrategyError> {
        self.check_cancel()?;
        let entries = match read_entries(src) {
            Ok(entries) => entries,
            // Removed while we walk a live home: the parent's next pass removes our copy.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StrategyError::io("reading folder", src, e)),
        };
        let wanted: Vec<SourceEntry> = entries
            .into_iter()
            .filter(|e| !self.excludes.excludes_entry(&rel.join(&e.name), e.meta.is_dir()))
            .collect();
        let existing: HashMap<OsString, Metadata> = read_entries(dst)
            .map_err(|e| StrategyError::io("reading folder", dst, e))?
            .into_iter()
            .map(|e| (e.name, e.meta))
            .collect();
        let keep: HashSet<&OsStr> = wanted.iter().map(|e| e.name.as_os_str()).collect();
        for (name, meta) in &existing {
            if !keep.contains(name.as_os_str()) {
                self.remove(&dst.join(name), meta)?;
            }
        }
        wanted.par_iter().try_for_each(|entry| self.mirror_entry(src, dst, rel, entry, existing.get(&entry.name)))
    }

    fn mirror_entry(
        &self,
        src_dir: &Path,
        dst_dir: &Path,
        rel: &Path,
        entry: &SourceEntry,
        existing: Option<&Metadata>,
    ) -> Result<(), StrategyError> {
        self.check_cancel()?;
        let src = src_dir.join(&entry.name);
        let dst = dst_dir.join(&entry.name);
        let kind = entry.meta.file_type();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                other => {
                    if let Some(m) = other {
                        self.remove(&dst, m)?;
                    }
                    fs::create_dir(&dst).map_err(|e| StrategyError::io("creating", &dst, e))?;
                }
            }
            self.mirror_dir(&src, &dst, &rel.join(&entry.name))?;
            self.apply_dir_metadata(&dst, &entry.meta)
        } else if kind.is_file() {
            self.mirror_file(&src, dst_dir, &entry.name, &entry.meta, existing)
        } else if kind.is_symlink() {
            self.mirror_symlink(&src, dst_dir, &entry.name, &entry.meta, existing)
        } else {
            if let Ok(mut skipped) = self.skipped.lock() {
                skipped.push(src);
            }
            match existing {
                Some(m) => self.remove(&dst, m),
                None => Ok(()),
            }
        }
    }

    fn mirror_file(
        &self,
        src: &Path,
        dst_dir: &Path,
        name: &OsStr,
        meta: &Metadata,
        existing: Option<&Metadata>,
    ) -> Result<(), StrategyError> {
        let dst = dst_dir.join(name);
        let verdict = match existing {
            Some(dst_meta) if dst_meta.is_file() => self.decide(meta, dst_meta),
            _ => Verdict::Copy,
        };
        let same = match verdict {
            Verdict::Copy => false,
            Verdict::Unchanged => true,
            Verdict::Compare => same_content(src, &dst).map_err(|e| StrategyError::io("comparing", src, e))?,
        };
        match (same, existing) {
            (true, Some(dst_meta)) => {
                self.counters.unchanged.fetch_add(1, Ordering::Relaxed);
                self.fix_metadata(&dst, meta, dst_meta)
            }
            _ => self.copy_file(src, dst_dir, name, meta, existing),
        }
    }

    fn decide(&self, src: &Metadata, dst: &Metadata) -> Verdict {
        if src.len() != dst.len() || src.mtime() != dst.mtime() || src.mtime_nsec() != dst.mtime_nsec() {
            return Verdict::Copy;
        }
        let changed_at = modified(src).max(changed(src));
        match self.trusted_before {
            Some(trusted) if changed_at < trusted => Verdict::Unchanged,
            // Written around or after the last pass's start: the size and mtime may match a copy
            // that is stale (same size, same timestamp tick). Only the content can tell.
            _ => Verdict::Compare,
        }
    }

    fn copy_file(
        &self,
        src: &Path,
        dst_dir: &Path,
        name: &OsStr,
        meta: &Metadata,
        existing: Option<&Metadata>,
    ) -> Result<(), StrategyError> {
        let dst = dst_dir.join(name);
        let input = match open_no_follow(src) {
            Ok(file) => file,
            Err(e) if is_vanished(&e) => {
                // Deleted (or replaced by a symlink) since the listing: the next pass sees the
                // current state; a stale copy must not stay meanwhile.
                if let Some(m) = existing {
                    self.remove(&dst, m)?;
                }
                return Ok(());
            }
            Err(e) => return Err(StrategyError::io("reading", src, e)),
        };
        if let Some(m) = existing.filter(|m| m.is_dir()) {
            self.remove(&dst, m)?;
        }
        let tmp = dst_dir.join(temporary_name(name));
        let output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| StrategyError::io("creating", &tmp, e))?;
        let written = self.write_copy(&input, &output, src, &tmp, meta);
        drop(output);
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&tmp, &dst) {
            let _ = fs::remove_file(&tmp);
            return Err(StrategyError::io("renaming into place", &dst, e));
        }
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Content, owner, mode and times of the temporary copy, through its open handle.
    fn write_copy(
        &self,
        input: &File,
        output: &File,
        src: &Path,
        tmp: &Path,
        meta: &Metadata,
    ) -> Result<u64, StrategyError> {
        let bytes = self.copy_content(input, output).map_err(|e| StrategyError::io("copying", src, e))?;
        // Owner before mode: chown clears set-user-id bits.
        if self.preserve_owner {
            std::os::unix::fs::fchown(output, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| StrategyError::io("setting the owner of", tmp, e))?;
        }
        output
            .set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| StrategyError::io("setting the mode of", tmp, e))?;
        filetime::set_file_handle_times(
            output,
            Some(FileTime::from_last_access_time(meta)),
            Some(FileTime::from_last_modification_time(meta)),
        )
        .map_err(|e| StrategyError::io("setting the times of", tmp, e))?;
        Ok(bytes)
    }

    fn copy_content(&self, input: &File, output: &File) -> io::Result<u64> {
        let len = input.metadata()?.len();
        if len > 0 && self.reflink.load(Ordering::Relaxed) {
            match rustix::fs::ioctl_ficlone(output, input) {
                Ok(()) => return Ok(len),
                // Not a reflink filesystem (or another filesystem): stop asking.
                Err(_) => self.reflink.store(false, Ordering::Relaxed),
            }
        }
        // File to file: std copies with copy_file_range, in the kernel.
        let mut reader = input;
        let mut writer = output;
        io::copy(&mut reader, &mut writer)
    }

    fn mirror_symlink(
        &self,
        src: &Path,
        dst_dir: &Path,
        name: &OsStr,
        meta: &Metadata,
        existing: Option<&Metadata>,
    ) -> Result<(), StrategyError> {
        let dst = dst_dir.join(name);
        let target = match fs::read_link(src) {
            Ok(target) => target,
            Err(e) if is_vanished(&e) || e.kind() == io::ErrorKind::InvalidInput => return Ok(()),
            Err(e) => return Err(StrategyError::io("reading the symlink", src, e)),
        };
        let unchanged =
            existing.filter(|m| m.file_type().is_symlink()).filter(|_| fs::read_link(&dst).is_ok_and(|t| t == target));
        if let Some(dst_meta) = unchanged {
            self.counters.unchanged.fetch_add(1, Ordering::Relaxed);
            return self.fix_metadata(&dst, meta, dst_meta);
        }
        if let Some(m) = existing.filter(|m| m.is_dir()) {
            self.remove(&dst, m)?;
        }
        let tmp = dst_dir.join(temporary_name(name));
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| StrategyError::io("creating", &tmp, e))?;
        let finish = || -> Result<(), StrategyError> {
            if self.preserve_owner {
                std::os::unix::fs::lchown(&tmp, Some(meta.uid()), Some(meta.gid()))
                    .map_err(|e| StrategyError::io("setting the owner of", &tmp, e))?;
            }
            set_symlink_times(&tmp, meta)?;
            fs::rename(&tmp, &dst).map_err(|e| StrategyError::io("renaming into place", &dst, e))
        };
        if let Err(e) = finish() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.counters.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Make an unchanged entry's owner, mode and times those of the source.
    fn fix_metadata(&self, dst: &Path, src_meta: &Metadata, dst_meta: &Metadata) -> Result<(), StrategyError> {
        let is_symlink = dst_meta.file_type().is_symlink();
        if self.preserve_owner && (src_meta.uid() != dst_meta.uid() || src_meta.gid() != dst_meta.gid()) {
            std::os::unix::fs::lchown(dst, Some(src_meta.uid()), Some(src_meta.gid()))
                .map_err(|e| StrategyError::io("setting the owner of", dst, e))?;
        }
        if !is_symlink && (src_meta.mode() & 0o7777) != (dst_meta.mode() & 0o7777) {
            fs::set_permissions(dst, fs::Permissions::from_mode(src_meta.mode() & 0o7777))
                .map_err(|e| StrategyError::io("setting the mode of", dst, e))?;
        }
        if src_meta.mtime() != dst_meta.mtime() || src_meta.mtime_nsec() != dst_meta.mtime_nsec() {
            set_symlink_times(dst, src_meta)?;
        }
        Ok(())
    }

    fn apply_dir_metadata(&self, dst: &Path, src_meta: &Metadata) -> Result<(), StrategyError> {
        let dst_meta = fs::symlink_metadata(dst).map_err(|e| StrategyError::io("reading", dst, e))?;
        if self.preserve_owner && (src_meta.uid() != dst_meta.uid() || src_meta.gid() != dst_meta.gid()) {
            std::os::unix::fs::lchown(dst, Some(src_meta.uid()), Some(src_meta.gid()))
                .map_err(|e| StrategyError::io("setting the owner of", dst, e))?;
        }
        if (src_meta.mode() & 0o7777) != (dst_meta.mode() & 0o7777) {
            fs::set_permissions(dst, fs::Permissions::from_mode(src_meta.mode() & 0o7777))
                .map_err(|e| StrategyError::io("setting the mode of", dst, e))?;
        }
        // Only when different: rewriting every folder's times would dirty thousands of inodes
        // per pass for the final syncfs to write.
        if src_meta.mtime() != dst_meta.mtime() || src_meta.mtime_nsec() != dst_meta.mtime_nsec() {
            filetime::set_file_times(
                dst,
                FileTime::from_last_access_time(src_meta),
                FileTime::from_last_modification_time(src_meta),
            )
            .map_err(|e| StrategyError::io("setting the times of", dst, e))?;
        }
        Ok(())
    }

    /// Delete a destination entry the source no longer has, counting the files it held.
    fn remove(&self, path: &Path, meta: &Metadata) -> Result<(), StrategyError> {
        let result = if meta.is_dir() {
            let files = walkdir::WalkDir::new(path)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| !e.file_type().is_dir())
                .count() as u64;
            self.counters.removed.fetch_add(files, Ordering::Relaxed);
            fs::remove_dir_all(path)
        } else {
            self.counters.removed.fetch_add(1, Ordering::Relaxed);
            fs::remove_file(path)
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StrategyError::io("removing", path, e)),
            _ => Ok(()),
        }
    }
}

struct SourceEntry {
    name: OsString,
    meta: Metadata,
}

/// A folder's entries with their own (not followed) metadata; entries that vanish between the
/// listing and the stat are left out.
fn read_entries(dir: &Path) -> io::Result<Vec<SourceEntry>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        match entry.metadata() {
            Ok(meta) => entries.push(SourceEntry { name: entry.file_name(), meta }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", entry.path().display())));
            }
        }
    }
    Ok(entries)
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// Gone, or turned into a symlink (`O_NOFOLLOW` answers ELOOP), since it was listed.
fn is_vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Compare two files' bytes (both are expected to have the same size).
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let mut fa = match open_no_follow(a) {
        Ok(f) => f,
        Err(e) if is_vanished(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut fb = File::open(b)?;
    let mut buf_a = vec![0u8; 64 * 1024];
    let mut buf_b = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut fa, &mut buf_a)?;
        let m = read_full(&mut fb, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `.<name>.bbdiy-<random>.tmp` beside the final name: never mistaken for the real file, and
/// deleted by the next pass (the source has no such entry) if a pass is interrupted.
fn temporary_name(name: &OsStr) -> OsString {
    let mut random = [0u8; 6];
    // Without randomness the pid and time still make a name no one else uses.
    if getrandom::fill(&mut random).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        random[..4].copy_from_slice(&nanos.to_le_bytes());
        random[4..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
    }
    let mut tmp = OsString::from(".");
    // Keep temporary names within NAME_MAX even for long names.
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
    let kept = &bytes[..bytes.len().min(200)];
    tmp.push(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(kept));
    tmp.push(format!(".bbdiy-{}.tmp", hex::encode(random)));
    tmp
}

fn set_symlink_times(path: &Path, meta: &Metadata) -> Result<(), StrategyError> {
    filetime::set_symlink_file_times(
        path,
        FileTime::from_last_access_time(meta),
        FileTime::from_last_modification_time(meta),
    )
    .map_err(|e| StrategyError::io("setting the times of", path, e))
}

fn modified(meta: &Metadata) -> SystemTime {
    unix_time(meta.mtime(), meta.mtime_nsec())
}

fn changed(meta: &Metadata) -> SystemTime {
    unix_time(meta.ctime(), meta.ctime_nsec())
}

fn unix_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs) + nanos,
        // Before 1970: certainly older than any pass.
        Err(_) => UNIX_EPOCH,
    }
}
