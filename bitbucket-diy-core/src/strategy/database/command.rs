//! `command`: the user's own database backup and restore commands.
//!
//! Each configured command line runs with `/bin/sh -c`, in its own process group (cancelling the
//! run stops it and everything it started), from bitbucket-diy's own working directory: use the
//! variables below rather than relative paths. A non-zero exit fails the step with the command's
//! exit status and the last lines of its standard error.
//!
//! # Environment
//!
//! | variable | set in phases | value |
//! |---|---|---|
//! | `BITBUCKET_DIY_PHASE` | all | `prepare`, `backup`, `check-restore-target` or `restore` |
//! | `BITBUCKET_DIY_BACKUP_ID` | `prepare`, `backup`, `restore` | the id of the backup being made or restored |
//! | `BITBUCKET_DIY_WORKING_FOLDER` | `prepare`, `backup`, `restore` | the working folder (backup) or the extracted backup (restore) |
//! | `BITBUCKET_DIY_DATABASE_DIR` | `prepare`, `backup`, `restore` | where the dump goes or comes from (below) |
//! | `BITBUCKET_DIY_TARGET_DATABASE` | `check-restore-target`, `restore` | the name of the database to restore into |
//!
//! `BITBUCKET_DIY_DATABASE_DIR` is, per phase:
//!
//! - `prepare` (optional command, before Bitbucket is locked): the previous complete dump,
//!   `<working>/bitbucket-db`, which may not exist. Read it if useful; do not write there.
//! - `backup` (while Bitbucket is drained): a new, empty `<working>/bitbucket-db.partial`. Write
//!   the dump there; when the command succeeds it replaces `bitbucket-db/` in one rename, so the
//!   previous complete dump survives a failed or cancelled command.
//! - `restore`: the `bitbucket-db/` folder of the extracted backup. Read only.
//!
//! The optional `check_restore_target` command must exit non-zero when
//! `$BITBUCKET_DIY_TARGET_DATABASE` exists and is not empty; any non-zero exit refuses the
//! target, with the command's standard error as the reason. Without it no check is made.
//!
//! Other variables are inherited from bitbucket-diy's environment; stale values of the five
//! above are removed in phases that do not set them.
//!
//! # Capabilities
//!
//! `atomic_snapshot` and `covered_by_filesystem` in the configuration are promises about what
//! the commands do (e.g. a storage snapshot of the volume holding the database); the
//! orchestrator plans from them, for instance to allow zero-downtime mode.

use std::ffi::OsStr;
use std::time::Instant;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::client::Drained;
use crate::config::{CommandDatabaseConfig, ConfigError};
use crate::events::{Phase, Unit};
use crate::strategy::database::dump_slot::DumpSlot;
use crate::strategy::{
    ChildCommand, DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport,
    StrategyError,
};

const STRATEGY: &str = "command";

/// Names the phase: `prepare`, `backup`, `check-restore-target` or `restore`.
pub const PHASE_VAR: &str = "BITBUCKET_DIY_PHASE";
/// The backup's id.
pub const BACKUP_ID_VAR: &str = "BITBUCKET_DIY_BACKUP_ID";
/// The working folder, or the extracted backup when restoring.
pub const WORKING_FOLDER_VAR: &str = "BITBUCKET_DIY_WORKING_FOLDER";
/// Where the backup command writes, and the restore command reads, the dump.
pub const DATABASE_DIR_VAR: &str = "BITBUCKET_DIY_DATABASE_DIR";
/// The database to restore into.
pub const TARGET_DATABASE_VAR: &str = "BITBUCKET_DIY_TARGET_DATABASE";

const ALL_VARS: [&str; 5] = [PHASE_VAR, BACKUP_ID_VAR, WORKING_FOLDER_VAR, DATABASE_DIR_VAR, TARGET_DATABASE_VAR];

/// Runs the user's commands (see the [module documentation](self) for their environment).
#[derive(Debug)]
pub struct CommandDatabase {
    config: CommandDatabaseConfig,
}

impl CommandDatabase {
    /// A strategy running the commands `config` names; the backup and restore commands must not
    /// be blank.
    pub fn from_config(config: &CommandDatabaseConfig) -> Result<Self, ConfigError> {
        if config.backup.trim().is_empty() {
            return Err(ConfigError::invalid("database.backup", "the backup command is empty"));
        }
        if config.restore.trim().is_empty() {
            return Err(ConfigError::invalid("database.restore", "the restore command is empty"));
        }
        Ok(Self { config: config.clone() })
    }

