//! User commands run at named points of a backup.
//!
//! Each hook is a command line run by `/bin/sh -c`, one after another, with these environment
//! variables (never a password or token; never on the command line):
//!
//! | variable | value |
//! |---|---|
//! | `BITBUCKET_DIY_HOOK` | the point: `before_lock`, `after_unlock`, `after_archive`, `on_failure`, `finally` |
//! | `BITBUCKET_DIY_BACKUP_ID` | the backup id |
//! | `BITBUCKET_DIY_WORKING_FOLDER` | the working folder |
//! | `BITBUCKET_DIY_STATUS` | `running`, `success` or `failure` |
//! | `BITBUCKET_DIY_LOCK_WINDOW_SECONDS` | lock to unlock, once unlocked |
//! | `BITBUCKET_DIY_ARCHIVE` | the archive's path, once written |
//! | `BITBUCKET_DIY_ERROR_KIND` | on failure: the error kind (`strategy`, `left-locked`, …) |
//! | `BITBUCKET_DIY_ERROR` | on failure: the message (a left-locked message without its token) |
//!
//! A failing `before_lock` hook aborts the backup before the lock. Failures of later hooks are
//! reported as warnings: the backup they follow is complete. Each hook may run for at most
//! [`HOOK_TIMEOUT`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backup_id::BackupId;
use crate::config::HooksConfig;
use crate::error::Error;
use crate::strategy::{ChildCommand, StrategyError};

/// The longest a single hook may run before it is stopped.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    /// After prepare, before the lock.
    BeforeLock,
    /// Right after a successful unlock.
    AfterUnlock,
    /// After the archive is written and retention ran.
    AfterArchive,
    /// When the run failed.
    OnFailure,
    /// At the end, whatever happened.
    Finally,
}

impl HookPoint {
    /// The configuration key.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeLock => "before_lock",
            HookPoint::AfterUnlock => "after_unlock",
            HookPoint::AfterArchive => "after_archive",
            HookPoint::OnFailure => "on_failure",
            HookPoint::Finally => "finally",
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What hooks are told about the run.
#[derive(Debug, Clone, Default)]
pub(crate) struct HookEnv {
    pub backup_id: Option<BackupId>,
    pub working_folder: PathBuf,
    pub status: &'static str,
    pub lock_window: Option<Duration>,
    pub archive: Option<PathBuf>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
}

/// The configured hooks.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    config: HooksConfig,
}

impl Hooks {
    /// Hooks as configured in `[backup.hooks]`.
    pub fn new(config: HooksConfig) -> Self {
        Self { config }
    }

    fn commands(&self, point: HookPoint) -> &[String] {
        match point {
            HookPoint::BeforeLock => &self.config.before_lock,
            HookPoint::AfterUnlock => &self.config.after_unlock,
            HookPoint::AfterArchive => &self.config.after_archive,
            HookPoint::OnFailure => &self.config.on_failure,
            HookPoint::Finally => &self.config.finally,
        }
    }

    /// Run the hooks of `point` in order; the first failure stops them and is returned.
    pub(crate) async fn run(&self, point: HookPoint, env: &HookEnv) -> Result<(), Error> {
        for command in self.commands(point) {
            tracing::info!(hook = %point, "running hook");
            let mut child = ChildCommand::shell(command)
                .env("BITBUCKET_DIY_HOOK", point.as_str())
                .env("BITBUCKET_DIY_WORKING_FOLDER", &env.working_folder)
                .env("BITBUCKET_DIY_STATUS", env.status);
            if let Some(id) = &env.backup_id {
                child = child.env("BITBUCKET_DIY_BACKUP_ID", id.as_str());
            }
            if let Some(window) = env.lock_window {
                child = child.env("BITBUCKET_DIY_LOCK_WINDOW_SECONDS", format!("{:.3}", window.as_secs_f64()));
            }
            if let Some(archive) = &env.archive {
                child = child.env("BITBUCKET_DIY_ARCHIVE", archive);
            }
            if let Some(kind) = &env.error_kind {
                child = child.env("BITBUCKET_DIY_ERROR_KIND", kind);
            }
            if let Some(error) = &env.error {
                child = child.env("BITBUCKET_DIY_ERROR", error);
            }
            // Hooks also run after a cancellation, so they get their own token, fired by the timeout.
            let cancel = CancellationToken::new();
            let outcome = tokio::time::timeout(HOOK_TIMEOUT, child.run(&cancel)).await;
            let status = match outcome {
                Ok(Ok(_)) => continue,
                Ok(Err(StrategyError::CommandFailed { status, stderr, .. })) => {
                    if stderr.is_empty() {
                        status
                    } else {
                        format!("{status}: {stderr}")
                    }
                }
                Ok(Err(other)) => other.to_string(),
                Err(_) => {
                    cancel.cancel();
                    format!("did not finish within {HOOK_TIMEOUT:?}")
                }
            };
            return Err(Error::Hook { point, command: command.clone(), status });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hooks_get_documented_variables_and_stop_at_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let config = HooksConfig {
            on_failure: vec![
                format!(
                    "echo \"$BITBUCKET_DIY_HOOK $BITBUCKET_DIY_BACKUP_ID $BITBUCKET_DIY_STATUS $BITBUCKET_DIY_ERROR_KIND\" > {}",
                    out.display()
                ),
                "echo nope >&2; exit 4".to_owned(),
                format!("touch {}/never", dir.path().display()),
            ],
            ..HooksConfig::default()
        };
        let env = HookEnv {
            backup_id: Some("bitbucket-20260101-000000".parse().unwrap()),
            working_folder: dir.path().to_owned(),
            status: "failure",
            error_kind: Some("strategy".into()),
            ..HookEnv::default()
        };
        let err = Hooks::new(config).run(HookPoint::OnFailure, &env).await.unwrap_err();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "on_failure bitbucket-20260101-000000 failure strategy"
        );
        let text = err.to_string();
        assert!(text.contains("on_failure") && text.contains("exit code 4") && text.contains("nope"), "{text}");
        assert!(!dir.path().join("never").exists());
    }
}
