//! A small tmpfs, for tests of a full disk (needs root).

use std::path::{Path, PathBuf};

/// A real full disk: a tmpfs of `bytes` mounted at `path` (created), unmounted when dropped.
/// Needs root, as the test machine gives.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(path: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a {bytes}-byte tmpfs on {} failed: the test needs root", path.display());
        Self(path.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there must not keep the mount alive.
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
