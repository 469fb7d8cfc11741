//! The command line: every command, flag and example.

use std::net::SocketAddr;
use std::path::PathBuf;

use bitbucket_diy_core::simulator::Fault;
use clap::{Args, Parser, Subcommand, ValueEnum};

const MAIN_EXAMPLES: &str = "\
Examples:
  bitbucket-diy demo                          see everything it does, against a simulated Bitbucket
  bitbucket-diy config init bitbucket-diy.toml
  bitbucket-diy --config /etc/bitbucket-diy/config.toml config check
  bitbucket-diy backup                        (config from the search path below)
  bitbucket-diy list
  bitbucket-diy verify --latest --deep
  bitbucket-diy restore bitbucket-20260412-021500 --home /srv/bitbucket-restored --database bitbucket_restored

Configuration: --config FILE, else $BITBUCKET_DIY_CONFIG, ./bitbucket-diy.toml,
$XDG_CONFIG_HOME/bitbucket-diy/config.toml (~/.config/…), /etc/bitbucket-diy/config.toml.
Exit codes: 0 ok, 2 configuration, 3 Bitbucket (auth, network, lock, drain), 4 a backup step,
5 archive, 6 another run is active, 7 restore target not empty, 10 BITBUCKET LEFT LOCKED,
130 cancelled (Bitbucket unlocked). Full reference: docs/cli.md.";

/// Consistent, low-downtime backups of Atlassian Bitbucket Server and Data Center.
#[derive(Debug, Parser)]
#[command(name = "bitbucket-diy", version, after_help = MAIN_EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How output looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, timestamped log lines otherwise.
    Auto,
    /// Progress bars (drawn only on a terminal: elsewhere, plain messages without timestamps).
    Bars,
    /// Timestamped log lines: `2026-04-12T02:15:00Z [url] INFO: …`.
    Lines,
    /// One JSON object per event on stderr (machine-readable progress).
    Json,
    /// Nothing but warnings and errors.
    None,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: the first found of the search path below).
    #[arg(short, long, global = true, env = "BITBUCKET_DIY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More detail: -v adds the core's log, -vv debugging, -vvv tracing.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print one JSON document on stdout: the report, or {"error": {kind, exit_code, message}}.
    #[arg(long, global = true)]
    pub json: bool,
    /// How progress is shown on stderr.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, value_name = "MODE")]
    pub progress: ProgressMode,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a backup: prepare, lock, drain, copy, unlock, archive, prune.
    #[command(after_help = "\
Examples:
  bitbucket-diy backup
  bitbucket-diy backup --metrics-file /var/lib/node_exporter/textfile/bitbucket_diy.prom
  bitbucket-diy backup --json > last-backup.json

Ctrl-C or SIGTERM stops the copy and unlocks Bitbucket (exit 130). Exit 10 means Bitbucket could
not be unlocked: the message holds the command that unlocks it.")]
    Backup(BackupArgs),
    /// Restore a backup into a new home and a new database.
    #[command(after_help = "\
Examples:
  bitbucket-diy restore bitbucket-20260412-021500 --home /srv/bitbucket-new --database bitbucket_new
  bitbucket-diy restore /backup/archives/bitbucket-20260412-021500.tar.zst --home /srv/bb
  bitbucket-diy restore bitbucket-20260412-021500 --home /srv/bb --database bb \\
      --data-store /data/store1=/srv/store1

The home must be absent or empty and the database must not exist: nothing is overwritten.")]
    Restore(RestoreArgs),
    /// List the backups, newest first, with age, size and verification.
    #[command(after_help = "\
Examples:
  bitbucket-diy list
  bitbucket-diy list --json | jq -r '.[0].metadata.id'")]
    List,
    /// Check a backup against its manifest; --deep also test-restores it and runs git fsck.
    #[command(after_help = "\
Examples:
  bitbucket-diy verify bitbucket-20260412-021500
  bitbucket-diy verify --latest --deep

The outcome is recorded beside the archives and shown by `list`.")]
    Verify(VerifyArgs),
    /// Show the instance's state: version, running or in maintenance, the backup task.
    #[command(after_help = "\
Examples:
  bitbucket-diy status
  bitbucket-diy status --url https://bitbucket.example.com
  BITBUCKET_DIY_UNLOCK_TOKEN=… bitbucket-diy status     (also shows the maintenance task)")]
    Status(RemoteArgs),
    /// Take Bitbucket out of maintenance mode with its unlock token.
    #[command(after_help = "\
Examples:
  BITBUCKET_DIY_UNLOCK_TOKEN=0a1b… bitbucket-diy unlock --url https://bitbucket.example.com --user admin
  bitbucket-diy unlock --token-file /root/unlock-token
  echo 0a1b… | bitbucket-diy unlock --token -

The password comes from the configuration, BITBUCKET_DIY_BITBUCKET_PASSWORD or a prompt.
`--token VALUE` works too but shows the token to every user of the machine in `ps`.")]
    Unlock(RemoteArgs),
    /// Cancel Bitbucket's server-side backup task with its cancel token (does not unlock).
    #[command(after_help = "\
Examples:
  BITBUCKET_DIY_CANCEL_TOKEN=82c7… bitbucket-diy cancel --url https://bitbucket.example.com --user admin
  bitbucket-diy cancel --token-file /root/cancel-token")]
    Cancel(RemoteArgs),
    /// Run the Bitbucket simulator as a standalone server, to rehearse against.
    #[command(after_help = "\
