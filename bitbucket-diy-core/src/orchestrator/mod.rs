//! The backup and restore runs: phases, the always-unlock guarantee, hooks, retention.
//!
//! A backup runs: run lock → prepare (database and filesystem in parallel, instance live) →
//! `before_lock` hooks → lock → start backup → wait for drain → consistent database dump and home
//! copy **in parallel**, each reporting progress to Bitbucket as it finishes → progress 100 →
//! unlock → `after_unlock` hooks → archive → retention → `after_archive` hooks.
//!
//! Whatever fails — a step, the drain, a signal, the locked-phase timeout — the running steps are
//! stopped first (their child processes killed), the server-side backup task is cancelled when it
//! was started, and the instance is unlocked, with retries. If unlocking itself fails the run
//! returns [`crate::Error::LeftLocked`], whose message holds the command that unlocks by hand.

mod backup;
mod builder;
mod hooks;
mod locked;
mod report;
mod restore;
mod run_lock;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use builder::{ArchiveKeys, OrchestratorBuilder, archive_from_config, client_from};
pub use hooks::{HOOK_TIMEOUT, HookPoint, Hooks};
pub use report::{BackupReport, PhaseTiming, RestoreReport};
pub use restore::RestoreRequest;
pub use run_lock::RunLock;
pub use verify::{DeepVerifyReport, fsck_repository};

use crate::client::{DrainOptions, MaintenanceClient};
use crate::config::ConfigError;
use crate::error::Error;
use crate::events::EventSink;
use crate::strategy::{ArchiveStrategy, DatabaseStrategy, FilesystemStrategy, WorkingFolder};

/// How a backup runs; defaults match the configuration file's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Skip the lock; refused unless the strategies promise atomic snapshots.
    pub zero_downtime: bool,
    /// Prefix of backup ids.
    pub id_prefix: String,
    /// Drain poll interval and timeout.
    pub drain: DrainOptions,
    /// The longest the instance may stay locked before the work is stopped and it is unlocked.
    pub locked_timeout: Duration,
    /// Keep the newest N archives; 0 keeps all.
    pub keep: usize,
    /// Unlock attempts before declaring the instance left locked.
    pub unlock_attempts: u32,
    /// First delay between unlock attempts (doubling).
    pub unlock_retry_delay: Duration,
    /// How long stopped steps get to wind down after a cancellation before we unlock anyway.
    pub cancel_grace: Duration,
    /// Data stores, recorded in the backup's metadata.
    pub data_stores: Vec<PathBuf>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            zero_downtime: false,
            id_prefix: "bitbucket-".to_owned(),
            drain: DrainOptions::default(),
            locked_timeout: Duration::from_secs(4 * 3600),
            keep: 0,
            unlock_attempts: 6,
            unlock_retry_delay: Duration::from_millis(500),
            cancel_grace: Duration::from_secs(30),
            data_stores: Vec::new(),
        }
    }
}

/// Runs backups, restores, listings and verifications with one set of strategies.
///
/// Build one from a configuration file with [`BackupOrchestrator::from_config`], as the CLI does:
///
/// ```no_run
/// # async fn run() -> Result<(), bitbucket_diy_core::Error> {
/// use bitbucket_diy_core::{BackupConfig, orchestrator::BackupOrchestrator};
/// use tokio_util::sync::CancellationToken;
///
/// let loaded = BackupConfig::load(std::path::Path::new("/etc/bitbucket-diy/config.toml"))?;
/// let orchestrator = BackupOrchestrator::from_config(&loaded.config)?.build()?;
/// let report = orchestrator.backup(CancellationToken::new()).await?;
/// println!("{} written, lock window {:?}", report.archive.display(), report.lock_window);
/// # Ok(()) }
/// ```
///
/// or piece by piece with [`BackupOrchestrator::builder`], which is how a strategy of your own
/// (see `examples/custom_database.rs`) takes part. Here against the simulator, with the database
/// inside the home (no database strategy: `none` is the default):
///
/// ```
/// use bitbucket_diy_core::MaintenanceClient;
/// use bitbucket_diy_core::config::{FilesystemConfig, InstanceType};
/// use bitbucket_diy_core::orchestrator::BackupOrchestrator;
/// use bitbucket_diy_core::sample_home::{self, SampleHomeSpec};
/// use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
/// use bitbucket_diy_core::strategy::archive::TarZstdArchive;
/// use bitbucket_diy_core::strategy::filesystem::NativeCopy;
/// use tokio_util::sync::CancellationToken;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let home = dir.path().join("home");
/// sample_home::generate(&home, &SampleHomeSpec::tiny())?;
/// // `[filesystem]` as the configuration file spells it.
/// let filesystem: FilesystemConfig = toml::from_str(&format!("home = '{}'", home.display()))?;
///
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let sim = Simulator::start(SimulatorConfig::default()).await?;
///     let client = MaintenanceClient::builder(sim.url()).credentials(sim.user(), sim.password()).build()?;
///     let orchestrator = BackupOrchestrator::builder(dir.path().join("work"))
///         .client(client)
///         // `false`: no separate database step, so the internal database files are copied.
///         .filesystem(NativeCopy::from_config(&filesystem, false, InstanceType::Bitbucket)?)
///         .archive(TarZstdArchive::new(dir.path().join("archives"), 3, 0))
///         .with_options(|options| options.keep = 7)
///         .build()?;
///     let report = orchestrator.backup(CancellationToken::new()).await?;
///     let listed = orchestrator.list_backups().await?;
///     assert_eq!(listed[0].metadata.id, report.id);
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(()) }
/// ```
pub struct BackupOrchestrator {
    client: Result<MaintenanceClient, ConfigError>,
    database: Arc<dyn DatabaseStrategy>,
    filesystem: Arc<dyn FilesystemStrategy>,
    archive: Arc<dyn ArchiveStrategy>,
    working: WorkingFolder,
    options: BackupOptions,
    hooks: Hooks,
    events: Arc<dyn EventSink>,
}

