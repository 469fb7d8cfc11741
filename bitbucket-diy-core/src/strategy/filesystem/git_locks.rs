//! Placeholder until the filesystem work lands (replaced by the real implementation).

use std::path::{Path, PathBuf};

/// Remove stale git lock files from the repositories under `home`.
pub fn remove_stale_git_locks(_home: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(Vec::new())
}
