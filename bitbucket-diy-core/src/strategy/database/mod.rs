//! Database strategies: the dump taken while drained, and its restore into a new database.

use std::fmt;

use async_trait::async_trait;

use crate::client::Drained;
use crate::strategy::{DatabaseTarget, RestoreContext, StepContext, StepReport, StrategyError};

mod client_files;
pub mod command;
mod dump_slot;
pub mod mysql;
pub mod none;
pub mod postgres;
mod tools;

pub use command::CommandDatabase;
pub use mysql::MysqlDatabase;
pub use none::NoDatabase;
pub use postgres::PostgresDatabase;

/// What a database strategy can promise. All false by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatabaseCapabilities {
    /// `prepare` does useful work before the lock (an initial dump a later pass builds on).
    pub incremental_prepare: bool,
    /// The database lives in the home (Bitbucket's internal database) or on the snapshotted
    /// volume, so the filesystem step captures it.
    pub covered_by_filesystem: bool,
    /// The backup is a point-in-time snapshot taken at the same instant as the filesystem's
    /// (required, with `covered_by_filesystem`, for zero-downtime mode).
    pub atomic_snapshot: bool,
}

impl DatabaseCapabilities {
    /// Capabilities with the given flags.
    pub fn new(incremental_prepare: bool, covered_by_filesystem: bool, atomic_snapshot: bool) -> Self {
        Self { incremental_prepare, covered_by_filesystem, atomic_snapshot }
    }
}

/// A dump whose consistent point was fixed while Bitbucket was drained, written after the unlock
/// (see [`DatabaseStrategy::export_snapshot`]). Dropping it unfinished releases the snapshot.
#[async_trait]
pub trait DeferredDump: Send + Sync + fmt::Debug {
    /// Write the dump of the state fixed earlier into the working folder.
    async fn finish(self: Box<Self>, ctx: &StepContext) -> Result<StepReport, StrategyError>;
}

/// Backs up and restores Bitbucket's database.
///
/// The orchestrator calls `prepare` while the instance runs, `backup` once both `db-state` and
/// `scm-state` are drained (the [`Drained`] argument proves it), and `restore` on another day into
/// a new database. A dump goes to [`crate::strategy::WorkingFolder::database_dir`].
#[async_trait]
pub trait DatabaseStrategy: Send + Sync + fmt::Debug {
    /// The name used in configuration and manifests (`postgresql`, `mysql`, …).
    fn name(&self) -> &str;

    /// What this strategy promises.
    fn capabilities(&self) -> DatabaseCapabilities;

    /// Probe the tools and the connection without changing anything (`config check`).
    async fn check(&self) -> Result<(), StrategyError> {
        Ok(())
    }

    /// Work before the lock. Must leave the previous complete dump usable if it fails.
    async fn prepare(&self, _ctx: &StepContext) -> Result<(), StrategyError> {
        Ok(())
    }

    /// The consistent dump, while drained.
    async fn backup(&self, ctx: &StepContext, drained: &Drained) -> Result<StepReport, StrategyError>;

    /// Fix the consistent point while drained and leave the dump itself for after the unlock,
    /// shortening the lock window to the snapshot's export (PostgreSQL's `pg_export_snapshot()`
    /// and `pg_dump --snapshot`). `Ok(None)`, the default, means this strategy dumps in
    /// [`Self::backup`], inside the lock window; the orchestrator then calls `backup`.
    async fn export_snapshot(
        &self,
        _ctx: &StepContext,
        _drained: &Drained,
    ) -> Result<Option<Box<dyn DeferredDump>>, StrategyError> {
        Ok(None)
    }

    /// Refuse a target that is not new or empty, before anything is extracted or written.
    async fn check_restore_target(&self, target: &DatabaseTarget) -> Result<(), StrategyError>;

    /// Whether [`Self::restore`] may start once the database folder is extracted, while the home
    /// still is. Only a strategy that awaits [`RestoreContext::source_verified`] before it reports
    /// success, and undoes its restore when that fails, may answer `true`. The default is `false`:
    /// `restore` starts after the whole backup is extracted and checked.
    fn restores_while_extracting(&self) -> bool {
        false
    }

    /// Restore the dump found in `ctx.source()` into `target`.
    async fn restore(&self, ctx: &RestoreContext, target: &DatabaseTarget) -> Result<StepReport, StrategyError>;
}
