//! The part of a working folder that makes up a backup, walked in archive order.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::archive_format::EntryKind;
use crate::strategy::{ArchiveError, StepContext, WorkingFolder};

use super::policy;

/// The folders of a working folder that are archived, in archive order. Never the state folder.
pub(crate) const ARCHIVED_FOLDERS: [&str; 3] =
    [WorkingFolder::DATABASE, WorkingFolder::HOME, WorkingFolder::DATA_STORES];

/// One file, folder or symlink of the tree.
#[derive(Debug)]
pub(crate) struct TreeEntry {
    /// `/`-separated path relative to the working folder's root.
    pub rel: String,
    /// Where it is.
    pub abs: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Its `lstat`.
    pub meta: Metadata,
    /// Its target, for symlinks.
    pub link: Option<String>,
}

impl TreeEntry {
    /// Permission bits.
    pub fn mode(&self) -> u32 {
        self.meta.mode() & 0o7777
    }

    /// Modification time in whole seconds since the epoch (tar's resolution).
    pub fn mtime(&self) -> i64 {
        self.meta.mtime()
    }
}

/// Walks the archived folders of `root` that exist, depth first, each folder before its content,
/// names in byte order, calling `visit` for each entry. Symlinks are reported, never followed.
/// Sockets, fifos and devices cannot be restored meaningfully: they are skipped with a warning.
pub(crate) fn walk(
    root: &Path,
    ctx: &StepContext,
    mut visit: impl FnMut(TreeEntry) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    for folder in ARCHIVED_FOLDERS {
        let top = root.join(folder);
        match fs::symlink_metadata(&top) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ArchiveError::io("reading", top, e)),
        }
        // follow_links(false) on the root too: a symlinked `bitbucket-home` is stored as the
        // symlink it is, like any other, rather than silently archiving another tree.
        let walker = walkdir::WalkDir::new(&top).follow_links(false).follow_root_links(false).sort_by_file_name();
        for item in walker {
            if ctx.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            let item = item.map_err(|e| {
                let path = e.path().map(Path::to_owned).unwrap_or_else(|| top.clone());
                ArchiveError::io("walking", path, e.into())
            })?;
            let abs = item.path().to_owned();
            let meta = item.metadata().map_err(|e| ArchiveError::io("reading", &abs, e.into()))?;
            let rel = relative_name(root, &abs)?;
            let file_type = meta.file_type();
            let (kind, link) = if file_type.is_dir() {
                (EntryKind::Dir, None)
            } else if file_type.is_file() {
                (EntryKind::File, None)
            } else if file_type.is_symlink() {
                let target = fs::read_link(&abs).map_err(|e| ArchiveError::io("reading the symlink", &abs, e))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| ArchiveError::io("reading the symlink", &abs, not_utf8("its target")))?;
                (EntryKind::Symlink, Some(target))
            } else {
                ctx.warn(format!("skipping {}: sockets, fifos and device files are not archived", abs.display()));
                continue;
            };
            visit(TreeEntry { rel, abs, kind, meta, link })?;
        }
    }
    Ok(())
}

/// Warns when `root` holds none of the archived folders: the backup would be empty, which is
/// almost always a misconfigured working folder.
pub(crate) fn warn_if_nothing_to_archive(root: &Path, ctx: &StepContext) {
    if !ARCHIVED_FOLDERS.iter().any(|f| fs::symlink_metadata(root.join(f)).is_ok()) {
        ctx.warn(format!(
            "{} holds none of {}: the backup has no content",
            root.display(),
            ARCHIVED_FOLDERS.join(", ")
        ));
    }
}

/// Total size of the regular files `walk` would visit (for progress).
pub(crate) fn total_file_bytes(root: &Path, ctx: &StepContext) -> Result<u64, ArchiveError> {
    // A separate pass of lstat calls only: cheap next to reading the content, and it keeps memory
    // flat instead of holding every entry of a multi-million-file home.
    let quiet = StepContext::new(
        ctx.backup_id().clone(),
        ctx.working().clone(),
        std::sync::Arc::new(crate::events::NoEvents),
        ctx.cancellation().clone(),
    );
    let mut bytes = 0;
    walk(root, &quiet, |entry| {
        if entry.kind == EntryKind::File {
            bytes += entry.meta.len();
        }
        Ok(())
    })?;
    Ok(bytes)
}

/// Opens a regular file of the tree for reading without following a symlink that may have
/// replaced it since the walk.
pub(crate) fn open_no_follow(path: &Path) -> Result<File, ArchiveError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| ArchiveError::io("opening", path, e))
}

fn relative_name(root: &Path, abs: &Path) -> Result<String, ArchiveError> {
    let rel = abs
        .strip_prefix(root)
        .map_err(|_| ArchiveError::io("walking", abs, io::Error::other("path is outside the working folder")))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let name = parts.map(|p| p.join("/")).ok_or_else(|| ArchiveError::io("archiving", abs, not_utf8("its name")))?;
    debug_assert!(policy::normalize_path(name.as_bytes()).is_ok());
    Ok(name)
}

fn not_utf8(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} is not valid UTF-8, which the manifest cannot record; rename it"),
    )
}
