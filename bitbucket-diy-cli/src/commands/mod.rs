//! One module per command; each parses nothing, calls the core and renders.

mod backup;
mod config;
mod demo;
mod list;
mod remote;
mod restore;
mod simulate;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use bitbucket_diy_core::config::{DatabaseConfig, LoadedConfig, SecretSource, find_config_file};
use bitbucket_diy_core::orchestrator::BackupOrchestrator;
use bitbucket_diy_core::{BackupConfig, Error, Result};

use crate::cli::{Cli, Command};
use crate::progress::Renderer;
use crate::ui::Ui;

/// Run the command.
pub async fn run(cli: Cli, ui: Arc<Ui>) -> Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Backup(args) => backup::run(global, &ui, &args).await,
        Command::Restore(args) => restore::run(global, &ui, args).await,
        Command::List => list::run(global, &ui).await,
        Command::Verify(args) => verify::run(global, &ui, &args).await,
        Command::Status(args) => remote::status(global, &ui, &args).await,
        Command::Unlock(args) => remote::unlock(global, &ui, &args).await,
        Command::Cancel(args) => remote::cancel(global, &ui, &args).await,
        Command::Simulate(args) => simulate::run(&ui, args).await,
        Command::Demo(args) => demo::run(&ui, &args).await,
        Command::Config(command) => config::run(global, &ui, command).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "bitbucket-diy", &mut out);
            ui.stdout(&String::from_utf8_lossy(&out)).map_err(stdout_error)
        }
    }
}

/// Find and load the configuration (strict: unknown keys and wrong types are errors), print its
/// warnings, and name log lines after its instance.
pub fn load_config(config: Option<&std::path::Path>, ui: &Ui) -> Result<LoadedConfig> {
    let path = find_config_file(config)?;
    let loaded = BackupConfig::load(&path)?;
    for warning in &loaded.warnings {
        ui.warn(warning);
    }
    ui.set_label(loaded.config.bitbucket.url.as_str().trim_end_matches('/'));
    Ok(loaded)
}

/// Which passwords a command that never talks to Bitbucket needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `list`, `verify`: files only.
    Nothing,
    /// `restore`: the database.
    Database,
}

/// An orchestrator for the commands that never talk to Bitbucket (list, verify, restore): the
/// passwords they do not need are not even read, so `list` works where the backup's secrets are
/// not set.
pub fn offline_orchestrator(config: &BackupConfig, events: Arc<Renderer>, needs: Needs) -> Result<BackupOrchestrator> {
    let mut config = config.clone();
    config.bitbucket.password = SecretSource::Unset;
    if needs == Needs::Nothing {
        match &mut config.database {
            DatabaseConfig::Postgresql(pg) => pg.password = SecretSource::Unset,
            DatabaseConfig::Mysql(my) => my.password = SecretSource::Unset,
            _ => {}
        }
    }
    BackupOrchestrator::from_config(&config)?.events(events).build()
}

/// An error writing the report to stdout (a closed pipe, a full disk).
pub fn stdout_error(e: std::io::Error) -> Error {
    Error::Io { action: "writing the report to", path: PathBuf::from("stdout"), source: e }
}

/// Print `value` as JSON when asked to, else `human()`.
pub fn report<T: serde::Serialize>(ui: &Ui, value: &T, human: impl FnOnce() -> String) -> Result<()> {
    if ui.json_report() { ui.stdout_json(value) } else { ui.stdout(&human()) }.map_err(stdout_error)
}

/// A configuration or argument error naming `key`.
pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config(bitbucket_diy_core::config::ConfigError::Invalid { key: key.into(), reason: reason.into() })
}
