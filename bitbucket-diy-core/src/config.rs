//! [`BackupConfig`]: one serde type for the TOML file, `BITBUCKET_DIY_*` environment overrides,
//! the CLI and Python.
//!
//! Loading is strict: an unknown key or a wrong type is an error naming the file, the key and the
//! line (TOML) or the environment variable. Secrets are never plain values unless the user insists;
//! a password written into the file itself loads with a warning.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::serde_duration::friendly;

mod example;
pub use example::EXAMPLE_CONFIG;

/// TOML errors quote the offending source line; one holding a password (a plain `password = …`
/// with a typo on its line) must not carry it into a message, a log or a terminal.
fn without_password_lines(message: &str) -> String {
    let lines: Vec<String> = message
        .lines()
        .map(|line| match line.split_once(" | ") {
            // A quoted source line: `<line number> | <text>`.
            Some((number, text))
                if !number.trim().is_empty()
                    && number.trim().bytes().all(|b| b.is_ascii_digit())
                    && text.to_ascii_lowercase().contains("password") =>
            {
                format!("{number} | (a line holding a password: not shown)")
            }
            _ => line.to_owned(),
        })
        .collect();
    lines.join("\n")
}

/// A password written as a number, a boolean or a list cannot be read as a string, and serde's
/// message would quote the value: refuse it by name, without the value. `is_string` tells, per
/// section, whether a `password` key is there and is a string.
fn refuse_non_string_passwords(is_string: impl Fn(&str) -> Option<bool>) -> Result<(), ConfigError> {
    match SECTIONS.iter().find(|section| is_string(section) == Some(false)) {
        Some(section) => Err(ConfigError::invalid(
            format!("{section}.password"),
            "must be a string in quotes (the value is not shown)",
        )),
        None => Ok(()),
    }
}

/// serde reads an internally tagged enum (`[database]`, tagged by `type`) into a buffer first, so
/// a value of the wrong type there is reported at the section header without its key. Reading the
/// section again on its own names the key.
fn database_key_hint(table: &toml::Table) -> Option<String> {
    let mut fields = table.get("database")?.as_table()?.clone();
    let kind = fields.remove("type")?;
    let fields = toml::Value::Table(fields);
    let error = match kind.as_str()? {
        "postgresql" => fields.try_into::<PostgresConfig>().err()?,
        "mysql" => fields.try_into::<MysqlConfig>().err()?,
        "command" => fields.try_into::<CommandDatabaseConfig>().err()?,
        _ => return None,
    };
    let text = error.to_string();
    // A value error ends with "in `key`"; an unknown key is named by the first message already.
    let (message, key) = text.trim_end().rsplit_once("\nin `")?;
    Some(format!("`database.{}`: {message}", key.trim_end_matches('`')))
}

/// Prefix of every environment variable that overrides a key: `BITBUCKET_DIY_<SECTION>_<KEY>`,
/// e.g. `BITBUCKET_DIY_BITBUCKET_URL` or `BITBUCKET_DIY_DATABASE_PASSWORD`.
pub const ENV_PREFIX: &str = "BITBUCKET_DIY_";

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "BITBUCKET_DIY_CONFIG";

/// The sections of the file, in order.
pub const SECTIONS: [&str; 5] = ["bitbucket", "database", "filesystem", "archive", "backup"];

/// Tables inside sections that environment overrides reach (`BITBUCKET_DIY_ARCHIVE_REMOTE_KEEP`).
const SUBSECTIONS: [(&str, &str); 2] = [("archive", "remote"), ("archive", "encryption")];

/// A configuration problem.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// No configuration file was given or found.
    #[error("no configuration file: pass --config FILE, set {CONFIG_ENV}, or create one of {}", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// Where we looked.
        searched: Vec<PathBuf>,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file (or "configuration" when given as text).
        origin: String,
        /// The parser's message: line, column, key and what was expected.
        message: String,
    },
    /// A value set through the environment is invalid.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A required value is missing.
    #[error("`{key}` is required: {hint}")]
    Missing {
        /// `section.key`.
        key: String,
        /// How to set it.
        hint: String,
    },
    /// A value is present but not acceptable.
    #[error("`{key}` is invalid: {reason}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// Where a secret comes from. At most one of the three keys may be set.
#[derive(Default)]
struct SecretKeys {
    password: Option<SecretString>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
}

/// A resolved way to obtain a secret, without holding it longer than needed.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum SecretSource {
    /// Not configured.
    #[default]
    Unset,
    /// Written as a plain value (in the file, or through a `BITBUCKET_DIY_*` variable).
    Value(SecretString),
    /// Read from this environment variable when needed.
    Env(String),
    /// Read from this file (first line, trailing newline removed) when needed.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Unset => f.write_str("Unset"),
            SecretSource::Value(_) => f.write_str("Value([REDACTED])"),
            SecretSource::Env(var) => write!(f, "Env({var:?})"),
            SecretSource::File(path) => write!(f, "File({path:?})"),
        }
    }
}

impl SecretSource {
    fn from_keys(section: &str, keys: SecretKeys) -> Result<Self, ConfigError> {
        let set = [keys.password.is_some(), keys.password_env.is_some(), keys.password_file.is_some()];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError::invalid(
                format!("{section}.password"),
                "set only one of `password`, `password_env` and `password_file`",
            ));
        }
        Ok(match (keys.password, keys.password_env, keys.password_file) {
            (Some(v), _, _) => SecretSource::Value(v),
            (_, Some(var), _) => SecretSource::Env(var),
            (_, _, Some(path)) => SecretSource::File(path),
            _ => SecretSource::Unset,
        })
    }

    /// Whether any source is configured.
    pub fn is_set(&self) -> bool {
        !matches!(self, SecretSource::Unset)
    }

    /// Read the secret. `key` names the setting in errors (`bitbucket.password`).
    pub fn resolve(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        match self {
            SecretSource::Unset => Ok(None),
            SecretSource::Value(v) => Ok(Some(v.clone())),
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) => Ok(Some(SecretString::from(v))),
                Err(_) => Err(ConfigError::Missing {
                    key: key.to_owned(),
                    hint: format!("`{key}_env` names the environment variable {var}, which is not set"),
                }),
            },
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    key: format!("{key}_file"),
                    reason: format!("cannot read {}: {e}", path.display()),
                })?;
                let first = text.lines().next().unwrap_or_default().to_owned();
                Ok(Some(SecretString::from(first)))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// [bitbucket]

