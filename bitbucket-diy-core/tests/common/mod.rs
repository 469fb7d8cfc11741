//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitbucket_diy_core::archive_format::{BackupMetadata, FORMAT_VERSION, StrategyRecord};
use bitbucket_diy_core::config::{FilesystemConfig, FilesystemType};
use bitbucket_diy_core::events::RecordedEvents;
use bitbucket_diy_core::strategy::{RestoreContext, StepContext, WorkingFolder};
use tokio_util::sync::CancellationToken;

/// `[filesystem]` for `home` with defaults.
pub fn fs_config(kind: FilesystemType, home: &Path) -> FilesystemConfig {
    FilesystemConfig {
        kind,
        home: home.to_owned(),
        data_stores: Vec::new(),
        exclude: Vec::new(),
        exclude_repos: Vec::new(),
        threads: Some(2),
        rsync_options: Vec::new(),
        prepare_command: None,
        backup_command: None,
        restore_command: None,
        atomic_snapshot: false,
    }
}

/// A step context writing into `work`, recording events.
pub fn step_ctx(work: &Path) -> (StepContext, RecordedEvents) {
    let events = RecordedEvents::new();
    let ctx = StepContext::new(
        "test-backup".parse().unwrap(),
        WorkingFolder::new(work),
        Arc::new(events.clone()),
        CancellationToken::new(),
    );
    (ctx, events)
}

/// A restore context reading the backup at `source` that recorded `data_stores`.
pub fn restore_ctx(source: &Path, strategy: &str, data_stores: Vec<PathBuf>) -> RestoreContext {
    let metadata = BackupMetadata {
        format_version: FORMAT_VERSION,
        id: "test-backup".parse().unwrap(),
        created_at: jiff::Timestamp::now(),
        tool_version: "test".to_owned(),
        bitbucket_version: None,
        instance_url: None,
        zero_downtime: false,
        lock_window: None,
        database: StrategyRecord::default(),
        filesystem: StrategyRecord {
            name: strategy.to_owned(),
            notes: Default::default(),
        },
        data_stores,
    };
    RestoreContext::new(
        WorkingFolder::new(source),
        metadata,
        Arc::new(RecordedEvents::new()),
        CancellationToken::new(),
    )
}

/// Write `content` at `root/relative`, creating folders.
pub fn write(root: &Path, relative: &str, content: &[u8]) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// Every path below `root`, relative, sorted (symlinks not followed).
pub fn list_tree(root: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_owned())
        .collect();
    all.sort();
    all
}

/// Removes the immutable attribute again when dropped, so the temporary folder can be deleted
/// even when an assertion fails.
pub struct Immutable(pub PathBuf);

impl Immutable {
    pub fn set(path: &Path) -> Self {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .expect("chattr (e2fsprogs) is needed");
        assert!(
            status.success(),
            "chattr +i {} failed: the test needs root on ext4/xfs/btrfs",
            path.display()
        );
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}
