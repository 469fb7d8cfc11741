//! Which entries an archive may hold: the rules `verify` and `extract` apply to every entry before
//! anything is written, shared by every built-in archive strategy.
//!
//! - paths are relative, UTF-8, without `..`; `.` and empty components are dropped;
//! - `.bitbucket-diy/` is reserved for the metadata and the manifest;
//! - only files, folders and symlinks (no hardlinks, devices, fifos, sparse or unknown entries);
//! - no path appears twice;
//! - no entry lies below a symlink or a file of the archive, and no symlink or file replaces a
//!   folder that holds entries: extraction never goes through a symlink, and what `verify`
//!   accepts, `extract` can write;
//! - symlink targets are relative, and their `..` components only lead: `../../x` is judged
//!   exactly from the link's own (real) folder, whereas `a/../..` could climb out through `a`
//!   if `a` is itself a symlink, so it is refused rather than resolved on paper.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use crate::archive_format::{EntryKind, MANIFEST_PATH, METADATA_PATH};
use crate::strategy::WorkingFolder;

/// Normalizes a stored entry path, or says why it is refused.
pub(crate) fn normalize_path(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "its name is not valid UTF-8".to_owned())?;
    if text.starts_with('/') {
        return Err("absolute path".to_owned());
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the path contains `..`".to_owned()),
            normal => parts.push(normal),
        }
    }
    if parts.is_empty() {
        return Err("empty path".to_owned());
    }
    Ok(parts.join("/"))
}

/// Checks a symlink at `link_path` (normalized) pointing to `target`, or says why it is refused.
pub(crate) fn check_symlink_target(link_path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("the symlink has an empty target".to_owned());
    }
    if target.starts_with('/') {
        return Err(format!("the symlink points to the absolute path `{target}`"));
    }
    let parent_depth = link_path.split('/').count() - 1;
    let mut ups = 0usize;
    let mut seen_name = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if seen_name => {
                return Err(format!(
                    "the symlink target `{target}` has `..` after a folder name, which could leave the \
                     target through another symlink"
                ));
            }
            ".." => ups += 1,
            _ => seen_name = true,
        }
    }
    if ups > parent_depth {
        return Err(format!("the symlink target `{target}` points outside the extracted tree"));
    }
    Ok(())
}

/// The entry kinds an archive may hold, from a tar entry type, or why it is refused.
pub(crate) fn entry_kind(entry_type: tar::EntryType) -> Result<EntryKind, String> {
    use tar::EntryType;
    match entry_type {
        EntryType::Regular | EntryType::Continuous => Ok(EntryKind::File),
        EntryType::Directory => Ok(EntryKind::Dir),
        EntryType::Symlink => Ok(EntryKind::Symlink),
        EntryType::Link => Err("hardlinks are refused (bitbucket-diy never writes them)".to_owned()),
        EntryType::Char | EntryType::Block => Err("device files are refused".to_owned()),
        EntryType::Fifo => Err("fifos are refused".to_owned()),
        EntryType::GNUSparse => Err("sparse files are not supported".to_owned()),
        other => Err(format!("entry type {:?} is not supported", other.as_byte() as char)),
    }
}

/// Tracks the entries seen so far to refuse duplicates and any path through a symlink.
///
/// Paths are remembered as 64-bit hashes under a key drawn per archive, not as strings: a home of
/// 300 000 entries would otherwise hold every path several times over. A collision could only
/// refuse a sound archive (about one chance in 10⁸ at that size, and no archive can be built to
/// cause one without the key), never admit an unsafe entry: a path that is there always matches.
#[derive(Debug, Default)]
pub(crate) struct EntryRules {
    keys: RandomState,
    paths: HashSet<u64>,
    folders_in_use: HashSet<u64>,
    symlinks: HashSet<u64>,
    files: HashSet<u64>,
}

impl EntryRules {
    fn key(&self, path: &str) -> u64 {
        self.keys.hash_one(path)
    }

    /// Admits one entry (path normalized), or says why it is refused.
    pub(crate) fn admit(&mut self, path: &str, kind: EntryKind, link: Option<&str>) -> Result<(), String> {
        if path.split('/').next() == Some(WorkingFolder::STATE) {
            return Err(format!(
                "`{}/` is reserved for bitbucket-diy's metadata ({METADATA_PATH}, {MANIFEST_PATH})",
                WorkingFolder::STATE
            ));
        }
        for ancestor in ancestors(path) {
            let key = self.key(ancestor);
            if self.symlinks.contains(&key) {
                return Err(format!("the path goes through the symlink `{ancestor}`"));
            }
            if self.files.contains(&key) {
                return Err(format!("the path goes below the file `{ancestor}`"));
            }
        }
        let key = self.key(path);
        if self.paths.contains(&key) {
            return Err("the path appears twice in the archive".to_owned());
        }
        match kind {
            EntryKind::Dir => {}
            EntryKind::File | EntryKind::Symlink if self.folders_in_use.contains(&key) => {
                return Err("it would replace a folder that holds other entries".to_owned());
            }
            EntryKind::File => {
                self.files.insert(key);
            }
            EntryKind::Symlink => {
                check_symlink_target(path, link.unwrap_or_default())?;
                self.symlinks.insert(key);
            }
        }
        for ancestor in ancestors(path) {
            if !self.folders_in_use.insert(self.key(ancestor)) {
                break;
            }
        }
        self.paths.insert(key);
        Ok(())
    }
}

/// `a/b/c` → `a/b`, `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.rmatch_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(normalize_path(b"./bitbucket-home//x/").unwrap(), "bitbucket-home/x");
        for bad in [&b"/etc/passwd"[..], b"a/../../b", b"..", b"", b"./", b"a/\xff"] {
            assert!(normalize_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn symlink_targets_stay_inside() {
        assert!(check_symlink_target("a/b/link", "../c").is_ok());
        assert!(check_symlink_target("a/b/link", "../../c").is_ok());
        assert!(check_symlink_target("a/b/link", "c/d").is_ok());
        assert!(check_symlink_target("a/b/link", "../../../c").is_err());
        assert!(check_symlink_target("link", "/etc").is_err());
        assert!(check_symlink_target("a/link", "b/../..").is_err());
        assert!(check_symlink_target("a/link", "").is_err());
    }

    #[test]
    fn no_entry_goes_through_a_symlink() {
        let mut rules = EntryRules::default();
        rules.admit("h", EntryKind::Dir, None).unwrap();
        rules.admit("h/l", EntryKind::Symlink, Some("x")).unwrap();
        assert!(rules.admit("h/l/f", EntryKind::File, None).is_err());
        assert!(rules.admit("h/l", EntryKind::File, None).is_err());
        rules.admit("h/d/f", EntryKind::File, None).unwrap();
        assert!(rules.admit("h/d", EntryKind::Symlink, Some("x")).is_err());
        rules.admit("h/f", EntryKind::File, None).unwrap();
        assert!(rules.admit("h/f/g", EntryKind::File, None).is_err());
        rules.admit("h/e/f", EntryKind::File, None).unwrap();
        assert!(rules.admit("h/e", EntryKind::File, None).is_err());
        assert!(rules.admit(".bitbucket-diy/x", EntryKind::File, None).is_err());
    }
}
