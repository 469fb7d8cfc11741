//! Which entries an archive may hold: the rules `verify` and `extract` apply to every entry before
//! anything is written, shared by every built-in archive strategy.
//!
//! - paths are relative, UTF-8, without `..`; `.` and empty components are dropped;
//! - `.bitbucket-diy/` is reserved for the metadata and the manifest;
//! - only files, folders and symlinks (no hardlinks, devices, fifos, sparse or unknown entries);
//! - entries come in the order the writer (`tree::walk`) puts them: the archived folders in
//!   their fixed order, each folder before its content, the names within a folder in byte order.
//!   An archive in that order holds no path twice, no entry below a symlink or a file, and no
//!   symlink or file in place of a folder that holds entries; so extraction never goes through a
//!   symlink, and what `verify` accepts, `extract` can write. Checking it takes only the chain of
//!   folders leading to the current entry: memory stays flat however many entries there are;
//! - symlink targets are relative, and their `..` components only lead: `../../x` is judged
//!   exactly from the link's own (real) folder, whereas `a/../..` could climb out through `a`
//!   if `a` is itself a symlink, so it is refused rather than resolved on paper.

use crate::archive_format::{EntryKind, MANIFEST_PATH, METADATA_PATH};
use crate::strategy::WorkingFolder;

use super::tree::ARCHIVED_FOLDERS;

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

/// Admits the entries of an archive one by one, in order (see the module's rules).
#[derive(Debug, Default)]
pub(crate) struct EntryRules {
    /// The entries leading to the last one admitted, outermost first; the last one itself ends
    /// the chain, whatever its kind.
    chain: Vec<Chained>,
    /// Position in [`ARCHIVED_FOLDERS`] of the last top-level entry.
    last_top: Option<usize>,
}

#[derive(Debug)]
struct Chained {
    path: String,
    kind: EntryKind,
    /// The name of its last entry admitted so far (folders only).
    last_child: Option<String>,
}