impl std::fmt::Debug for BackupOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOrchestrator")
            .field("client", &self.client.as_ref().ok())
            .field("database", &self.database.name())
            .field("filesystem", &self.filesystem.name())
            .field("archive", &self.archive.name())
            .field("working", &self.working)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl BackupOrchestrator {
    /// A builder: strategies and client are set one by one.
    pub fn builder(working_folder: impl Into<PathBuf>) -> OrchestratorBuilder {
        OrchestratorBuilder::new(working_folder.into())
    }

    /// A builder prefilled from a configuration: client, built-in strategies, options, hooks.
    /// Any strategy can still be replaced (e.g. by one written in Python) before `build`.
    pub fn from_config(config: &crate::config::BackupConfig) -> Result<OrchestratorBuilder, Error> {
        OrchestratorBuilder::from_config(config)
    }

    /// The database strategy.
    pub fn database(&self) -> &dyn DatabaseStrategy {
        self.database.as_ref()
    }

    /// The filesystem strategy.
    pub fn filesystem(&self) -> &dyn FilesystemStrategy {
        self.filesystem.as_ref()
    }

    /// The archive strategy.
    pub fn archive(&self) -> &dyn ArchiveStrategy {
        self.archive.as_ref()
    }

    /// The working folder.
    pub fn working_folder(&self) -> &WorkingFolder {
        &self.working
    }

    /// The options.
    pub fn options(&self) -> &BackupOptions {
        &self.options
    }

    /// The client, or why there is none (no password configured).
    pub fn client(&self) -> Result<&MaintenanceClient, Error> {
        self.client.as_ref().map_err(|e| Error::Config(e.clone()))
    }

    /// Every complete backup, newest first.
    pub async fn list_backups(&self) -> Result<Vec<crate::strategy::ArchiveInfo>, Error> {
        Ok(self.archive.list().await?)
    }

    /// Probe what can be probed without locking: strategies' tools and connections, folders,
    /// and Bitbucket's version. Returns one line per check, or the first failure (every probe
    /// runs either way; [`Self::check_all`] returns them all).
    pub async fn check(&self) -> Result<Vec<String>, Error> {
        self.check_all()
            .await
            .into_iter()
            .map(|probe| probe.outcome.map(|found| format!("{}: {found}", probe.subject)))
            .collect()
    }

    /// Every probe of [`Self::check`], failed ones included, in order: one broken setting does not
    /// hide the next.
    pub async fn check_all(&self) -> Vec<Probe> {
        let mut probes = vec![
            Probe::new(format!("database ({})", self.database.name()), async {
                self.database.check().await.map(|()| "ok".to_owned()).map_err(Error::Database)
            })
            .await,
            Probe::new(format!("filesystem ({})", self.filesystem.name()), async {
                self.filesystem.check().await.map(|()| "ok".to_owned()).map_err(Error::Filesystem)
            })
            .await,
            Probe::new(format!("working folder {}", self.working.root().display()), async {
                writable_folder(self.working.root())
            })
            .await,
        ];
        if self.archive.name() != "none" {
            let folder = self.archive.folder();
            probes.push(
                Probe::new(format!("archive folder {}", folder.display()), async { writable_folder(folder) }).await,
            );
        }
        let subject = match &self.client {
            Ok(client) => format!("Bitbucket at {}", client.base_url()),
            Err(_) => "Bitbucket".to_owned(),
        };
        let version = Probe::new(subject, async {
            let props = self.client()?.application_properties().await?;
            Ok(format!("version {}", props.version))
        })
        .await;
        let reachable = version.outcome.is_ok();
        probes.push(version);
        // Unreachable or unauthorised: the status would fail for the same reason.
        if reachable {
            probes.push(
                Probe::new("Bitbucket status".to_owned(), async {
                    Ok(self.client()?.status().await?.state.to_string())
                })
                .await,
            );
        }
        probes
    }
}

/// One probe of [`BackupOrchestrator::check_all`].
#[derive(Debug)]
pub struct Probe {
    /// What was probed: `database (postgresql)`, `working folder /srv/…`, `Bitbucket at …`.
    pub subject: String,
    /// What was found, or why the probe failed.
    pub outcome: Result<String, Error>,
}

impl Probe {
    async fn new(subject: String, probe: impl std::future::Future<Output = Result<String, Error>>) -> Self {
        Self { subject, outcome: probe.await }
    }
}

/// Creates `dir` owner-only when missing and checks that a file can be written in it.
fn writable_folder(dir: &std::path::Path) -> Result<String, Error> {
    run_lock::create_private_dir(dir)?;
    probe_writable(dir)?;
    Ok("writable".to_owned())
}

fn probe_writable(dir: &std::path::Path) -> Result<(), Error> {
    tempfile::Builder::new()
        .prefix(".bitbucket-diy-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| Error::io("writing into", dir, e))
}
