//! Byte-for-byte comparison of two trees, for tests of copies and restores.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

struct Entry {
    kind: Kind,
    mode: u32,
}

/// Compare the trees at `a` and `b`: the same relative paths, file types, permission bits, file
/// contents and symlink targets (symlinks are compared, never followed). Paths (relative to the
/// roots) for which `ignore` returns true are skipped on both sides, with everything below them.
/// Modification times and owners are not compared. Returns a description of the first
/// differences.
pub fn compare_trees(a: &Path, b: &Path, ignore: impl Fn(&Path) -> bool) -> Result<(), String> {
    let left = list(a, &ignore)?;
    let right = list(b, &ignore)?;
    let mut problems = Vec::new();
    for path in left.keys().filter(|p| !right.contains_key(*p)) {
        problems.push(format!("only in {}: {}", a.display(), path.display()));
    }
    for path in right.keys().filter(|p| !left.contains_key(*p)) {
        problems.push(format!("only in {}: {}", b.display(), path.display()));
    }
    for (path, l) in &left {
        let Some(r) = right.get(path) else { continue };
        if l.kind != r.kind {
            problems.push(format!("{}: {:?} vs {:?}", path.display(), l.kind, r.kind));
            continue;
        }
        if l.kind != Kind::Symlink && l.mode != r.mode {
            problems.push(format!("{}: mode {:o} vs {:o}", path.display(), l.mode, r.mode));
        }
        match l.kind {
            Kind::File => {
                let (x, y) = (read(&a.join(path))?, read(&b.join(path))?);
                if x != y {
                    problems.push(format!("{}: content differs ({} vs {} bytes)", path.display(), x.len(), y.len()));
                }
            }
            Kind::Symlink => {
                let x = fs::read_link(a.join(path)).map_err(|e| format!("{}: {e}", path.display()))?;
                let y = fs::read_link(b.join(path)).map_err(|e| format!("{}: {e}", path.display()))?;
                if x != y {
                    problems.push(format!("{}: symlink to {} vs {}", path.display(), x.display(), y.display()));
                }
            }
            Kind::Dir | Kind::Other => {}
        }
        if problems.len() >= 20 {
            break;
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

fn list(root: &Path, ignore: &impl Fn(&Path) -> bool) -> Result<BTreeMap<PathBuf, Entry>, String> {
    let mut entries = BTreeMap::new();
    let mut walk = walkdir::WalkDir::new(root).follow_links(false).min_depth(1).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| format!("walking {}: {e}", root.display()))?;
        let relative = entry.path().strip_prefix(root).map_err(|e| e.to_string())?.to_owned();
        if ignore(&relative) {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        let meta = entry.metadata().map_err(|e| format!("{}: {e}", entry.path().display()))?;
        let kind = match entry.file_type() {
            t if t.is_symlink() => Kind::Symlink,
            t if t.is_dir() => Kind::Dir,
            t if t.is_file() => Kind::File,
            _ => Kind::Other,
        };
        entries.insert(relative, Entry { kind, mode: meta.permissions().mode() & 0o7777 });
    }
    Ok(entries)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}
