//! Helpers shared by the integration suites (client, simulator, filesystem).
#![allow(dead_code)] // each test binary uses its own subset

use bitbucket_diy_core::archive_format::{BackupMetadata, FORMAT_VERSION, StrategyRecord};
use bitbucket_diy_core::client::{DrainOptions, MaintenanceClient, MaintenanceClientBuilder};
use bitbucket_diy_core::config::{FilesystemConfig, FilesystemType};
use bitbucket_diy_core::events::RecordedEvents;
use bitbucket_diy_core::simulator::{SimEventKind, Simulator, SimulatorConfig};
use bitbucket_diy_core::strategy::{RestoreContext, StepContext, WorkingFolder};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A simulator that drains quickly.
pub fn fast_config() -> SimulatorConfig {
    SimulatorConfig::default().with_drain_delay(Duration::from_millis(30))
}

pub async fn start(config: SimulatorConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts on 127.0.0.1:0")
}

/// A builder for `url` with short timeouts and near-instant retries (3 attempts).
pub fn fast_builder(url: impl Into<String>) -> MaintenanceClientBuilder {
    MaintenanceClient::builder(url)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
        .retries(3, Duration::from_millis(5))
}

/// A client logged in as the simulator's administrator.
pub fn client_for(sim: &Simulator) -> MaintenanceClient {
    fast_builder(sim.url().as_str()).credentials(sim.user(), sim.password()).build().expect("client builds")
}

/// Poll every 10 ms, give up after `timeout`.
pub fn drain_options(timeout: Duration) -> DrainOptions {
    DrainOptions { poll_interval: Duration::from_millis(10), timeout }
}

/// The requests the simulator answered, as (method, path, status).
pub fn requests(sim: &Simulator) -> Vec<(String, String, u16)> {
    sim.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            SimEventKind::Request { method, path, status } => Some((method, path, status)),
            _ => None,
        })
        .collect()
}

/// How many answered requests went to a path ending with `suffix`.
pub fn count_requests(sim: &Simulator, method: &str, suffix: &str) -> usize {
    requests(sim).iter().filter(|(m, p, _)| m == method && p.ends_with(suffix)).count()
}

/// Wait (up to 5 s) until `condition` holds; false if it never did.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// A plain HTTP client for raw calls (reqwest needs a rustls provider even for http://).
pub fn raw_http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("reqwest client builds")
}

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
        filesystem: StrategyRecord { name: strategy.to_owned(), notes: Default::default() },
        data_stores,
    };
    RestoreContext::new(WorkingFolder::new(source), metadata, Arc::new(RecordedEvents::new()), CancellationToken::new())
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
        let status =
            std::process::Command::new("chattr").arg("+i").arg(path).status().expect("chattr (e2fsprogs) is needed");
        assert!(status.success(), "chattr +i {} failed: the test needs root on ext4/xfs/btrfs", path.display());
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}