/// Which kind of node is backed up; Mesh nodes have no database and other excludes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    /// Bitbucket Server or Data Center (the shared home).
    #[default]
    Bitbucket,
    /// A Bitbucket Mesh node.
    Mesh,
}

/// `[bitbucket]`: how to reach the instance.
#[derive(Debug, Clone, Serialize)]
pub struct BitbucketConfig {
    /// Base URL including any context path, e.g. `https://bitbucket.example.com:7990/bitbucket`.
    pub url: Url,
    /// A user with system-admin permission.
    pub user: String,
    /// Where the password comes from.
    #[serde(skip)]
    pub password: SecretSource,
    /// Extra CA certificate (PEM) to trust.
    pub ca_cert: Option<PathBuf>,
    /// Skip TLS verification (a warning is printed on every run).
    pub insecure_skip_tls_verify: bool,
    /// Connection timeout.
    #[serde(with = "friendly")]
    pub connect_timeout: Duration,
    /// Per-request timeout.
    #[serde(with = "friendly")]
    pub request_timeout: Duration,
    /// Bitbucket or Mesh.
    pub instance_type: InstanceType,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBitbucket {
    url: Url,
    user: String,
    password: Option<SecretString>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    #[serde(default = "default_connect_timeout", with = "friendly")]
    connect_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "friendly")]
    request_timeout: Duration,
    #[serde(default)]
    instance_type: InstanceType,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

impl<'de> Deserialize<'de> for BitbucketConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawBitbucket::deserialize(d)?;
        let keys =
            SecretKeys { password: raw.password, password_env: raw.password_env, password_file: raw.password_file };
        let password = SecretSource::from_keys("bitbucket", keys).map_err(serde::de::Error::custom)?;
        Ok(Self {
            url: raw.url,
            user: raw.user,
            password,
            ca_cert: raw.ca_cert,
            insecure_skip_tls_verify: raw.insecure_skip_tls_verify,
            connect_timeout: raw.connect_timeout,
            request_timeout: raw.request_timeout,
            instance_type: raw.instance_type,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// [database]

/// `[database]`: which strategy dumps and restores the database, and its settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DatabaseConfig {
    /// `pg_dump -Fd -j N` / `pg_restore -j N`.
    Postgresql(PostgresConfig),
    /// `mysqldump --single-transaction` / `mysql`.
    Mysql(MysqlConfig),
    /// The user's own commands.
    Command(CommandDatabaseConfig),
    /// The database lives in the home or on the snapshotted volume.
    #[default]
    None,
}

impl DatabaseConfig {
    /// The strategy name as written in `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            DatabaseConfig::Postgresql(_) => "postgresql",
            DatabaseConfig::Mysql(_) => "mysql",
            DatabaseConfig::Command(_) => "command",
            DatabaseConfig::None => "none",
        }
    }
}

/// Settings of the `postgresql` strategy.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresConfig {
    /// Server host (or a socket directory).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The database to back up.
    pub database: String,
    /// The user to connect as.
    pub user: String,
    /// Where the password comes from (reaches pg_dump through a private passfile).
    #[serde(skip)]
    pub password: SecretSource,
    /// Parallel jobs for `pg_dump -j` and `pg_restore -j`.
    pub jobs: u32,
    /// Folder holding `pg_dump`, `pg_restore` and `psql`; `PATH` when unset.
    pub bin_dir: Option<PathBuf>,
    /// The database to connect to when creating the restore target.
    pub maintenance_database: String,
    /// Export a snapshot while Bitbucket is drained and run `pg_dump --snapshot` after the
    /// unlock, so the lock window holds the export, not the dump.
    pub dump_after_unlock: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    #[serde(default = "default_host")]
    host: String,
    #[serde(default = "default_pg_port")]
    port: u16,
    #[serde(default = "default_db_name")]
    database: String,
    #[serde(default = "default_db_name")]
    user: String,
    password: Option<SecretString>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default = "default_jobs")]
    jobs: u32,
    bin_dir: Option<PathBuf>,
    #[serde(default = "default_pg_maintenance_db")]
    maintenance_database: String,
    #[serde(default = "default_true")]
    dump_after_unlock: bool,
}

impl<'de> Deserialize<'de> for PostgresConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPostgres::deserialize(d)?;
        let keys =
            SecretKeys { password: raw.password, password_env: raw.password_env, password_file: raw.password_file };
        let password = SecretSource::from_keys("database", keys).map_err(serde::de::Error::custom)?;
        if raw.jobs == 0 {
            return Err(serde::de::Error::custom("database.jobs must be at least 1"));
        }
        Ok(Self {
            host: raw.host,
            port: raw.port,
            database: raw.database,
            user: raw.user,
            password,
            jobs: raw.jobs,
            bin_dir: raw.bin_dir,
            maintenance_database: raw.maintenance_database,
            dump_after_unlock: raw.dump_after_unlock,
        })
    }
}

