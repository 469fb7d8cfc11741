//! Shared test bench: a simulator, a sample home of real git repositories, and strategies that
//! fail on demand (fault injection for the orchestrator; the real strategies are tested apart);
//! real faults of the machine (a full disk, an immutable folder, an unreadable file), a
//! cancellation fired at a chosen event, and the local PostgreSQL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../common"]
pub mod common {
    pub mod names;
    pub mod postgres;
    pub mod small_disk;
}

#[allow(unused_imports)] // each test binary uses its own subset
pub use common::small_disk::SmallDisk;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bitbucket_diy_core::MaintenanceClient;
use bitbucket_diy_core::client::Drained;
use bitbucket_diy_core::config::{FilesystemConfig, FilesystemType, InstanceType};
use bitbucket_diy_core::events::{Event, EventSink};
use bitbucket_diy_core::orchestrator::{BackupOrchestrator, OrchestratorBuilder};
use bitbucket_diy_core::sample_home::{self, SampleHomeSpec};
use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
use bitbucket_diy_core::strategy::archive::TarZstdArchive;
use bitbucket_diy_core::strategy::database::NoDatabase;
use bitbucket_diy_core::strategy::filesystem::{Excludes, NativeCopy};
use bitbucket_diy_core::strategy::{
    DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, FilesystemCapabilities, FilesystemStrategy, HomeTarget,
    RestoreContext, StepContext, StepReport, StrategyError,
};
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One test's world: its own folder, simulator and home.
pub struct Bench {
    pub dir: TempDir,
    pub sim: Simulator,
    pub home: PathBuf,
    pub working: PathBuf,
    pub archives: PathBuf,
}

impl Bench {
    pub async fn new() -> Self {
        Self::with(SampleHomeSpec::tiny(), SimulatorConfig::default()).await
    }

    /// A bench with this home and simulator (its drain delay shortened to 50 ms).
    pub async fn with(spec: SampleHomeSpec, sim_config: SimulatorConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        sample_home::generate(&home, &spec).unwrap();
        let sim = Simulator::start(sim_config.with_drain_delay(Duration::from_millis(50))).await.unwrap();
        let working = dir.path().join("work");
        let archives = dir.path().join("archives");
        Self { dir, sim, home, working, archives }
    }

    pub fn client(&self) -> MaintenanceClient {
        self.client_with_timeout(Duration::from_secs(60))
    }

    /// A client whose requests time out after `request_timeout`.
    pub fn client_with_timeout(&self, request_timeout: Duration) -> MaintenanceClient {
        MaintenanceClient::builder(self.sim.url().as_str())
            .credentials(self.sim.user(), self.sim.password().to_owned())
            .request_timeout(request_timeout)
            .retries(3, Duration::from_millis(10))
            .build()
            .unwrap()
    }

    pub fn filesystem_config(&self) -> FilesystemConfig {
        FilesystemConfig {
            kind: FilesystemType::Native,
            home: self.home.clone(),
            data_stores: Vec::new(),
            exclude: Vec::new(),
            exclude_repos: Vec::new(),
            threads: None,
            rsync_options: Vec::new(),
            prepare_command: None,
            backup_command: None,
            restore_command: None,
            atomic_snapshot: false,
        }
    }

    pub fn native(&self) -> NativeCopy {
        NativeCopy::from_config(&self.filesystem_config(), false, InstanceType::Bitbucket).unwrap()
    }

    /// Simulator client, native copy, tar+zstd archive, no separate database; fast polls.
    pub fn orchestrator(&self) -> OrchestratorBuilder {
        BackupOrchestrator::builder(&self.working)
            .client(self.client())
            .database(NoDatabase)
            .filesystem(self.native())
            .archive(TarZstdArchive::new(self.archives.clone(), 3, 0))
            .with_options(|o| {
                o.drain.poll_interval = Duration::from_millis(20);
                o.unlock_retry_delay = Duration::from_millis(20);
            })
    }

    pub fn assert_unlocked_and_task_ended(&self) {
        assert!(!self.sim.is_locked(), "the instance must be unlocked: {:?}", self.sim.events());
        let state = self.sim.snapshot();
        assert_ne!(state.task_state.as_deref(), Some("RUNNING"), "the server-side task must not run on: {state:?}");
    }

    pub async fn assert_no_archive(&self, orchestrator: &BackupOrchestrator) {
        assert!(orchestrator.list_backups().await.unwrap().is_empty());
        let finals: Vec<_> = std::fs::read_dir(&self.archives)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert!(
            finals.iter().all(|name: &String| name.starts_with('.')),
            "nothing under a final archive name: {finals:?}"
        );
    }
}