impl EntryRules {
    /// Admits the next entry (path normalized), or says why it is refused.
    pub(crate) fn admit(&mut self, path: &str, kind: EntryKind, link: Option<&str>) -> Result<(), String> {
        if path.split('/').next() == Some(WorkingFolder::STATE) {
            return Err(format!(
                "`{}/` is reserved for bitbucket-diy's metadata ({METADATA_PATH}, {MANIFEST_PATH})",
                WorkingFolder::STATE
            ));
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        // Whatever is not on the way to this entry was complete before it.
        while self.chain.last().is_some_and(|last| !is_inside(parent, &last.path)) {
            self.chain.pop();
        }
        match self.chain.last_mut() {
            None if parent.is_empty() => self.admit_top(name)?,
            None => return Err(format!("its folder `{parent}` is not in the archive before it")),
            Some(last) if last.kind == EntryKind::Symlink => {
                return Err(format!("the path goes through the symlink `{}`", last.path));
            }
            Some(last) if last.kind == EntryKind::File => {
                return Err(format!("the path goes below the file `{}`", last.path));
            }
            Some(last) if last.path != parent => {
                return Err(format!("its folder `{parent}` is not in the archive before it"));
            }
            Some(folder) => {
                match folder.last_child.as_deref() {
                    Some(previous) if previous == name => {
                        return Err("the path appears twice in the archive".to_owned());
                    }
                    Some(previous) if previous > name => {
                        return Err(format!(
                            "it comes after `{parent}/{previous}`: the entries of a folder are in name order"
                        ));
                    }
                    _ => {}
                }
                folder.last_child = Some(name.to_owned());
            }
        }
        if kind == EntryKind::Symlink {
            check_symlink_target(path, link.unwrap_or_default())?;
        }
        self.chain.push(Chained { path: path.to_owned(), kind, last_child: None });
        Ok(())
    }

    /// A top-level entry: one of the archived folders, in their order, each once.
    fn admit_top(&mut self, name: &str) -> Result<(), String> {
        let Some(position) = ARCHIVED_FOLDERS.iter().position(|folder| *folder == name) else {
            return Err(format!("a backup holds only {} at its top level", ARCHIVED_FOLDERS.join(", ")));
        };
        match self.last_top {
            Some(last) if last == position => Err("the path appears twice in the archive".to_owned()),
            Some(last) if last > position => Err(format!(
                "it comes after `{}`: the archived folders are in the order {}",
                ARCHIVED_FOLDERS[last],
                ARCHIVED_FOLDERS.join(", ")
            )),
            _ => {
                self.last_top = Some(position);
                Ok(())
            }
        }
    }
}

/// Whether `path` is `folder` or lies below it.
pub(crate) fn is_inside(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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
    fn no_entry_goes_through_a_symlink_or_below_a_file() {
        let mut rules = EntryRules::default();
        let home = "bitbucket-home";
        rules.admit(home, EntryKind::Dir, None).unwrap();
        rules.admit("bitbucket-home/d", EntryKind::Dir, None).unwrap();
        rules.admit("bitbucket-home/d/f", EntryKind::File, None).unwrap();
        let refused = rules.admit("bitbucket-home/d/f/g", EntryKind::File, None).unwrap_err();
        assert!(refused.contains("below the file"), "{refused}");
        rules.admit("bitbucket-home/l", EntryKind::Symlink, Some("d")).unwrap();
        let refused = rules.admit("bitbucket-home/l/f", EntryKind::File, None).unwrap_err();
        assert!(refused.contains("through the symlink"), "{refused}");
        let refused = rules.admit("bitbucket-home/l/x/y", EntryKind::File, None).unwrap_err();
        assert!(refused.contains("through the symlink"), "{refused}");
        assert!(rules.admit(".bitbucket-diy/x", EntryKind::File, None).is_err());
    }

    #[test]
    fn entries_come_in_the_writers_order_each_once() {
        let cases: &[(&[(&str, EntryKind)], &str)] = &[
            (
                &[
                    ("bitbucket-home", EntryKind::Dir),
                    ("bitbucket-home/a", EntryKind::File),
                    ("bitbucket-home/a", EntryKind::File),
                ],
                "twice",
            ),
            (
                &[
                    ("bitbucket-home", EntryKind::Dir),
                    ("bitbucket-home/d", EntryKind::Dir),
                    ("bitbucket-home/d/x", EntryKind::File),
                    ("bitbucket-home/d", EntryKind::File),
                ],
                "twice",
            ),
            (
                &[
                    ("bitbucket-home", EntryKind::Dir),
                    ("bitbucket-home/b", EntryKind::File),
                    ("bitbucket-home/a", EntryKind::File),
                ],
                "name order",
            ),
            (
                &[("bitbucket-home", EntryKind::Dir), ("bitbucket-home/d/x", EntryKind::File)],
                "not in the archive before it",
            ),
            (&[("bitbucket-home/x", EntryKind::File)], "not in the archive before it"),
            (&[("bitbucket-home", EntryKind::Dir), ("bitbucket-db", EntryKind::Dir)], "order"),
            (&[("bitbucket-home", EntryKind::Dir), ("bitbucket-home", EntryKind::Dir)], "twice"),
            (&[("stray", EntryKind::File)], "top level"),
        ];
        for (entries, reason) in cases {
            let mut rules = EntryRules::default();
            let (last, before) = entries.split_last().unwrap();
            for (path, kind) in before {
                rules.admit(path, *kind, None).unwrap();
            }
            let refused = rules.admit(last.0, last.1, None).expect_err(&format!("{entries:?} admitted"));
            assert!(refused.contains(reason), "{entries:?}: {refused}");
        }

        let mut rules = EntryRules::default();
        for (path, kind) in [
            ("bitbucket-db", EntryKind::Dir),
            ("bitbucket-db/x", EntryKind::File),
            ("bitbucket-home", EntryKind::Dir),
            ("bitbucket-home/a", EntryKind::Dir),
            ("bitbucket-home/a/z", EntryKind::File),
            ("bitbucket-home/a-b", EntryKind::File),
            ("bitbucket-home/b", EntryKind::Dir),
            ("bitbucket-data-stores", EntryKind::Dir),
        ] {
            rules.admit(path, kind, None).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }
}
