//! # bitbucket-diy-core
//!
//! Consistent, low-downtime backups of Atlassian Bitbucket Server and Data Center, and their
//! restore. The crate holds every decision; the `bitbucket-diy` CLI and the `bitbucket_diy`
//! Python module are thin layers over it.
//!
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