/// The restored home equals the source minus excludes and stale git locks, and every repository
/// passes `git fsck`.
pub fn assert_home_restored(source: &Path, restored: &Path) {
    let excludes = Excludes::for_home(InstanceType::Bitbucket, false, &[], &[]);
    sample_home::compare_trees(source, restored, |relative: &Path| {
        let is_dir = source.join(relative).is_dir();
        // Restores remove stale locks and point forks at the new home.
        excludes.is_excluded(relative, is_dir) || is_git_lock(relative) || relative.ends_with("objects/info/alternates")
    })
    .unwrap();
    for repo in bitbucket_diy_core::strategy::filesystem::git_locks::find_bare_repositories(restored).unwrap() {
        if let Ok(alternates) = std::fs::read_to_string(repo.join("objects/info/alternates")) {
            for line in alternates.lines() {
                assert!(
                    Path::new(line).starts_with(restored),
                    "{} borrows from outside the restored home: {line}",
                    repo.display()
                );
            }
        }
    }
    let checked = sample_home::fsck_all(restored).unwrap();
    assert_eq!(checked, repository_count(source));
}

fn is_git_lock(relative: &Path) -> bool {
    let in_repo = relative.components().any(|c| c.as_os_str() == "repositories");
    let name = relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    in_repo && (name.ends_with(".lock") || name == "gc.pid")
}

pub fn repository_count(home: &Path) -> usize {
    bitbucket_diy_core::strategy::filesystem::git_locks::find_bare_repositories(home).unwrap().len()
}

/// What a faulty step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepFault {
    None,
    FailPrepare,
    FailBackup,
    /// Block in backup until cancelled.
    Block,
    /// Hang in backup, deaf to cancellation (a step that never returns).
    Hang,
}

fn injected(name: &str) -> StrategyError {
    StrategyError::Custom { strategy: name.to_owned(), message: "injected failure".to_owned() }
}

/// A database strategy with nothing to dump, failing where told.
#[derive(Debug)]
pub struct FaultyDatabase {
    fault: StepFault,
}

impl FaultyDatabase {
    pub fn new(fault: StepFault) -> Self {
        Self { fault }
    }
}

#[async_trait]
impl DatabaseStrategy for FaultyDatabase {
    fn name(&self) -> &str {
        "faulty"
    }
    fn capabilities(&self) -> DatabaseCapabilities {
        DatabaseCapabilities::default()
    }
    async fn prepare(&self, _ctx: &StepContext) -> Result<(), StrategyError> {
        if self.fault == StepFault::FailPrepare { Err(injected("faulty")) } else { Ok(()) }
    }
    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        match self.fault {
            StepFault::FailBackup => Err(injected("faulty")),
            StepFault::Block => {
                ctx.cancellation().cancelled().await;
                Err(StrategyError::Cancelled)
            }
            _ => Ok(StepReport::default()),
        }
    }
    async fn check_restore_target(&self, _target: &DatabaseTarget) -> Result<(), StrategyError> {
        Ok(())
    }
    async fn restore(&self, _ctx: &RestoreContext, _target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        Ok(StepReport::default())
    }
}

/// A real filesystem strategy with a fault injected around it.
#[derive(Debug)]
pub struct FaultyFilesystem<F> {
    inner: F,
    fault: StepFault,
    atomic: bool,
    started: Arc<Notify>,
}

impl<F: FilesystemStrategy> FaultyFilesystem<F> {
    pub fn new(inner: F, fault: StepFault) -> Self {
        Self { inner, fault, atomic: false, started: Arc::new(Notify::new()) }
    }

    /// Blocks in backup until cancelled; the Notify fires when it starts blocking.
    pub fn blocking(inner: F) -> (Self, Arc<Notify>) {
        let me = Self::new(inner, StepFault::Block);
        let started = me.started.clone();
        (me, started)
    }

    /// Claims atomic snapshots (for zero-downtime tests), otherwise the real copy.
    pub fn atomic(inner: F) -> Self {
        Self { atomic: true, ..Self::new(inner, StepFault::None) }
    }
}

