//! Fork alternates after a restore to another place.
//!
//! Bitbucket builds forks with `git clone --shared`: the fork borrows its parent's objects
//! through `objects/info/alternates`, which holds the parent's objects folder as an **absolute**
//! path. Bitbucket rewrites those paths itself when, at startup, it notices its home has moved
//! (BSERV-9761 describes the mechanism and where it falls short). A home restored elsewhere
//! therefore points its forks at the *old* home until Bitbucket starts, and if the old home still
//! exists (a restore rehearsal beside the live instance) the restored forks silently read the live
//! instance's objects and `git fsck` cannot tell. So the restore rewrites them at once, keeping
//! them absolute as Bitbucket expects: a path into the old home's
//! `shared/data/repositories/` or into an original data store is mapped into the restored one,
//! when the repository it names was restored. Paths we cannot map are left as they are.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use crate::strategy::filesystem::git_locks::find_bare_repositories;

/// The repository folder of a Bitbucket home, relative to the home.
const HOME_REPOSITORIES: &[&str] = &["shared", "data", "repositories"];

/// Rewrite the absolute alternates of every repository in the restored `home` and restored data
/// stores. `data_stores` pairs each data store's original path (as backed up) with where it was
/// restored. Returns the `alternates` files rewritten.
pub fn relink_fork_alternates(home: &Path, data_stores: &[(PathBuf, PathBuf)]) -> io::Result<Vec<PathBuf>> {
    let mut repos = find_bare_repositories(home)?;
    for (_, restored) in data_stores {
        repos.extend(find_bare_repositories(restored)?);
    }
    let mut rewritten = Vec::new();
    for repo in repos {
        let file = repo.join("objects").join("info").join("alternates");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("reading {}: {e}", file.display())));
            }
        };
        let mut changed = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| match relinked(line, home, data_stores) {
                Some(new) if new != line => {
                    changed = true;
                    new
                }
                _ => line.to_owned(),
            })
            .collect();
        if changed {
            write_replacing(&file, &(lines.join("\n") + "\n"))?;
            rewritten.push(file);
        }
    }
    Ok(rewritten)
}

/// The new path for one alternates line, if it points into something that was restored.
fn relinked(line: &str, home: &Path, data_stores: &[(PathBuf, PathBuf)]) -> Option<String> {
    let old = Path::new(line.trim());
    if line.starts_with('#') || !old.is_absolute() {
        return None;
    }
    for (original, restored) in data_stores {
        if let Ok(rest) = old.strip_prefix(original) {
            let candidate = restored.join(rest);
            return candidate.is_dir().then(|| candidate.to_string_lossy().into_owned());
        }
    }
    let names: Vec<&std::ffi::OsStr> = old
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    // The last occurrence: an old home may itself sit below a folder named like ours.
    let start = (0..names.len().saturating_sub(HOME_REPOSITORIES.len() - 1))
        .rev()
        .find(|&i| HOME_REPOSITORIES.iter().enumerate().all(|(k, want)| names.get(i + k).is_some_and(|n| n == want)))?;
    let candidate: PathBuf = names[start..].iter().fold(home.to_owned(), |acc, n| acc.join(n));
    candidate.is_dir().then(|| candidate.to_string_lossy().into_owned())
}

/// Replace `path` with `content` through a temporary file in the same folder.
fn write_replacing(path: &Path, content: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(content.as_bytes())?;
    tmp.as_file().sync_all()?;
    let perms = std::fs::metadata(path)?.permissions();
    std::fs::set_permissions(tmp.path(), perms)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_old_home_and_data_stores() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("new-home");
        let parent = home.join("shared/data/repositories/1/objects");
        std::fs::create_dir_all(&parent).unwrap();
        let store = dir.path().join("new-store");
        std::fs::create_dir_all(store.join("repositories/00/01/5/objects")).unwrap();
        let stores = vec![(PathBuf::from("/old/store"), store.clone())];

        let from_home = relinked("/var/atl/bitbucket/shared/data/repositories/1/objects", &home, &stores);
        assert_eq!(from_home.as_deref(), Some(parent.to_str().unwrap()));
        let from_store = relinked("/old/store/repositories/00/01/5/objects", &home, &stores);
        assert_eq!(from_store, Some(store.join("repositories/00/01/5/objects").to_string_lossy().into_owned()));
        assert_eq!(relinked("/var/atl/bitbucket/shared/data/repositories/9/objects", &home, &stores), None);
        assert_eq!(relinked("../../1/objects", &home, &stores), None);
    }
}