/// Settings of the `mysql` strategy (MySQL and MariaDB).
#[derive(Debug, Clone, Serialize)]
pub struct MysqlConfig {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The database to back up.
    pub database: String,
    /// The user to connect as.
    pub user: String,
    /// Where the password comes from (reaches the tools through a private option file).
    #[serde(skip)]
    pub password: SecretSource,
    /// Extra `mysqldump` options (the reference scripts' `MYSQL_BACKUP_OPTIONS`).
    pub dump_options: Vec<String>,
    /// Folder holding `mysqldump` and `mysql`; `PATH` when unset.
    pub bin_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    #[serde(default = "default_host")]
    host: String,
    #[serde(default = "default_mysql_port")]
    port: u16,
    #[serde(default = "default_db_name")]
    database: String,
    #[serde(default = "default_db_name")]
    user: String,
    password: Option<SecretString>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    dump_options: Vec<String>,
    bin_dir: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for MysqlConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMysql::deserialize(d)?;
        let keys =
            SecretKeys { password: raw.password, password_env: raw.password_env, password_file: raw.password_file };
        let password = SecretSource::from_keys("database", keys).map_err(serde::de::Error::custom)?;
        Ok(Self {
            host: raw.host,
            port: raw.port,
            database: raw.database,
            user: raw.user,
            password,
            dump_options: raw.dump_options,
            bin_dir: raw.bin_dir,
        })
    }
}

/// Settings of the `command` database strategy: the user's own commands, run by `/bin/sh -c`
/// with `BITBUCKET_DIY_*` environment variables (see docs/strategies.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandDatabaseConfig {
    /// Run before the lock (optional).
    #[serde(default)]
    pub prepare: Option<String>,
    /// Run while drained; writes into `$BITBUCKET_DIY_DATABASE_DIR`.
    pub backup: String,
    /// Restores from `$BITBUCKET_DIY_DATABASE_DIR` into `$BITBUCKET_DIY_TARGET_DATABASE`.
    pub restore: String,
    /// Exits non-zero when `$BITBUCKET_DIY_TARGET_DATABASE` is not new and empty (optional).
    #[serde(default)]
    pub check_restore_target: Option<String>,
    /// The backup command takes a snapshot at the same instant as the filesystem's.
    #[serde(default)]
    pub atomic_snapshot: bool,
    /// The database is captured by the filesystem step.
    #[serde(default)]
    pub covered_by_filesystem: bool,
}

fn default_host() -> String {
    "localhost".to_owned()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_mysql_port() -> u16 {
    3306
}
fn default_db_name() -> String {
    "bitbucket".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_pg_maintenance_db() -> String {
    "postgres".to_owned()
}
fn default_jobs() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8) as u32)
}

// ---------------------------------------------------------------------------------------------
// [filesystem]

/// Which filesystem strategy copies the home.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilesystemType {
    /// Pure-Rust incremental copy (default; needs no rsync).
    #[default]
    Native,
    /// `rsync` with the reference scripts' flags.
    Rsync,
    /// The user's own snapshot commands.
    Command,
}

/// `[filesystem]`: what to copy and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    /// The strategy.
    #[serde(rename = "type", default)]
    pub kind: FilesystemType,
    /// `BITBUCKET_HOME` (the shared home on Data Center).
    pub home: PathBuf,
    /// Data stores: extra folders of repositories (Data Center 6.0+).
    #[serde(default)]
    pub data_stores: Vec<PathBuf>,
    /// Extra excludes, rsync-style, anchored at the home with a leading `/`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Repository ids left out of the backup.
    #[serde(default)]
    pub exclude_repos: Vec<u64>,
    /// `native`: copy threads (default: available cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// `rsync`: extra options.
    #[serde(default)]
    pub rsync_options: Vec<String>,
    /// `command`: run before the lock (optional).
    #[serde(default)]
    pub prepare_command: Option<String>,
    /// `command`: run while drained (required for `command`).
    #[serde(default)]
    pub backup_command: Option<String>,
    /// `command`: restore into `$BITBUCKET_DIY_TARGET_HOME` (required for `command`).
    #[serde(default)]
    pub restore_command: Option<String>,
    /// `command`: the backup command takes an atomic, point-in-time snapshot.
    #[serde(default)]
    pub atomic_snapshot: bool,
}

// ---------------------------------------------------------------------------------------------
// [archive]

/// Which archive strategy writes the backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveType {
    /// `<id>.tar.zst`, multithreaded zstd (default).
    #[default]
    TarZstd,
    /// `<id>.tar.gz`, the reference scripts' format.
    TarGz,
    /// No archive: the working folder is the backup.
    None,
}

/// `[archive]`: where archives go and how many to keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The strategy.
    #[serde(rename = "type", default)]
    pub kind: ArchiveType,
    /// Where archives are kept (required unless `type = "none"`).
    #[serde(default)]
    pub folder: Option<PathBuf>,
    /// Compression level (zstd 1–19, gzip 1–9).
    #[serde(default)]
    pub level: Option<i32>,
    /// Compression threads; 0 means one per core.
    #[serde(default)]
    pub threads: u32,
    /// Keep the newest N archives; 0 keeps all.
    #[serde(default)]
    pub keep: usize,
    /// `[archive.remote]`: copies on object storage (docs/offsite.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteConfig>,
    /// `[archive.encryption]`: age encryption at rest (docs/offsite.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            kind: ArchiveType::TarZstd,
            folder: None,
            level: None,
            threads: 0,
            keep: 0,
            remote: None,
            encryption: None,
        }
    }
}