Examples:
  bitbucket-diy simulate
  bitbucket-diy simulate --listen 127.0.0.1:0 --context-path /bitbucket --drain-delay 3s
  bitbucket-diy simulate --fault server-error:lock:2 --fault slow:2s:maintenance-state

Faults: never-drain, only-database-drains, task-fails, server-error-on-request:N,
server-error:ENDPOINT[:TIMES], drop-connection:ENDPOINT[:TIMES], answer-lost:ENDPOINT[:TIMES],
slow:DURATION[:ENDPOINT], html[:ENDPOINT], malformed-json:ENDPOINT, reject-unlock[:TIMES],
locked-by:OWNER. Endpoints: application-properties, status, lock, start-backup,
maintenance-state, progress, cancel-backup, unlock.")]
    Simulate(SimulateArgs),
    /// See everything bitbucket-diy does in one command: backup, verify and restore of a
    /// generated home against a simulated Bitbucket. Needs only git.
    #[command(after_help = "\
Examples:
  bitbucket-diy demo
  bitbucket-diy demo --dir /tmp/bitbucket-diy-demo     (kept, to look around afterwards)")]
    Demo(DemoArgs),
    /// Write, check or import a configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions.
    #[command(after_help = "\
Examples:
  bitbucket-diy completions bash > /etc/bash_completion.d/bitbucket-diy
  bitbucket-diy completions zsh > \"${fpath[1]}/_bitbucket-diy\"")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write a Prometheus textfile after the run (default: backup.metrics_file).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id, archive file name or path.
    pub archive: String,
    /// The new home: absent or empty.
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
    /// The new database (must not exist); not needed when the database lives in the home.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Restore a data store elsewhere than its original path: ORIGINAL=NEW (repeatable).
    #[arg(long, value_name = "ORIGINAL=NEW", value_parser = parse_mapping)]
    pub data_store: Vec<(PathBuf, PathBuf)>,
}

fn parse_mapping(text: &str) -> Result<(PathBuf, PathBuf), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => Ok((PathBuf::from(from), PathBuf::from(to))),
        _ => Err(format!("`{text}` is not ORIGINAL=NEW")),
    }
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup id, archive file name or path.
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub archive: Option<String>,
    /// Verify the newest backup.
    #[arg(long)]
    pub latest: bool,
    /// Also extract into a temporary folder and run `git fsck` on every repository.
    #[arg(long)]
    pub deep: bool,
}

/// How `status`, `unlock` and `cancel` reach Bitbucket, and the token.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Bitbucket's base URL (context path included); without it, the configuration's.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The admin user (default: the configuration's).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Extra CA certificate (PEM) to trust, with --url.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub ca_cert: Option<PathBuf>,
    /// The token, or `-` to read it from stdin. Prefer the environment variable
    /// (BITBUCKET_DIY_UNLOCK_TOKEN / BITBUCKET_DIY_CANCEL_TOKEN) or --token-file: a value here is
    /// visible to every user in `ps`.
    #[arg(long, value_name = "TOKEN|-", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the token from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7990", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The administrator's user name.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// The administrator's password (a fake server's, so it may be given here).
    #[arg(long, default_value = "admin")]
    pub password: String,
    /// Serve under this context path, e.g. /bitbucket.
    #[arg(long, default_value = "", value_name = "PATH")]
    pub context_path: String,
    /// How long draining takes once a backup starts ("500ms", "3s").
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_delay: std::time::Duration,
    /// The version application-properties reports.
    #[arg(long, default_value = "8.19.0", value_name = "VERSION")]
    pub bitbucket_version: String,
    /// Inject a fault (repeatable); see the list below.
    #[arg(long, value_name = "SPEC")]
    pub fault: Vec<Fault>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let signed: jiff::SignedDuration =
        text.trim().parse().map_err(|e| format!("`{text}` is not a duration such as \"500ms\" or \"2s\": {e}"))?;
    std::time::Duration::try_from(signed).map_err(|_| format!("`{text}` must not be negative"))
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in this folder (new or empty) and keep it; default: a temporary folder, removed at
    /// the end.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the temporary folder to look around afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// `config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented example configuration (to stdout without FILE).
    #[command(after_help = "\
Examples:
  bitbucket-diy config init /etc/bitbucket-diy/config.toml
  bitbucket-diy config init > bitbucket-diy.toml")]
    Init {
        /// Where to write it (refused if it exists, unless --force).
        file: Option<PathBuf>,
        /// Overwrite FILE.
        #[arg(long, requires = "file")]
        force: bool,
    },
    /// Validate the configuration and probe what can be probed without locking: tools,
    /// database connection, folders, Bitbucket's version and state.
    #[command(after_help = "\
Examples:
  bitbucket-diy --config /etc/bitbucket-diy/config.toml config check")]
    Check,
    /// Translate the vendor scripts' bitbucket.diy-backup.vars.sh into a configuration
    /// (the file is read, never run).
    #[command(after_help = "\
Examples:
  bitbucket-diy config import-vars /opt/atlassian-bitbucket-diy-backup/bitbucket.diy-backup.vars.sh > bitbucket-diy.toml")]
    ImportVars {
        /// The vars file.
        file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mappings_and_durations_parse() {
        assert_eq!(parse_mapping("/a=/b").unwrap(), (PathBuf::from("/a"), PathBuf::from("/b")));
        assert!(parse_mapping("/a").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), std::time::Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