#[async_trait]
impl<F: FilesystemStrategy> FilesystemStrategy for FaultyFilesystem<F> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> FilesystemCapabilities {
        let real = self.inner.capabilities();
        FilesystemCapabilities::new(real.incremental, self.atomic)
    }
    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        if self.fault == StepFault::FailPrepare {
            return Err(injected(self.inner.name()));
        }
        self.inner.prepare(ctx).await
    }
    async fn backup(&self, ctx: &StepContext, drained: &Drained) -> Result<StepReport, StrategyError> {
        match self.fault {
            StepFault::FailBackup => Err(injected(self.inner.name())),
            StepFault::Block => {
                self.started.notify_one();
                ctx.cancellation().cancelled().await;
                Err(StrategyError::Cancelled)
            }
            StepFault::Hang => {
                self.started.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(StepReport::default())
            }
            _ => self.inner.backup(ctx, drained).await,
        }
    }
    async fn check_restore_target(&self, target: &HomeTarget) -> Result<(), StrategyError> {
        self.inner.check_restore_target(target).await
    }
    async fn restore(&self, ctx: &RestoreContext, target: &HomeTarget) -> Result<StepReport, StrategyError> {
        self.inner.restore(ctx, target).await
    }
}

/// Cancels `token` when the `nth` event (1-based) matching `trigger` is emitted: a cancellation
/// that lands inside a chosen phase of a real run.
pub struct CancelOn {
    trigger: Box<dyn Fn(&Event) -> bool + Send + Sync>,
    nth: usize,
    seen: std::sync::atomic::AtomicUsize,
    token: CancellationToken,
}

impl CancelOn {
    pub fn new(token: CancellationToken, nth: usize, trigger: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        Self { trigger: Box::new(trigger), nth, seen: Default::default(), token }
    }
}

impl EventSink for CancelOn {
    fn emit(&self, event: &Event) {
        if (self.trigger)(event) && self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.nth {
            self.token.cancel();
        }
    }
}

/// `chattr +i` on a folder: nothing can be created, renamed or removed in it, even by root.
/// Removed again when dropped, so the temporary folder can be deleted.
pub struct Immutable(PathBuf);

impl Immutable {
    pub fn set(path: &Path) -> Self {
        let status = std::process::Command::new("chattr").arg("+i").arg(path).status().expect("chattr runs");
        assert!(status.success(), "chattr +i {} failed: the test needs root on ext4/xfs/btrfs", path.display());
        Self(path.to_owned())
    }

    /// The guard alone, for a folder a hook makes immutable later.
    pub fn cleared_on_drop(path: &Path) -> Self {
        Self(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A regular file that even root cannot read: `/proc/1/clear_refs` (write-only, `read` answers
/// EINVAL) bind-mounted over it. Unmounted when dropped.
pub struct UnreadableFile(PathBuf);

impl UnreadableFile {
    /// The shell command that makes `path` unreadable (for hooks that strike between phases).
    pub fn command(path: &Path) -> String {
        format!("mount --bind /proc/1/clear_refs '{}'", path.display())
    }

    pub fn make(path: &Path) -> Self {
        let status = std::process::Command::new("sh").arg("-c").arg(Self::command(path)).status().unwrap();
        assert!(status.success(), "bind-mounting over {} failed: the test needs root", path.display());
        Self::cleared_on_drop(path)
    }

    pub fn cleared_on_drop(path: &Path) -> Self {
        Self(path.to_owned())
    }
}

impl Drop for UnreadableFile {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A database of the local PostgreSQL with one table, dropped (with any other database or role
/// registered in `cleanup`) when dropped.
pub struct PgDatabase {
    pub name: String,
    pub cleanup: common::postgres::Cleanup,
}

impl PgDatabase {
    /// A new database for `test`, holding `sql`.
    pub fn create(test: &str, sql: &str) -> Self {
        common::postgres::require_postgres();
        let cleanup = common::postgres::Cleanup::default();
        let name = cleanup.database(common::names::unique_name(test, "db"));
        common::postgres::psql("postgres", &format!("CREATE DATABASE {};", common::postgres::ident(&name)));
        common::postgres::psql(&name, sql);
        Self { name, cleanup }
    }

    /// Another unique name for `purpose`, dropped with this one.
    pub fn another_name(&self, test: &str, purpose: &str) -> String {
        self.cleanup.database(common::names::unique_name(test, purpose))
    }

    /// The strategy's configuration for this database (superuser, no password).
    pub fn config(&self) -> bitbucket_diy_core::config::PostgresConfig {
        common::postgres::config(&self.name)
    }

    /// The same, dumping inside the lock window (no exported snapshot).
    pub fn config_dump_in_lock(&self) -> bitbucket_diy_core::config::PostgresConfig {
        bitbucket_diy_core::config::PostgresConfig { dump_after_unlock: false, ..self.config() }
    }
}

/// Pids of running `program` processes with an argument containing `needle`.
pub fn processes_mentioning(program: &str, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_program = args.first().is_some_and(|a| Path::new(a).file_name().is_some_and(|f| f == program));
        if is_program && args.iter().any(|a| a.contains(needle)) {
            found.push(pid);
        }
    }
    found
}

/// `len` bytes no compressor can shrink.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}