    /// `command_line` under `sh -c` with `vars` set and every other variable of ours removed.
    fn command(command_line: &str, vars: &[(&str, &OsStr)]) -> ChildCommand {
        let mut cmd = ChildCommand::shell(command_line);
        for var in ALL_VARS {
            if !vars.iter().any(|(set, _)| *set == var) {
                cmd = cmd.env_remove(var);
            }
        }
        for (var, value) in vars {
            cmd = cmd.env(var, value);
        }
        cmd
    }
}

#[async_trait]
impl DatabaseStrategy for CommandDatabase {
    fn name(&self) -> &str {
        STRATEGY
    }

    /// `atomic_snapshot` and `covered_by_filesystem` as configured; never `incremental_prepare`.
    fn capabilities(&self) -> DatabaseCapabilities {
        DatabaseCapabilities::new(false, self.config.covered_by_filesystem, self.config.atomic_snapshot)
    }

    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        let Some(prepare) = &self.config.prepare else {
            return Ok(());
        };
        let working = ctx.working();
        let database_dir = working.database_dir();
        Self::command(
            prepare,
            &[
                (PHASE_VAR, OsStr::new("prepare")),
                (BACKUP_ID_VAR, OsStr::new(ctx.backup_id().as_str())),
                (WORKING_FOLDER_VAR, working.root().as_os_str()),
                (DATABASE_DIR_VAR, database_dir.as_os_str()),
            ],
        )
        .run(ctx.cancellation())
        .await?;
        Ok(())
    }

    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        if ctx.is_cancelled() {
            return Err(StrategyError::Cancelled);
        }
        let slot = DumpSlot::new(ctx.working());
        slot.begin(true).await?;
        let ran = Self::command(
            &self.config.backup,
            &[
                (PHASE_VAR, OsStr::new("backup")),
                (BACKUP_ID_VAR, OsStr::new(ctx.backup_id().as_str())),
                (WORKING_FOLDER_VAR, ctx.working().root().as_os_str()),
                (DATABASE_DIR_VAR, slot.partial().as_os_str()),
            ],
        )
        .run(ctx.cancellation())
        .await;
        let size = slot.finish(ran).await?;
        ctx.progress(Phase::BackupDatabase, size.bytes, Some(size.bytes), Unit::Bytes);
        Ok(StepReport { bytes: size.bytes, files: size.files, elapsed: started.elapsed(), ..Default::default() }
            .note("tool", "command")
            .note("atomic_snapshot", self.config.atomic_snapshot.to_string())
            .note("covered_by_filesystem", self.config.covered_by_filesystem.to_string()))
    }

    async fn check_restore_target(&self, target: &DatabaseTarget) -> Result<(), StrategyError> {
        let Some(check) = &self.config.check_restore_target else {
            return Ok(());
        };
        let ran = Self::command(
            check,
            &[(PHASE_VAR, OsStr::new("check-restore-target")), (TARGET_DATABASE_VAR, OsStr::new(&target.database))],
        )
        .run(&CancellationToken::new())
        .await;
        match ran {
            Ok(_) => Ok(()),
            Err(StrategyError::CommandFailed { status, stderr, .. }) => Err(StrategyError::TargetNotEmpty {
                target: target.database.clone(),
                detail: if stderr.is_empty() {
                    format!("the check_restore_target command refused it ({status})")
                } else {
                    format!("the check_restore_target command refused it ({status}): {stderr}")
                },
            }),
            Err(other) => Err(other),
        }
    }

    async fn restore(&self, ctx: &RestoreContext, target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let recorded = &ctx.metadata().database.name;
        if !recorded.is_empty() && recorded != STRATEGY {
            return Err(StrategyError::Incompatible {
                strategy: STRATEGY.to_owned(),
                reason: format!("the backup's database was made by the `{recorded}` strategy"),
            });
        }
        let source = ctx.source();
        let database_dir = source.database_dir();
        Self::command(
            &self.config.restore,
            &[
                (PHASE_VAR, OsStr::new("restore")),
                (BACKUP_ID_VAR, OsStr::new(ctx.metadata().id.as_str())),
                (WORKING_FOLDER_VAR, source.root().as_os_str()),
                (DATABASE_DIR_VAR, database_dir.as_os_str()),
                (TARGET_DATABASE_VAR, OsStr::new(&target.database)),
            ],
        )
        .run(ctx.cancellation())
        .await?;
        Ok(StepReport { elapsed: started.elapsed(), ..Default::default() }
            .note("tool", "command")
            .note("database", target.database.clone()))
    }
}
