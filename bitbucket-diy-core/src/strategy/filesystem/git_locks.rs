//! Removal of stale git lock files after a restore.
//!
//! A copy taken from a live repository (the pre-lock pass, or a snapshot) can hold the lock files
//! git creates while it updates a ref, the config or the index. After a restore nothing holds
//! them, yet git refuses to touch what they guard ("Unable to create '…/HEAD.lock': File
//! exists"), so pushes and merges fail until someone deletes them by hand. The reference scripts
//! meant to delete them but quoted their globs, so they never did.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

/// Lock files at the top of a bare repository: `HEAD`, `config`, `index`, `gc`, `packed-refs`
/// and Bitbucket's `stash-packed-refs`, with `.lock` or `.pid`, plus `shallow.lock` and
/// `gc.log.lock`.
const TOP_LEVEL_LOCKS: &[&str] = &[
    "HEAD.lock",
    "HEAD.pid",
    "config.lock",
    "config.pid",
    "index.lock",
    "index.pid",
    "gc.lock",
    "gc.pid",
    "gc.log.lock",
    "packed-refs.lock",
    "packed-refs.pid",
    "stash-packed-refs.lock",
    "stash-packed-refs.pid",
    "shallow.lock",
];

/// Folders of a bare repository where any `*.lock` file is a stale ref lock.
const REF_FOLDERS: &[&str] = &["refs", "stash-refs", "logs"];

/// Where repositories live below a copied root: a Bitbucket home, a Mesh home, a data store.
const REPOSITORY_ROOTS: &[&str] = &["shared/data/repositories", "data/repositories", "repositories"];

/// Remove stale git lock files from every bare repository below `root`: a restored Bitbucket
/// home (`shared/data/repositories/`), a Mesh home (`data/repositories/`) or a data store
/// (`repositories/`). Returns the files removed. Nothing but the lock files listed in
/// bitbucket-api.md is touched: `HEAD`, `config`, `index`, `gc`, `packed-refs` and
/// `stash-packed-refs` with `.lock` or `.pid`, `shallow.lock`, `gc.log.lock`, and any `*.lock`
/// below `refs/`, `stash-refs/` and `logs/`.
///
/// Run it only on a restored copy that no git process uses: on a live home it would break
/// running operations.
pub fn remove_stale_git_locks(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for repo in find_bare_repositories(root)? {
        removed.extend(remove_locks_in_repository(&repo)?);
    }
    Ok(removed)
}

/// Every bare repository below the repository folders of `root` (see
/// [`remove_stale_git_locks`]), sorted. A folder is a bare repository when it holds `HEAD`,
/// `objects/` and `refs/`; the search does not descend into repositories.
pub fn find_bare_repositories(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut repos = Vec::new();
    for relative in REPOSITORY_ROOTS {
        let base = root.join(relative);
        if !base.is_dir() {
            continue;
        }
        let mut walk = walkdir::WalkDir::new(&base).follow_links(false).sort_by_file_name().into_iter();
        while let Some(entry) = walk.next() {
            let entry = entry.map_err(io::Error::from)?;
            if !entry.file_type().is_dir() {
                continue;
            }
            if is_bare_repository(entry.path()) {
                repos.push(entry.path().to_owned());
                walk.skip_current_dir();
            }
        }
    }
    repos.sort();
    repos.dedup();
    Ok(repos)
}

fn is_bare_repository(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

fn remove_locks_in_repository(repo: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in TOP_LEVEL_LOCKS {
        let path = repo.join(name);
        if remove_if_regular_file(&path)? {
            removed.push(path);
        }
    }
    for folder in REF_FOLDERS {
        let base = repo.join(folder);
        if !base.is_dir() {
            continue;
        }
        for entry in walkdir::WalkDir::new(&base).follow_links(false) {
            let entry = entry.map_err(io::Error::from)?;
            let is_lock = entry.file_type().is_file() && entry.path().extension() == Some(OsStr::new("lock"));
            if is_lock && remove_if_regular_file(entry.path())? {
                removed.push(entry.path().to_owned());
            }
        }
    }
    Ok(removed)
}

fn remove_if_regular_file(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))),
        },
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io::Error::new(e.kind(), format!("inspecting {}: {e}", path.display()))),
    }
}