/// `[archive.remote]`: where archives are uploaded, and how. Secrets are never values here:
/// credentials come from the environment (the provider's standard variables, or the variables and
/// files named by `*_env` / `*_file`), so `Debug` and `Serialize` show nothing secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `s3://bucket/prefix` (also S3-compatible stores, with `endpoint`), `gs://bucket/prefix`,
    /// `az://container/prefix`.
    pub url: Url,
    /// S3-compatible endpoint, e.g. `https://minio.example.com:9000`.
    #[serde(default)]
    pub endpoint: Option<Url>,
    /// S3 region (default: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (a MinIO on loopback); HTTPS only otherwise.
    #[serde(default)]
    pub allow_http: bool,
    /// S3 access key id (not a secret).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Environment variable holding the S3 access key id.
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// Environment variable holding the S3 secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Owner-only file holding the S3 secret access key (first line).
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Environment variable holding an S3 session token (temporary credentials).
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// Also keep each archive in `archive.folder`; false uploads only (nothing written locally).
    #[serde(default = "default_true")]
    pub keep_local: bool,
    /// Keep the newest N archives in the store (default: `archive.keep`); 0 keeps all.
    #[serde(default)]
    pub keep: Option<usize>,
    /// Read each upload back and compare its SHA-256 before listing it (else: size only).
    #[serde(default = "default_true")]
    pub verify_upload: bool,
    /// Upload part size in MiB (5–5120; doubled every 2,500 parts).
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: usize,
    /// Parts uploaded at once (1–64).
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Retries of each request on network errors, timeouts and 5xx answers.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// No retry starts later than this after a request's first attempt.
    #[serde(default = "default_retry_timeout", with = "friendly")]
    pub retry_timeout: Duration,
    /// Connection timeout.
    #[serde(default = "default_connect_timeout", with = "friendly")]
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of an answer.
    #[serde(default = "default_read_timeout", with = "friendly")]
    pub read_timeout: Duration,
    /// Further `object_store` options (`aws_virtual_hosted_style_request = "true"`, …); keys that
    /// name secrets are refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_part_size_mib() -> usize {
    16
}
fn default_upload_concurrency() -> usize {
    4
}
fn default_max_retries() -> usize {
    10
}
fn default_retry_timeout() -> Duration {
    Duration::from_secs(180)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(120)
}

/// `[archive.encryption]`: archives are encrypted to `recipients` (public keys); an identity
/// (private keys) is needed only to verify or restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age public keys (`age1…`).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of age public keys, one per line.
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
    /// The age identity file used to verify and restore (on restore hosts; never needed to back
    /// up).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// [backup]

/// `[backup.hooks]`: commands run by `/bin/sh -c` at named points.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Before the lock, after prepare. A failure aborts the backup before locking.
    #[serde(default)]
    pub before_lock: Vec<String>,
    /// Right after a successful unlock.
    #[serde(default)]
    pub after_unlock: Vec<String>,
    /// After the archive is written and retention ran.
    #[serde(default)]
    pub after_archive: Vec<String>,
    /// When the run failed (after the unlock).
    #[serde(default)]
    pub on_failure: Vec<String>,
    /// At the very end, whatever happened.
    #[serde(default)]
    pub finally: Vec<String>,
}

/// `[backup]`: the run itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// The working folder (reused between runs so copies are incremental).
    pub working_folder: PathBuf,
    /// Skip the lock; requires strategies that promise atomic snapshots.
    #[serde(default)]
    pub zero_downtime: bool,
    /// Prefix of backup ids (`<prefix><UTC timestamp>`).
    #[serde(default = "default_id_prefix")]
    pub id_prefix: String,
    /// Give up waiting for the drain after this long (then unlock and fail).
    #[serde(default = "default_drain_timeout", with = "friendly")]
    pub drain_timeout: Duration,
    /// Interval between maintenance-state polls.
    #[serde(default = "default_poll_interval", with = "friendly")]
    pub poll_interval: Duration,
    /// Give up on the whole locked phase after this long (then unlock and fail).
    #[serde(default = "default_locked_timeout", with = "friendly")]
    pub locked_timeout: Duration,
    /// A Prometheus textfile to write after every run (for node_exporter).
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
    /// Hook commands.
    #[serde(default)]
    pub hooks: HooksConfig,
}

