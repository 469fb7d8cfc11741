//! `command`: the user's own snapshot commands (ZFS, LVM, EBS, a SAN…).
//!
//! Each command line runs through `/bin/sh -c` in its own process group (cancellation stops it
//! and whatever it started), with these environment variables:
//!
//! | variable | value |
//! |---|---|
//! | `BITBUCKET_DIY_PHASE` | `prepare`, `backup` or `restore` |
//! | `BITBUCKET_DIY_BACKUP_ID` | the backup's id (on restore: the id of the backup restored) |
//! | `BITBUCKET_DIY_HOME` | the configured home (`filesystem.home`) |
//! | `BITBUCKET_DIY_DATA_STORES` | the data stores, separated by `:` (empty when none; on restore: the stores as backed up) |
//! | `BITBUCKET_DIY_WORKING_FOLDER` | the working folder (on restore: the extracted backup) |
//! | `BITBUCKET_DIY_HOME_COPY` | `<working folder>/bitbucket-home`: where a copy of the home goes, if the command makes one |
//! | `BITBUCKET_DIY_DATA_STORES_COPY` | `<working folder>/bitbucket-data-stores` |
//! | `BITBUCKET_DIY_TARGET_HOME` | restore only: the new home to restore into |
//! | `BITBUCKET_DIY_TARGET_DATA_STORES` | restore only: where each store goes, `:`-separated, in the order of `BITBUCKET_DIY_DATA_STORES` |
//!
//! The commands run in the working folder (on restore: the extracted backup). `prepare_command`
//! runs before the lock and is optional; `backup_command` runs while Bitbucket is drained (or,
//! with `atomic_snapshot = true` in zero-downtime mode, whenever the snapshot is due);
//! `restore_command` restores into `$BITBUCKET_DIY_TARGET_HOME`, which bitbucket-diy has checked
//! is absent or empty: restore into a new dataset or volume, never roll back in place.
//! A non-zero exit fails the step with the tail of the command's standard error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;

use crate::client::Drained;
use crate::config::{ConfigError, FilesystemConfig, InstanceType};
use crate::strategy::filesystem::target::{all_targets, data_store_plan, ensure_empty_target, mapped_targets};
use crate::strategy::{
    ChildCommand, FilesystemCapabilities, FilesystemStrategy, HomeTarget, RestoreContext, StepContext, StepReport,
    StrategyError, WorkingFolder,
};

/// The `command` filesystem strategy.
#[derive(Debug, Clone)]
pub struct CommandFilesystem {
    home: PathBuf,
    data_stores: Vec<PathBuf>,
    prepare_command: Option<String>,
    backup_command: String,
    restore_command: String,
    atomic_snapshot: bool,
}

impl CommandFilesystem {
    /// Build from `[filesystem]`: `backup_command` and `restore_command` are required.
    /// `separate_database` and `instance` do not change what a snapshot holds; they are taken for
    /// symmetry with the other strategies.
    pub fn from_config(
        cfg: &FilesystemConfig,
        _separate_database: bool,
        _instance: InstanceType,
    ) -> Result<Self, ConfigError> {
        let required = |value: &Option<String>, key: &str, what: &str| match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(ConfigError::Missing {
                key: format!("filesystem.{key}"),
                hint: format!("type = \"command\" needs a shell command that {what}"),
            }),
        };
        let backup_command =
            required(&cfg.backup_command, "backup_command", "takes the snapshot while Bitbucket is drained")?;
        let restore_command =
            required(&cfg.restore_command, "restore_command", "restores into $BITBUCKET_DIY_TARGET_HOME")?;
        let prepare_command =
            cfg.prepare_command.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned);
        Ok(Self {
            home: cfg.home.clone(),
            data_stores: cfg.data_stores.clone(),
            prepare_command,
            backup_command,
            restore_command,
            atomic_snapshot: cfg.atomic_snapshot,
        })
    }

    fn command(
        &self,
        line: &str,
        phase: &str,
        backup_id: &str,
        working: &WorkingFolder,
        data_stores: &[PathBuf],
    ) -> ChildCommand {
        ChildCommand::shell(line)
            .env("BITBUCKET_DIY_PHASE", phase)
            .env("BITBUCKET_DIY_BACKUP_ID", backup_id)
            .env("BITBUCKET_DIY_HOME", &self.home)
            .env("BITBUCKET_DIY_DATA_STORES", join_paths(data_stores))
            .env("BITBUCKET_DIY_WORKING_FOLDER", working.root())
            .env("BITBUCKET_DIY_HOME_COPY", working.home_dir())
            .env("BITBUCKET_DIY_DATA_STORES_COPY", working.data_stores_dir())
            .current_dir(working.root())
    }

    async fn run_step(&self, ctx: &StepContext, line: &str, phase: &str) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let root = ctx.working().root();
        std::fs::create_dir_all(root).map_err(|e| StrategyError::io("creating", root, e))?;
        let out = self
            .command(line, phase, ctx.backup_id().as_str(), ctx.working(), &self.data_stores)
            .run(ctx.cancellation())
            .await?;
        let report = StepReport { elapsed: started.elapsed(), ..StepReport::default() };
        Ok(with_output_note(report, &out.stdout_text()))
    }
}

/// Keep the command's last line of output: snapshot names are worth recording.
fn with_output_note(report: StepReport, stdout: &str) -> StepReport {
    match stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some(last) => report.note("command_output", last.chars().take(200).collect::<String>()),
        None => report,
    }
}

fn join_paths(paths: &[PathBuf]) -> OsString {
    let mut joined = OsString::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(p.as_os_str());
    }
    joined
}

#[async_trait]
impl FilesystemStrategy for CommandFilesystem {
    fn name(&self) -> &str {
        "command"
    }

    fn capabilities(&self) -> FilesystemCapabilities {
        FilesystemCapabilities::new(self.prepare_command.is_some(), self.atomic_snapshot)
    }

    async fn check(&self) -> Result<(), StrategyError> {
        if Path::new("/bin/sh").exists() {
            Ok(())
        } else {
            Err(StrategyError::ToolMissing { tool: "/bin/sh".to_owned(), hint: "a POSIX shell is required".to_owned() })
        }
    }

    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        match &self.prepare_command {
            Some(line) => self.run_step(ctx, line, "prepare").await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        self.run_step(ctx, &self.backup_command, "backup").await
    }

    async fn check_restore_target(&self, target: &HomeTarget) -> Result<(), StrategyError> {
        mapped_targets(target).iter().try_for_each(|t| ensure_empty_target(t))
    }

    async fn restore(&self, ctx: &RestoreContext, target: &HomeTarget) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        for t in all_targets(ctx, target) {
            ensure_empty_target(&t)?;
        }
        let plan = data_store_plan(ctx, target);
        let originals: Vec<PathBuf> = plan.iter().map(|(o, _, _)| o.clone()).collect();
        let restored: Vec<PathBuf> = plan.iter().map(|(_, _, r)| r.clone()).collect();
        let out = self
            .command(&self.restore_command, "restore", ctx.metadata().id.as_str(), ctx.source(), &originals)
            .env("BITBUCKET_DIY_TARGET_HOME", &target.home)
            .env("BITBUCKET_DIY_TARGET_DATA_STORES", join_paths(&restored))
            .run(ctx.cancellation())
            .await?;
        let report = StepReport { elapsed: started.elapsed(), ..StepReport::default() };
        Ok(with_output_note(report, &out.stdout_text()))
    }
}
