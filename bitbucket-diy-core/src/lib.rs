#![warn(missing_docs)]
//! # bitbucket-diy-core
//!
//! Consistent, low-downtime backups of Atlassian Bitbucket Server and Data Center, and their
//! restore. The crate holds every decision; the `bitbucket-diy` CLI and the `bitbucket_diy`
//! Python module are thin layers over it.
//!
//! The user guide (installing, configuring, scheduling, restoring, troubleshooting) is in the
//! repository's `docs/` folder; `docs/how-it-works.md` explains the phases and the lock window,
//! `docs/strategies.md` what each built-in strategy promises and how to write your own.
//!
//! # Example: a backup and a restore, rehearsed
//!
//! A simulated Bitbucket, a small home of real git repositories, the configuration an
//! administrator would write (as TOML), one backup and its restore into a new home. Against a real
//! instance only the configuration changes.
//!
//! ```
//! use bitbucket_diy_core::BackupConfig;
//! use bitbucket_diy_core::orchestrator::{BackupOrchestrator, RestoreRequest};
//! use bitbucket_diy_core::sample_home::{self, SampleHomeSpec};
//! use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let home = dir.path().join("home");
//! // Generating runs `git`: blocking work, done before the async part starts.
//! sample_home::generate(&home, &SampleHomeSpec::tiny())?;
//!
//! let runtime = tokio::runtime::Runtime::new()?;
//! runtime.block_on(async {
//!     let config = SimulatorConfig::default().with_drain_delay(std::time::Duration::from_millis(20));
//!     let sim = Simulator::start(config).await?;
//!     let toml = format!(
//!         r#"
//!         [bitbucket]
//!         url = "{url}"
//!         user = "{user}"
//!
//!         [database]
//!         type = "none"          # an evaluation install: the database is inside the home
//!
//!         [filesystem]
//!         home = "{home}"
//!
//!         [archive]
//!         folder = "{dir}/archives"
//!         keep = 7
//!
//!         [backup]
//!         working_folder = "{dir}/work"
//!         poll_interval = "20ms"
//!         "#,
//!         url = sim.url(),
//!         user = sim.user(),
//!         home = home.display(),
//!         dir = dir.path().display(),
//!     );
//!     // The environment is empty here; the CLI passes the process's (BITBUCKET_DIY_* overrides).
//!     let loaded = BackupConfig::from_toml_with_env(&toml, "example.toml", [])?;
//!     let orchestrator = BackupOrchestrator::from_config(&loaded.config)?
//!         .bitbucket_password(sim.password().to_owned().into())?
//!         .build()?;
//!
//!     let report = orchestrator.backup(CancellationToken::new()).await?;
//!     assert!(!sim.is_locked(), "unlocked on every path");
//!     assert!(report.archive.ends_with(format!("{}.tar.zst", report.id)));
//!     println!("{} in {:?}, Bitbucket locked for {:?}", report.id, report.total, report.lock_window);
//!
//!     let restored = dir.path().join("restored-home");
//!     let request = RestoreRequest::new(report.id.as_str(), &restored, None);
//!     let restore = orchestrator.restore(&request, CancellationToken::new()).await?;
//!     assert!(restored.join("shared/data/repositories").is_dir());
//!     assert!(!restore.git_locks_removed.is_empty(), "stale git locks copied from a live home are removed");
//!     sim.shutdown().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! # What is where
//!
//! - [`config::BackupConfig`]: the TOML file the CLI reads, with `BITBUCKET_DIY_*` overrides;
//!   [`migrate`] translates the vendor scripts' vars file into one.
//! - [`strategy::DatabaseStrategy`], [`strategy::FilesystemStrategy`],
//!   [`strategy::ArchiveStrategy`]: implement one to add a step of your own;
//!   `examples/custom_database.rs` is a complete database strategy, run by the tests.
//! - [`metrics`]: the Prometheus textfile written after every run; [`sample_home`] (feature
//!   `simulator`): Bitbucket-shaped homes of real git repositories, to rehearse with.
//! - [`client::MaintenanceClient`]: the maintenance REST API (lock, start, drain, progress, unlock).
//! - [`orchestrator::BackupOrchestrator`]: prepare → lock → drain → consistent copies → unlock →
//!   archive → retention, with the instance unlocked on every path.
//! - [`strategy`]: the database, filesystem and archive steps, as traits with built-in
//!   implementations (`postgresql`, `mysql`, `command`, `none`; `native`, `rsync`, `command`;
//!   `tar-zstd`, `tar-gz`, `none`).
//! - [`simulator`] (feature `simulator`, on by default): a faithful fake of the API to rehearse
//!   against.
//! - Offsite copies on object storage (feature `object-store`, on by default):
//!   `strategy::archive::RemoteArchive`, S3 and S3-compatible stores, GCS, Azure.
//! - Encryption at rest with age recipients (feature `encryption`, on by default):
//!   `encryption`.

pub mod archive_format;
pub mod backup_id;
pub mod client;
pub mod config;
#[cfg(feature = "simulator")]
pub mod demo;
#[cfg(feature = "encryption")]
pub mod encryption;
pub mod error;
pub mod events;
pub mod metrics;
pub mod migrate;
pub mod orchestrator;
#[cfg(feature = "simulator")]
pub mod sample_home;
mod serde_duration;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod strategy;
pub mod verify_log;

pub use backup_id::BackupId;
pub use client::{ClientError, MaintenanceClient};
pub use config::{BackupConfig, ConfigError};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, EventSink, Phase};
pub use strategy::{ArchiveError, StrategyError};

/// Installs ring as the process-wide rustls provider, once. reqwest is built without a provider of
/// its own (aws-lc-rs would need a C toolchain with cmake); a provider installed earlier by the
/// host application is kept.
pub(crate) fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