fn default_id_prefix() -> String {
    "bitbucket-".to_owned()
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_locked_timeout() -> Duration {
    Duration::from_secs(4 * 3600)
}

// ---------------------------------------------------------------------------------------------
// The whole file

/// The whole configuration: the TOML file's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `[bitbucket]`.
    pub bitbucket: BitbucketConfig,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[filesystem]`.
    pub filesystem: FilesystemConfig,
    /// `[archive]`.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// `[backup]`.
    pub backup: BackupSettings,
}

/// A configuration with what loading it had to say.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: BackupConfig,
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Things that are allowed but unwise (a plain password in the file).
    pub warnings: Vec<String>,
}

impl BackupConfig {
    /// Load `path`, apply `BITBUCKET_DIY_*` overrides from the process environment, validate.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Self::load`] with an explicit environment (tests, embedding).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
        let mut loaded = Self::from_toml_with_env(&text, &path.display().to_string(), env)?;
        loaded.path = Some(path.to_owned());
        Ok(loaded)
    }

    /// Parse TOML text (named `origin` in errors), apply overrides from `env`, validate.
    ///
    /// `env` is any list of variables: the process environment (`std::env::vars()`, what
    /// [`Self::load`] passes) or a fixed one. Variables named `BITBUCKET_DIY_<SECTION>_<KEY>`
    /// override that key; others are ignored.
    ///
    /// ```
    /// use bitbucket_diy_core::BackupConfig;
    /// use bitbucket_diy_core::config::DatabaseConfig;
    ///
    /// let text = r#"
    /// [bitbucket]
    /// url = "https://bitbucket.example.com/bitbucket"
    /// user = "backup-admin"
    /// password_env = "BITBUCKET_BACKUP_PASSWORD"
    ///
    /// [database]
    /// type = "postgresql"
    /// host = "db.example.com"
    ///
    /// [filesystem]
    /// home = "/var/atlassian/application-data/bitbucket"
    ///
    /// [archive]
    /// folder = "/backup/bitbucket/archives"
    ///
    /// [backup]
    /// working_folder = "/backup/bitbucket/work"
    /// "#;
    /// let env = [("BITBUCKET_DIY_ARCHIVE_KEEP".to_owned(), "14".to_owned())];
    /// let loaded = BackupConfig::from_toml_with_env(text, "config.toml", env)?;
    /// assert_eq!(loaded.config.archive.keep, 14);
    /// let DatabaseConfig::Postgresql(pg) = &loaded.config.database else { unreachable!() };
    /// assert_eq!(pg.port, 5432); // the documented default
    ///
    /// // A typo is an error naming the file, the key and the line, never a silent default.
    /// let typo = text.replace("[archive]", "[archive]\nkepp = 7");
    /// let error = BackupConfig::from_toml_with_env(&typo, "config.toml", []).unwrap_err();
    /// assert!(error.to_string().contains("kepp") && error.to_string().contains("line 15"));
    ///
    /// // So is a bad override, naming the variable.
    /// let env = [("BITBUCKET_DIY_ARCHIVE_KEEP".to_owned(), "many".to_owned())];
    /// let error = BackupConfig::from_toml_with_env(text, "config.toml", env).unwrap_err();
    /// assert!(error.to_string().contains("BITBUCKET_DIY_ARCHIVE_KEEP"));
    /// # Ok::<(), bitbucket_diy_core::ConfigError>(())
    /// ```
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LoadedConfig, ConfigError> {
        // First pass on the text alone: errors carry the file's line and column.
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            origin: origin.to_owned(),
            message: without_password_lines(&e.to_string()),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
        refuse_non_string_passwords(|section| {
            table.get(section).and_then(|t| t.get("password")).map(toml::Value::is_str)
        })?;
        let plain_passwords = plain_password_keys(&table);
        let from_file: BackupConfig = toml::from_str(text).map_err(|e| {
            let mut error = parse_err(e);
            if let (ConfigError::Parse { message, .. }, Some(hint)) = (&mut error, database_key_hint(&table)) {
                message.push('\n');
                message.push_str(&hint);
            }
            error
        })?;

        let overridden = apply_env_overrides(&mut table, env)?;
        let config = if overridden.is_empty() {
            from_file
        } else {
            BackupConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
                var: overridden.join(", "),
                message: format!("after applying these overrides to {origin}: {}", e.message()),
            })?
        };
        config.validate()?;
        let warnings = plain_passwords
            .into_iter()
            .filter(|key| !overridden.iter().any(|var| env_var_for(key) == *var))
            .map(|key| {
                format!(
                    "{origin}: `{key}` holds a plain password; prefer `{key}_env` or `{key}_file` \
                     (and make the file readable only by its owner)"
                )
            })
            .collect();
        Ok(LoadedConfig { config, path: None, warnings })
    }

    /// Parse a JSON object of the same shape (Python dicts arrive this way). No overrides.
    /// Errors name the dotted key (`backup.poll_interval: unknown field …`); the JSON's line and
    /// column are left out, as the caller never saw that text.
    pub fn from_json_str(json: &str) -> Result<LoadedConfig, ConfigError> {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(json) {
            refuse_non_string_passwords(|section| {
                value.get(section)?.get("password").map(serde_json::Value::is_string)
            })?;
        }
        let deserializer = &mut serde_json::Deserializer::from_str(json);
        let config: BackupConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let inner = e.inner();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let text = inner.to_string();
            let message = text.strip_suffix(&position).unwrap_or(&text);
            let path = e.path().to_string();
            let message = if path == "." { message.to_owned() } else { format!("`{path}`: {message}") };
            ConfigError::Parse { origin: "configuration".to_owned(), message }
        })?;
        config.validate()?;
        Ok(LoadedConfig { config, path: None, warnings: Vec::new() })
    }

    /// Check what the types alone cannot: combinations, required-by-type keys, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.bitbucket.url;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid("bitbucket.url", format!("`{url}` must start with http:// or https://")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(
                "bitbucket.url",
                "must not carry credentials; use `user` and `password_env`/`password_file`",
            ));
        }
        if self.bitbucket.user.trim().is_empty() {
            return Err(ConfigError::invalid("bitbucket.user", "must not be empty"));
        }
        if !self.filesystem.home.is_absolute() {
            return Err(ConfigError::invalid("filesystem.home", "must be an absolute path"));
        }
        if !self.backup.working_folder.is_absolute() {
            return Err(ConfigError::invalid("backup.working_folder", "must be an absolute path"));
        }
        if self.backup.working_folder.starts_with(&self.filesystem.home) {
            return Err(ConfigError::invalid(
                "backup.working_folder",
                "must not be inside filesystem.home (the backup would copy itself)",
            ));
        }
        for store in &self.filesystem.data_stores {
            if !store.is_absolute() {
                return Err(ConfigError::invalid(
                    "filesystem.data_stores",
                    format!("{} must be absolute", store.display()),
                ));
            }
        }
        crate::backup_id::BackupId::generate(&self.backup.id_prefix, jiff::Timestamp::UNIX_EPOCH).map_err(|_| {
            ConfigError::invalid("backup.id_prefix", "may hold only ASCII letters, digits, '.', '_' and '-'")
        })?;
        if self.backup.poll_interval.is_zero() {
            return Err(ConfigError::invalid("backup.poll_interval", "must be more than zero"));
        }
        self.validate_filesystem()?;
        self.validate_archive()
    }

    fn validate_filesystem(&self) -> Result<(), ConfigError> {
        let fs = &self.filesystem;
        let only = |set: bool, key: &str, kind: &str| {
            if set && fs.kind != kind_of(kind) {
                Err(ConfigError::invalid(format!("filesystem.{key}"), format!("applies only to type = \"{kind}\"")))
            } else {
                Ok(())
            }
        };
        only(fs.threads.is_some(), "threads", "native")?;
        only(!fs.rsync_options.is_empty(), "rsync_options", "rsync")?;
        only(fs.prepare_command.is_some(), "prepare_command", "command")?;
        only(fs.backup_command.is_some(), "backup_command", "command")?;
        only(fs.restore_command.is_some(), "restore_command", "command")?;
        only(fs.atomic_snapshot, "atomic_snapshot", "command")?;
        if fs.kind == FilesystemType::Command {
            for key in ["backup_command", "restore_command"] {
                let set = if key == "backup_command" { &fs.backup_command } else { &fs.restore_command };
                if set.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    return Err(ConfigError::Missing {
                        key: format!("filesystem.{key}"),
                        hint: "type = \"command\" runs your own commands; see docs/strategies.md".to_owned(),
                    });
                }
            }
        }
        if fs.threads == Some(0) {
            return Err(ConfigError::invalid("filesystem.threads", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_archive(&self) -> Result<(), ConfigError> {
        let archive = &self.archive;
        let range = match archive.kind {
            ArchiveType::TarZstd => Some(1..=19),
            ArchiveType::TarGz => Some(1..=9),
            ArchiveType::None => None,
        };
        let upload_only = archive.remote.as_ref().is_some_and(|r| !r.keep_local);
        match (archive.kind, &archive.folder) {
            (ArchiveType::None, _) => {}
            (_, None) if upload_only => {}
            (_, None) => {
                return Err(ConfigError::Missing {
                    key: "archive.folder".to_owned(),
                    hint: "where archives are kept, e.g. folder = \"/backup/archives\"".to_owned(),
                });
            }
            (_, Some(folder)) if !folder.is_absolute() => {
                return Err(ConfigError::invalid("archive.folder", "must be an absolute path"));
            }
            (_, Some(folder))
                if folder.starts_with(&self.backup.working_folder) || folder.starts_with(&self.filesystem.home) =>
            {
                return Err(ConfigError::invalid(
                    "archive.folder",
                    "must be outside backup.working_folder and filesystem.home",
                ));
            }
            _ => {}
        }
        self.validate_offsite()?;
        if let (Some(level), Some(range)) = (archive.level, range)
            && !range.contains(&level)
        {
            return Err(ConfigError::invalid(
                "archive.level",
                format!("{level} is out of range {}..={} for this archive type", range.start(), range.end()),
            ));
        }
        Ok(())
    }
}

impl BackupConfig {
    fn validate_offsite(&self) -> Result<(), ConfigError> {
        let archive = &self.archive;
        if let Some(remote) = &archive.remote {
            if archive.kind != ArchiveType::TarZstd {
                return Err(ConfigError::invalid("archive.remote", "needs type = \"tar-zstd\""));
            }
            if !cfg!(feature = "object-store") {
                return Err(ConfigError::invalid(
                    "archive.remote",
                    "this build of bitbucket-diy has no object storage support (cargo feature `object-store`)",
                ));
            }
            if !remote.url.username().is_empty() || remote.url.password().is_some() {
                return Err(ConfigError::invalid(
                    "archive.remote.url",
                    "must not carry credentials; see docs/offsite.md for where they go",
                ));
            }
            if !(5..=5120).contains(&remote.part_size_mib) {
                return Err(ConfigError::invalid("archive.remote.part_size_mib", "must be within 5..=5120"));
            }
            if !(1..=64).contains(&remote.upload_concurrency) {
                return Err(ConfigError::invalid("archive.remote.upload_concurrency", "must be within 1..=64"));
            }
            if remote.access_key_id.is_some() && remote.access_key_id_env.is_some() {
                return Err(ConfigError::invalid(
                    "archive.remote.access_key_id",
                    "set only one of `access_key_id` and `access_key_id_env`",
                ));
            }
            if remote.secret_access_key_env.is_some() && remote.secret_access_key_file.is_some() {
                return Err(ConfigError::invalid(
                    "archive.remote.secret_access_key_env",
                    "set only one of `secret_access_key_env` and `secret_access_key_file`",
                ));
            }
            const SECRET_WORDS: [&str; 7] =
                ["secret", "token", "password", "sas", "credential", "access_key", "key_id"];
            for key in remote.options.keys() {
                let lower = key.to_ascii_lowercase();
                if SECRET_WORDS.iter().any(|w| lower.contains(w)) || lower.ends_with("_key") {
                    return Err(ConfigError::invalid(
                        format!("archive.remote.options.{key}"),
                        "credentials do not belong in the configuration: use the provider's environment \
                         variables or access_key_id / secret_access_key_env / secret_access_key_file",
                    ));
                }
            }
        }
        if let Some(encryption) = &archive.encryption {
            if !cfg!(feature = "encryption") {
                return Err(ConfigError::invalid(
                    "archive.encryption",
                    "this build of bitbucket-diy has no encryption support (cargo feature `encryption`)",
                ));
            }
            if archive.kind == ArchiveType::None {
                return Err(ConfigError::invalid(
                    "archive.encryption",
                    "needs an archive (type = \"tar-zstd\" or \"tar-gz\")",
                ));
            }
            if encryption.recipients.is_empty()
                && encryption.recipients_file.is_none()
                && encryption.identity_file.is_none()
            {
                return Err(ConfigError::Missing {
                    key: "archive.encryption.recipients".to_owned(),
                    hint: "list the age public keys to encrypt to (recipients = [\"age1…\"] or recipients_file), \
                           see docs/offsite.md"
                        .to_owned(),
                });
            }
            #[cfg(feature = "encryption")]
            if !encryption.recipients.is_empty() {
                crate::encryption::Recipients::parse(&encryption.recipients, "archive.encryption.recipients")?;
            }
        }
        Ok(())
    }
}

fn kind_of(name: &str) -> FilesystemType {
    match name {
        "rsync" => FilesystemType::Rsync,
        "command" => FilesystemType::Command,
        _ => FilesystemType::Native,
    }
}

/// `section.key` → `BITBUCKET_DIY_SECTION_KEY`.
pub fn env_var_for(dotted_key: &str) -> String {
    format!("{ENV_PREFIX}{}", dotted_key.replace('.', "_").to_ascii_uppercase())
}

fn plain_password_keys(table: &toml::Table) -> Vec<String> {
    SECTIONS
        .iter()
        .filter(|s| table.get(**s).and_then(|t| t.get("password")).is_some())
        .map(|s| format!("{s}.password"))
        .collect()
}

/// Variables bitbucket-diy itself sets for hooks and `command` strategies that look like
/// overrides (`[backup] id`, `[database] dir`): never read as such, so a hook may run
/// `bitbucket-diy` again (e.g. `bitbucket-diy verify --latest` after each archive).
const CHILD_VARIABLES: [&str; 2] = ["BITBUCKET_DIY_BACKUP_ID", "BITBUCKET_DIY_DATABASE_DIR"];

/// Apply `BITBUCKET_DIY_<SECTION>_<KEY>=value` to the table. Values are read as TOML values
/// (numbers, booleans, arrays) when they parse as one, else as strings. Returns the variables used.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut used: BTreeMap<String, ()> = BTreeMap::new();
    // Secret keys set from the environment in this pass, as `section[.sub].key`.
    let mut set_here: Vec<String> = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        if CHILD_VARIABLES.contains(&var.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS
            .iter()
            .find_map(|s| lower.strip_prefix(s).and_then(|k| k.strip_prefix('_')).map(|k| (*s, k.to_owned())))
        else {
            continue; // BITBUCKET_DIY_CONFIG and the like are not overrides.
        };
        if key.is_empty() {
            return Err(ConfigError::Env { var, message: "names a section, not a key".to_owned() });
        }
        // A password is taken as written: `12345`, `true` or `"x"` are passwords, not TOML values.
        let parsed =
            if key.ends_with("password") { toml::Value::String(value.clone()) } else { parse_env_value(&value) };
        let mut section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Env { var: var.clone(), message: format!("[{section}] is not a table") })?;
        // `BITBUCKET_DIY_ARCHIVE_REMOTE_URL` → `[archive.remote] url`.
        let mut key = key;
        let mut table_path = section.to_owned();
        if let Some((sub, rest)) = SUBSECTIONS
            .iter()
            .filter(|(parent, _)| *parent == section)
            .find_map(|(_, sub)| key.strip_prefix(sub).and_then(|k| k.strip_prefix('_')).map(|k| (*sub, k.to_owned())))
            .filter(|(_, rest)| !rest.is_empty())
        {
            section_table = section_table
                .entry(sub)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::Env {
                    var: var.clone(),
                    message: format!("[{section}.{sub}] is not a table"),
                })?;
            key = rest;
            table_path = format!("{section}.{sub}");
        }
        // One way to give a secret replaces the file's other ways: exporting
        // BITBUCKET_DIY_DATABASE_PASSWORD beats the file's `password_env`, as an override should,
        // instead of failing as two sources. Two sources both set in the environment still fail.
        if SECRET_KEYS.contains(&key.as_str()) {
            for sibling in SECRET_KEYS.iter().filter(|s| **s != key) {
                if !set_here.contains(&format!("{table_path}.{sibling}")) {
                    section_table.remove(*sibling);
                }
            }
            set_here.push(format!("{table_path}.{key}"));
        }
        section_table.insert(key, parsed);
        used.insert(var, ());
    }
    Ok(used.into_keys().collect())
}

