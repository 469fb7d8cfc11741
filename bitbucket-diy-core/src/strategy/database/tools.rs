//! Finding the database client tools.

use std::path::{Path, PathBuf};

/// `name` inside `bin_dir` when one is configured, else `name` looked up on `PATH`.
pub(crate) fn tool_path(bin_dir: Option<&Path>, name: &str) -> PathBuf {
    match bin_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The hint of a missing-tool error: how to install it, and where we looked.
pub(crate) fn missing_hint(install: &str, bin_dir: Option<&Path>) -> String {
    match bin_dir {
        Some(dir) => format!("not in database.bin_dir ({}); {install}, or fix bin_dir", dir.display()),
        None => format!("{install}, or set database.bin_dir to the folder holding it"),
    }
}
