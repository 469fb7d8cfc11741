//! Filesystem strategies: copies of the home and data stores, and their restore.

use std::fmt;

use async_trait::async_trait;

use crate::client::Drained;
use crate::strategy::{HomeTarget, RestoreContext, StepContext, StepReport, StrategyError};

pub mod alternates;
pub mod command;
pub mod excludes;
pub mod git_locks;
mod jobs;
pub mod native;
pub mod pass_state;
pub mod rsync;
mod target;

pub use alternates::relink_fork_alternates;
pub use command::CommandFilesystem;
pub use excludes::Excludes;
pub use git_locks::remove_stale_git_locks;
pub(crate) use jobs::{CopyJob, copy_jobs, validate_copy_config};
pub use native::NativeCopy;
pub use rsync::RsyncCopy;
pub use target::ensure_empty_target;

/// What a filesystem strategy can promise. All false by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FilesystemCapabilities {
    /// A pre-lock copy, so the locked pass copies only the change.
    pub incremental: bool,
    /// Point-in-time snapshot: required for zero-downtime mode.
    pub atomic_snapshot: bool,
}

impl FilesystemCapabilities {
    /// Capabilities with the given flags.
    pub fn new(incremental: bool, atomic_snapshot: bool) -> Self {
        Self { incremental, atomic_snapshot }
    }
}

/// Copies Bitbucket's home (and data stores) into the working folder and restores them.
#[async_trait]
pub trait FilesystemStrategy: Send + Sync + fmt::Debug {
    /// The name used in configuration and manifests (`native`, `rsync`, …).
    fn name(&self) -> &str;

    /// What this strategy promises.
    fn capabilities(&self) -> FilesystemCapabilities;

    /// Probe tools and folders without changing anything (`config check`).
    async fn check(&self) -> Result<(), StrategyError> {
        Ok(())
    }

    /// The initial copy while the instance runs; need not be consistent.
    async fn prepare(&self, _ctx: &StepContext) -> Result<(), StrategyError> {
        Ok(())
    }

    /// The consistent copy (only the change, where incremental), while drained.
    async fn backup(&self, ctx: &StepContext, drained: &Drained) -> Result<StepReport, StrategyError>;

    /// Refuse a target home (or data-store folder) that exists and is not empty, or is a file.
    async fn check_restore_target(&self, target: &HomeTarget) -> Result<(), StrategyError>;

    /// Restore `ctx.source()`'s home and data stores into `target`.
    async fn restore(&self, ctx: &RestoreContext, target: &HomeTarget) -> Result<StepReport, StrategyError>;
}