/// The keys that give one secret: at most one may be set.
const SECRET_KEYS: [&str; 3] = ["password", "password_env", "password_file"];

fn parse_env_value(value: &str) -> toml::Value {
    // `x = <value>` parses numbers, booleans, arrays and quoted strings; anything else is a string.
    toml::from_str::<toml::Table>(&format!("x = {value}"))
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()))
}

/// Where the CLI looks for a configuration file when none is given, in order.
pub fn default_search_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os(CONFIG_ENV) {
        paths.push(PathBuf::from(p));
    }
    paths.push(PathBuf::from("bitbucket-diy.toml"));
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = config_home {
        paths.push(dir.join("bitbucket-diy").join("config.toml"));
    }
    paths.push(PathBuf::from("/etc/bitbucket-diy/config.toml"));
    paths
}

/// Find the configuration file: `explicit` if given, else the first of [`default_search_paths`]
/// that exists.
pub fn find_config_file(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let searched = default_search_paths();
    searched.iter().find(|p| p.is_file()).cloned().ok_or(ConfigError::NotFound { searched })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[bitbucket]
url = "https://bitbucket.example.com/bitbucket"
user = "backup"
password_env = "BB_PASS"

[database]
type = "postgresql"
host = "db.example.com"
database = "bitbucket"

[filesystem]
home = "/var/atlassian/application-data/bitbucket"

[archive]
folder = "/backup/archives"
keep = 7

[backup]
working_folder = "/backup/work"
drain_timeout = "5m"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<LoadedConfig, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        BackupConfig::from_toml_with_env(text, "test.toml", env)
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = load(MINIMAL, &[]).unwrap().config;
        assert_eq!(c.bitbucket.url.path(), "/bitbucket");
        assert!(matches!(c.bitbucket.password, SecretSource::Env(ref v) if v == "BB_PASS"));
        let DatabaseConfig::Postgresql(pg) = &c.database else { panic!("{:?}", c.database) };
        assert_eq!((pg.port, pg.user.as_str()), (5432, "bitbucket"));
        assert_eq!(c.archive.kind, ArchiveType::TarZstd);
        assert_eq!(c.backup.drain_timeout, Duration::from_secs(300));
        assert_eq!(c.backup.poll_interval, Duration::from_millis(500));
        assert_eq!(c.filesystem.kind, FilesystemType::Native);
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let text = MINIMAL.replace("keep = 7", "keep = 7\nkepp = 3");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("test.toml") && err.contains("kepp") && err.contains("line 18"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = MINIMAL.replace("keep = 7", "keep = \"seven\"");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("line 17") && err.contains("keep"), "{err}");
    }

    #[test]
    fn a_password_from_the_environment_replaces_the_files_other_source() {
        // The file names password_env = "BB_PASS"; exporting the override must win, not clash.
        let loaded = load(MINIMAL, &[("BITBUCKET_DIY_BITBUCKET_PASSWORD", "from-env")]).unwrap();
        let pw = loaded.config.bitbucket.password.resolve("bitbucket.password").unwrap().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pw), "from-env");
        // Two sources both given in the environment are still refused.
        let err = load(
            MINIMAL,
            &[("BITBUCKET_DIY_BITBUCKET_PASSWORD", "a"), ("BITBUCKET_DIY_BITBUCKET_PASSWORD_FILE", "/x")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("only one"), "{err}");
    }

    #[test]
    fn environment_overrides_keys_and_is_named_in_errors() {
        let c = load(MINIMAL, &[("BITBUCKET_DIY_ARCHIVE_KEEP", "3"), ("BITBUCKET_DIY_DATABASE_PORT", "6543")]).unwrap();
        assert_eq!(c.config.archive.keep, 3);
        let DatabaseConfig::Postgresql(pg) = &c.config.database else { panic!() };
        assert_eq!(pg.port, 6543);
        let err = load(MINIMAL, &[("BITBUCKET_DIY_ARCHIVE_KEEP", "many")]).unwrap_err().to_string();
        assert!(err.contains("BITBUCKET_DIY_ARCHIVE_KEEP"), "{err}");
    }

    #[test]
    fn variables_set_for_hooks_are_not_overrides() {
        let env = [("BITBUCKET_DIY_BACKUP_ID", "bitbucket-20260412-021500"), ("BITBUCKET_DIY_DATABASE_DIR", "/w/db")];
        load(MINIMAL, &env).unwrap();
    }

    #[test]
    fn plain_password_in_file_warns_but_not_from_env() {
        let text = MINIMAL.replace("password_env = \"BB_PASS\"", "password = \"hunter2\"");
        let loaded = load(&text, &[]).unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(!loaded.warnings[0].contains("hunter2"));
        assert!(!format!("{:?}", loaded.config).contains("hunter2"));
        let no_file_pw = MINIMAL.replace("password_env = \"BB_PASS\"\n", "");
        let loaded = load(&no_file_pw, &[("BITBUCKET_DIY_BITBUCKET_PASSWORD", "hunter2")]).unwrap();
        assert!(loaded.warnings.is_empty());
        let pw = loaded.config.bitbucket.password.resolve("bitbucket.password").unwrap().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pw), "hunter2");
    }

    #[test]
    fn a_malformed_line_holding_a_password_is_not_quoted() {
        for line in ["password = \"hunter2\" oops", "password = [\"hunter2\"]", "password = \"hunter2"] {
            let text = MINIMAL.replace("password_env = \"BB_PASS\"", line);
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("password") && err.contains("not shown"), "{err}");
        }
        let err = load(&MINIMAL.replace("keep = 7", "keep = 7 oops"), &[]).unwrap_err().to_string();
        assert!(err.contains("keep = 7 oops"), "other lines are still quoted: {err}");
    }

    #[test]
    fn a_password_that_is_not_a_string_is_refused_by_name_without_its_value() {
        let bitbucket = MINIMAL.replace("password_env = \"BB_PASS\"", "password = 98765432");
        let database = MINIMAL.replace("host = \"db.example.com\"", "host = \"db.example.com\"\npassword = 98765432");
        for (text, key) in [(bitbucket, "bitbucket.password"), (database, "database.password")] {
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains(key) && !err.contains("98765432"), "{err}");
        }
        let json = r#"{"bitbucket":{"url":"http://h","user":"a","password":98765432},"filesystem":{"home":"/h"},
            "backup":{"working_folder":"/w"}}"#;
        let err = BackupConfig::from_json_str(json).unwrap_err().to_string();
        assert!(err.contains("bitbucket.password") && !err.contains("98765432"), "{err}");
    }

    #[test]
    fn a_password_from_the_environment_is_taken_as_written() {
        let text = MINIMAL.replace("password_env = \"BB_PASS\"\n", "");
        for written in ["98765432", "true", "\"quoted\"", "[1, 2]", "x = y"] {
            let loaded = load(&text, &[("BITBUCKET_DIY_BITBUCKET_PASSWORD", written)]).unwrap();
            let pw = loaded.config.bitbucket.password.resolve("bitbucket.password").unwrap().unwrap();
            assert_eq!(secrecy::ExposeSecret::expose_secret(&pw), written);
        }
    }

    #[test]
    fn a_wrong_value_in_database_names_its_key() {
        for (line, key) in [("port = \"fifty\"", "database.port"), ("jobs = \"many\"", "database.jobs")] {
            let text = MINIMAL.replace("host = \"db.example.com\"", &format!("host = \"db.example.com\"\n{line}"));
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn two_password_sources_are_refused() {
        let text = MINIMAL.replace("password_env = \"BB_PASS\"", "password_env = \"A\"\npassword_file = \"/x\"");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("only one"), "{err}");
    }

    #[test]
    fn combinations_are_checked() {
        let inside = MINIMAL.replace("/backup/work", "/var/atlassian/application-data/bitbucket/backup");
        assert!(load(&inside, &[]).unwrap_err().to_string().contains("working_folder"));
        let level = MINIMAL.replace("keep = 7", "keep = 7\nlevel = 40");
        assert!(load(&level, &[]).unwrap_err().to_string().contains("archive.level"));
        let rsync_opt = MINIMAL.replace("[archive]", "rsync_options = [\"-z\"]\n[archive]");
        assert!(load(&rsync_opt, &[]).unwrap_err().to_string().contains("rsync_options"));
        let creds = MINIMAL.replace("https://bitbucket", "https://u:p@bitbucket");
        assert!(load(&creds, &[]).unwrap_err().to_string().contains("credentials"));
    }

    #[test]
    fn json_has_the_same_shape() {
        let json = r#"{"bitbucket":{"url":"http://127.0.0.1:7990","user":"a","password":"b"},
            "filesystem":{"home":"/h"},"archive":{"type":"none"},"backup":{"working_folder":"/w"}}"#;
        let c = BackupConfig::from_json_str(json).unwrap().config;
        assert!(matches!(c.database, DatabaseConfig::None));
        let err = BackupConfig::from_json_str(r#"{"bitbucket":{}}"#).unwrap_err().to_string();
        assert!(err.contains("url"), "{err}");
        let typo = json.replace("\"keep\"", "\"kepp\"").replace(r#""type":"none""#, r#""type":"none","kepp":1"#);
        let err = BackupConfig::from_json_str(&typo).unwrap_err().to_string();
        assert!(err.contains("`archive.kepp`: unknown field `kepp`") && !err.contains("line 1"), "{err}");
    }
}
