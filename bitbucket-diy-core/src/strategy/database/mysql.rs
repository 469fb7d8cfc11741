//! `mysql`: `mysqldump --single-transaction` of one database (MySQL and MariaDB); restore with
//! `mysql` into a new database.
//!
//! # Backup
//!
//! ```text
//! mysqldump --defaults-extra-file=<private option file> --host=H --port=P --user=U \
//!           --single-transaction --routines --triggers --events --no-tablespaces --hex-blob \
//!           --default-character-set=utf8mb4 [dump_options…] -- <database>
//!           > <working>/bitbucket-db.partial/<database>.sql
//! ```
//!
//! - One database **without** `--databases`, so the dump holds no `CREATE DATABASE`/`USE` and
//!   restores under any name (the reference scripts' `--databases` dump can only overwrite the
//!   original). `--single-transaction` gives a consistent InnoDB snapshot without locking;
//!   `--routines --triggers --events` keep what the reference scripts lose; `--hex-blob` keeps
//!   binary columns byte-exact.
//! - `dump_options` are appended (the reference scripts' `MYSQL_BACKUP_OPTIONS`); options that
//!   would carry a password or dump several databases are refused by [`MysqlDatabase::from_config`].
//! - The dump replaces `bitbucket-db/` only when complete and synced (see `dump_slot`). Notes
//!   record `tool`, `mysqldump_version`, `server_version`, `format`, `database`, `file` and
//!   `collation`.
//!
//! # Password
//!
//! The password is written to an owner-only (`0600`) option file in a fresh `0700` folder,
//! passed as `--defaults-extra-file=`, which the MySQL tools only honour as their **first**
//! argument; it is removed when the operation ends. Never `-p<password>` (the reference scripts'
//! weakness: every user of the machine reads it in `ps`). Inherited `MYSQL_HOST`,
//! `MYSQL_TCP_PORT`, `MYSQL_UNIX_PORT` and `MYSQL_GROUP_SUFFIX` are cleared.
//!
//! # Restore
//!
//! The target must not exist or hold no tables, views, routines or events (a mysqldump file
//! starts each table with `DROP TABLE IF EXISTS`, so a non-empty target would be silently
//! overwritten). It is created with `CHARACTER SET utf8mb4` and the source's utf8mb4 collation
//! (`utf8mb4_bin`, Atlassian's recommendation, when unknown), then fed the dump:
//! `mysql … --default-character-set=utf8mb4 --batch --database=<target> < <database>.sql`.
//! A database this step created is dropped again if the restore fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::client::Drained;
use crate::config::{ConfigError, MysqlConfig};
use crate::events::{Event, Phase, Unit};
use crate::strategy::database::client_files::{PrivateDir, mysql_option_file};
use crate::strategy::database::dump_slot::{DumpSlot, blocking, tree_size};
use crate::strategy::database::tools::{missing_hint, tool_path};
use crate::strategy::{
    ChildCommand, DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, RestoreContext, StepContext, StepReport,
    StrategyError,
};

const STRATEGY: &str = "mysql";
const INSTALL: &str = "install the MySQL or MariaDB client (apt-get install default-mysql-client)";
/// Seconds the `mysql` client waits for a connection (mysqldump has no such option).
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// MySQL's limit on a database name.
const MAX_NAME_CHARS: usize = 64;
/// Inherited variables that could send the tools elsewhere or make them read other option groups.
const REDIRECTING_VARIABLES: [&str; 4] = ["MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT", "MYSQL_GROUP_SUFFIX"];
/// The dump tool and the client, under their MySQL names and the names MariaDB 11 prefers.
const DUMP_TOOLS: [&str; 2] = ["mysqldump", "mariadb-dump"];
const CLIENT_TOOLS: [&str; 2] = ["mysql", "mariadb"];
/// Collation of a restore target when the backup did not record a utf8mb4 one.
const DEFAULT_COLLATION: &str = "utf8mb4_bin";
/// How much of a dump's head is read to check it (header and any `CREATE DATABASE`/`USE`, which
/// mysqldump writes before the first table).
const HEAD_SCAN_BYTES: u64 = 1 << 20;
/// Reserved schemas a restore never writes into.
const RESERVED_TARGETS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// Dumps MySQL or MariaDB with `mysqldump --single-transaction` and restores with `mysql` into a
/// new database (see the [module documentation](self) for the exact arguments and why).
#[derive(Debug)]
pub struct MysqlDatabase {
    config: MysqlConfig,
    password: Option<SecretString>,
}

/// The private folder and option file of one operation; removed when dropped.
#[derive(Debug)]
struct Session {
    _dir: PrivateDir,
    option_file: Option<PathBuf>,
}

/// A tool found on this machine.
#[derive(Debug)]
struct Tool {
    name: &'static str,
    version: String,
}

/// What a restore target holds.
#[derive(Debug, PartialEq, Eq)]
enum TargetState {
    Absent,
    Empty,
    NotEmpty(Vec<String>),
}

impl MysqlDatabase {
    /// A strategy for the server and database `config` names; reads the password now
    /// (`password_env` / `password_file`), so a missing one is a configuration error.
    pub fn from_config(config: &MysqlConfig) -> Result<Self, ConfigError> {
        let password = config.password.resolve("database.password")?;
        check_name(&config.database).map_err(|reason| ConfigError::invalid("database.database", reason))?;
        for option in &config.dump_options {
            check_dump_option(option).map_err(|reason| ConfigError::invalid("database.dump_options", reason))?;
        }
        Ok(Self { config: config.clone(), password })
    }

    fn session(&self) -> Result<Session, StrategyError> {
        let dir = PrivateDir::new()?;
        let option_file = match &self.password {
            Some(password) => {
                let text = mysql_option_file(STRATEGY, password)?;
                Some(dir.write("client.cnf", text.expose_secret().as_bytes())?)
            }
            None => None,
        };
        Ok(Session { _dir: dir, option_file })
    }

    fn bare_command(&self, tool: &str) -> ChildCommand {
        let bin_dir = self.config.bin_dir.as_deref();
        let mut cmd = ChildCommand::new(tool_path(bin_dir, tool)).install_hint(missing_hint(INSTALL, bin_dir));
        for var in REDIRECTING_VARIABLES {
            cmd = cmd.env_remove(var);
        }
        cmd
    }

    /// A connected tool: the option file first (the tools ignore it anywhere else), then the
    /// server and user.
    fn command(&self, session: &Session, tool: &str) -> ChildCommand {
        let mut cmd = self.bare_command(tool);
        if let Some(option_file) = &session.option_file {
            cmd = cmd.arg(format!("--defaults-extra-file={}", option_file.display())).env_remove("MYSQL_PWD");
        }
        cmd.arg(format!("--host={}", self.config.host))
            .arg(format!("--port={}", self.config.port))
            .arg(format!("--user={}", self.config.user))
    }

    /// The first of `candidates` that runs, with its version line.
    async fn find_tool(&self, candidates: &[&'static str], cancel: &CancellationToken) -> Result<Tool, StrategyError> {
        let mut first_missing = None;
        for &name in candidates {
            match self.bare_command(name).arg("--version").run(cancel).await {
                Ok(output) => {
                    return Ok(Tool { name, version: output.stdout_text().trim().to_owned() });
                }
                Err(missing @ StrategyError::ToolMissing { .. }) => {
                    first_missing.get_or_insert(missing);
                }
                Err(other) => return Err(other),
            }
        }
        Err(first_missing.unwrap_or(StrategyError::ToolMissing {
            tool: candidates.join(" or "),
            hint: missing_hint(INSTALL, self.config.bin_dir.as_deref()),
        }))
    }

    /// Run `sql` with the client, on `database` when given; returns the rows, tab-separated.
    async fn query(
        &self,
        session: &Session,
        client: &Tool,
        database: Option<&str>,
        sql: &str,
        cancel: &CancellationToken,
    ) -> Result<String, StrategyError> {
        let mut cmd = self
            .command(session, client.name)
            .arg(format!("--connect-timeout={CONNECT_TIMEOUT_SECS}"))
            .args(["--batch", "--skip-column-names", "--default-character-set=utf8mb4"]);
        if let Some(database) = database {
            cmd = cmd.arg(format!("--database={database}"));
        }
        let output = cmd.arg(format!("--execute={sql}")).run(cancel).await?;
        Ok(output.stdout_text())
    }

    async fn probe(&self, cancel: &CancellationToken) -> Result<(), StrategyError> {
        self.find_tool(&DUMP_TOOLS, cancel).await?;
        let client = self.find_tool(&CLIENT_TOOLS, cancel).await?;
        let session = self.session()?;
        self.query(&session, &client, Some(&self.config.database), "SELECT 1", cancel).await?;
        Ok(())
    }

    async fn target_state(
        &self,
        session: &Session,
        client: &Tool,
        target: &str,
        cancel: &CancellationToken,
    ) -> Result<TargetState, StrategyError> {
        let exists = self
            .query(
                session,
                client,
                None,
                &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE {}", is_name("SCHEMA_NAME", target)),
                cancel,
            )
            .await?;
        if exists.trim() == "0" {
            return Ok(TargetState::Absent);
        }
        let found = self
            .query(
                session,
                client,
                None,
                &format!(
                    "SELECT CONCAT(LOWER(TABLE_TYPE), ' ', TABLE_NAME) FROM information_schema.TABLES WHERE {} \
                     UNION ALL SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE {} \
                     UNION ALL SELECT CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE {} \
                     ORDER BY 1",
                    is_name("TABLE_SCHEMA", target),
                    is_name("ROUTINE_SCHEMA", target),
                    is_name("EVENT_SCHEMA", target)
                ),
                cancel,
            )
            .await?;
        let found: Vec<String> = found.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok(if found.is_empty() { TargetState::Empty } else { TargetState::NotEmpty(found) })
    }

    fn check_target_name(&self, target: &str) -> Result<(), StrategyError> {
        let invalid = |reason: String| StrategyError::InvalidSetting {
            strategy: STRATEGY.to_owned(),
            setting: "target database".to_owned(),
            reason,
        };
        check_name(target).map_err(|reason| invalid(format!("`{target}` {reason}")))?;
        if RESERVED_TARGETS.iter().any(|r| r.eq_ignore_ascii_case(target)) {
            return Err(invalid(format!("`{target}` is a system schema")));
        }
        Ok(())
    }
}

#[async_trait]
impl DatabaseStrategy for MysqlDatabase {
    fn name(&self) -> &str {
        STRATEGY
    }

    /// All false: the dump is taken whole under the lock.
    fn capabilities(&self) -> DatabaseCapabilities {
        DatabaseCapabilities::default()
    }

    /// The dump is read only from the database folder; success waits for the whole archive.
    fn restores_while_extracting(&self) -> bool {
        true
    }

    /// Finds `mysqldump` and `mysql` and runs `SELECT 1` on the database.
    async fn check(&self) -> Result<(), StrategyError> {
        self.probe(&CancellationToken::new()).await
    }

    /// The same probe as [`Self::check`], before Bitbucket is locked.
    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        self.probe(ctx.cancellation()).await
    }

    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let cancel = ctx.cancellation();
        if cancel.is_cancelled() {
            return Err(StrategyError::Cancelled);
        }
        let dump_tool = self.find_tool(&DUMP_TOOLS, cancel).await?;
        let client = self.find_tool(&CLIENT_TOOLS, cancel).await?;
        let session = self.session()?;
        let facts = self
            .query(
                &session,
                &client,
                None,
                &format!(
                    "SELECT VERSION(), DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE {}",
                    is_name("SCHEMA_NAME", &self.config.database)
                ),
                cancel,
            )
            .await?;
        let (server_version, collation) = facts.trim().split_once('\t').unwrap_or((facts.trim(), ""));

        let slot = DumpSlot::new(ctx.working());
        slot.begin(true).await?;
        let file_name = format!("{}.sql", self.config.database);
        let dumped = self
            .command(&session, dump_tool.name)
            .args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--no-tablespaces",
                "--hex-blob",
                "--default-character-set=utf8mb4",
            ])
            .args(&self.config.dump_options)
            .arg("--")
            .arg(&self.config.database)
            .stdout_file(slot.partial().join(&file_name))
            .run(cancel)
            .await;
        let size = slot.finish(dumped).await?;
        ctx.progress(Phase::BackupDatabase, size.bytes, Some(size.bytes), Unit::Bytes);

        let mut report =
            StepReport { bytes: size.bytes, files: size.files, elapsed: started.elapsed(), ..Default::default() }
                .note("tool", dump_tool.name)
                .note("mysqldump_version", dump_tool.version)
                .note("server_version", server_version)
                .note("format", "sql")
                .note("database", self.config.database.clone())
                .note("file", file_name);
        if !collation.is_empty() {
            report = report.note("collation", collation);
        }
        Ok(report)
    }

    async fn check_restore_target(&self, target: &DatabaseTarget) -> Result<(), StrategyError> {
        self.check_target_name(&target.database)?;
        let cancel = CancellationToken::new();
        let client = self.find_tool(&CLIENT_TOOLS, &cancel).await?;
        let session = self.session()?;
        match self.target_state(&session, &client, &target.database, &cancel).await? {
            TargetState::Absent | TargetState::Empty => Ok(()),
            TargetState::NotEmpty(found) => Err(not_empty(&target.database, &found)),
        }
    }

    async fn restore(&self, ctx: &RestoreContext, target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let cancel = ctx.cancellation();
        let record = &ctx.metadata().database;
        if !record.name.is_empty() && record.name != STRATEGY {
            return Err(incompatible(format!("the backup's database was dumped by the `{}` strategy", record.name)));
        }
        self.check_target_name(&target.database)?;
        let dump = find_dump_file(&ctx.source().database_dir(), record.notes.get("file").map(String::as_str)).await?;
        check_dump_head(&dump).await?;

        let client = self.find_tool(&CLIENT_TOOLS, cancel).await?;
        let session = self.session()?;
        let created = match self.target_state(&session, &client, &target.database, cancel).await? {
            TargetState::NotEmpty(found) => return Err(not_empty(&target.database, &found)),
            TargetState::Empty => false,
            TargetState::Absent => {
                let collation = record
                    .notes
                    .get("collation")
                    .map(String::as_str)
                    .filter(|c| {
                        c.starts_with("utf8mb4_") && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    })
                    .unwrap_or(DEFAULT_COLLATION);
                let sql = format!(
                    "CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE {collation}",
                    quote_identifier(&target.database)
                );
                self.query(&session, &client, None, &sql, cancel).await?;
                true
            }
        };

        let restored = self
            .command(&session, client.name)
            .args(["--default-character-set=utf8mb4", "--batch"])
            .arg(format!("--database={}", target.database))
            .stdin_file(&dump)
            .run(cancel)
            .await;
        // The restore may have started while the home was still being extracted: success waits
        // for the whole archive to check out against its manifest, and a failure there undoes
        // the restore like any other.
        let restored = match restored {
            Ok(_) => ctx.source_verified().await,
            Err(e) => Err(e),
        };
        if let Err(e) = restored {
            if created {
                let sql = format!("DROP DATABASE IF EXISTS {}", quote_identifier(&target.database));
                // A fresh token: this runs after the restore itself may have been cancelled.
                let dropped = self.query(&session, &client, None, &sql, &CancellationToken::new()).await;
                if let Err(drop_error) = dropped {
                    ctx.emit(Event::Warning {
                        message: format!(
                            "could not drop the half-restored database {}: {drop_error}; drop it by hand before retrying",
                            target.database
                        ),
                    });
                }
            }
            return Err(e);
        }

        let size = blocking({
            let dump = dump.clone();
            move || Ok(tree_size(&dump))
        })
        .await?;
        Ok(StepReport { bytes: size.bytes, files: size.files, elapsed: started.elapsed(), ..Default::default() }
            .note("tool", client.name)
            .note("client_version", client.version)
            .note("database", target.database.clone())
            .note("created", created.to_string()))
    }
}

fn incompatible(reason: String) -> StrategyError {
    StrategyError::Incompatible { strategy: STRATEGY.to_owned(), reason }
}

/// The dump file in `folder`: the one the backup recorded, else the only `*.sql` file.
async fn find_dump_file(folder: &Path, recorded: Option<&str>) -> Result<PathBuf, StrategyError> {
    let folder = folder.to_owned();
    let recorded = recorded.filter(|name| !name.contains('/')).map(str::to_owned);
    blocking(move || {
        if let Some(name) = recorded {
            let path = folder.join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
        let entries = std::fs::read_dir(&folder).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                incompatible(format!("the backup holds no database dump ({} is missing)", folder.display()))
            }
            _ => StrategyError::io("reading", &folder, e),
        })?;
        let mut dumps: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
            .collect();
        match dumps.len() {
            1 => Ok(dumps.remove(0)),
            0 => Err(incompatible(format!("{} holds no mysqldump file (*.sql)", folder.display()))),
            n => Err(incompatible(format!("{} holds {n} *.sql files; expected one", folder.display()))),
        }
    })
    .await
}

/// Refuse a file that is not a mysqldump, or one made with `--databases`/`--all-databases`,
/// whose `USE` would restore over the original database instead of the target.
async fn check_dump_head(dump: &Path) -> Result<(), StrategyError> {
    let dump = dump.to_owned();
    blocking(move || {
        let file = std::fs::File::open(&dump).map_err(|e| StrategyError::io("opening", &dump, e))?;
        let mut reader = BufReader::new(std::io::Read::take(file, HEAD_SCAN_BYTES));
        let mut is_dump = false;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(|e| StrategyError::io("reading", &dump, e))?;
            if read == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if text.starts_with("-- MySQL dump") || text.starts_with("-- MariaDB dump") {
                is_dump = true;
            } else if text.starts_with("CREATE DATABASE") || text.starts_with("USE `") {
                return Err(incompatible(format!(
                    "{} was dumped with --databases: it names its database and would restore over the original, not into the target",
                    dump.display()
                )));
            } else if text.starts_with("-- Table structure") || text.starts_with("CREATE TABLE") {
                break;
            }
        }
        if is_dump {
            Ok(())
        } else {
            Err(incompatible(format!("{} is not a mysqldump file (no mysqldump header)", dump.display())))
        }
    })
    .await
}

fn not_empty(database: &str, found: &[String]) -> StrategyError {
    const SHOWN: usize = 5;
    let mut detail = format!(
        "database exists and holds {} object{}: {}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        found.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ")
    );
    if found.len() > SHOWN {
        detail.push_str(&format!(" and {} more", found.len() - SHOWN));
    }
    StrategyError::TargetNotEmpty { target: database.to_owned(), detail }
}

/// A database name MySQL accepts and that is safe as the dump's file name and as an argument.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("is empty".to_owned())
    } else if name.chars().count() > MAX_NAME_CHARS {
        Err(format!("is longer than {MAX_NAME_CHARS} characters"))
    } else if name.contains(['/', '\\', '\0']) {
        Err("contains `/`, `\\` or NUL".to_owned())
    } else if name.starts_with('-') || name.ends_with(' ') {
        Err("starts with `-` or ends with a space".to_owned())
    } else {
        Ok(())
    }
}

/// Refuse dump options that would put a password on the command line or dump more than the one
/// database (which could then not be restored under a new name).
fn check_dump_option(option: &str) -> Result<(), String> {
    let name = option.split('=').next().unwrap_or(option);
    let is_short = |flag: char| option.starts_with('-') && !option.starts_with("--") && option[1..].starts_with(flag);
    if name == "--password" || is_short('p') {
        return Err("a password option would put the password on the command line; use password_env or password_file"
            .to_owned());
    }
    if matches!(name, "--databases" | "--all-databases" | "--defaults-file" | "--defaults-extra-file" | "--no-defaults")
        || is_short('B')
        || is_short('A')
    {
        return Err(format!("`{name}` is not allowed: the dump covers exactly database.database"));
    }
    Ok(())
}

/// `column` holds exactly `name`: bytes against a hex literal, so no quoting depends on the SQL
/// mode, and the case-insensitive collation of information_schema cannot match another database.
fn is_name(column: &str, name: &str) -> String {
    format!("CAST({column} AS BINARY) = X'{}'", hex::encode(name.as_bytes()))
}

/// A quoted identifier (backticks doubled).
fn quote_identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_without_escapes_that_depend_on_sql_mode() {
        assert_eq!(is_name("SCHEMA_NAME", "a'b"), "CAST(SCHEMA_NAME AS BINARY) = X'612762'");
        assert_eq!(quote_identifier("we`ird"), "`we``ird`");
    }

    #[test]
    fn unsafe_database_names_are_refused() {
        assert!(check_name("bitbucket").is_ok());
        for bad in ["", "../x", "-x", "x ", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dump_options_cannot_carry_passwords_or_more_databases() {
        assert!(check_dump_option("--skip-extended-insert").is_ok());
        assert!(check_dump_option("--max-allowed-packet=1G").is_ok());
        for bad in ["-psecret", "--password=secret", "--databases", "-B", "--all-databases", "--defaults-file=/x"] {
            let err = check_dump_option(bad).unwrap_err();
            assert!(!err.contains("secret"), "the password must not be echoed: {err}");
        }
    }

    #[tokio::test]
    async fn dumps_made_with_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sql");
        std::fs::write(&path, "-- MariaDB dump 10.19\n--\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `x`;\nUSE `x`;\n")
            .unwrap();
        assert!(matches!(check_dump_head(&path).await, Err(StrategyError::Incompatible { .. })));
        std::fs::write(&path, "/*M!999999\\- enable the sandbox mode */\n-- MariaDB dump 10.19\n--\n-- Table structure for table `t`\nUSE `later`;\n")
            .unwrap();
        check_dump_head(&path).await.unwrap();
        std::fs::write(&path, "hello\n").unwrap();
        assert!(matches!(check_dump_head(&path).await, Err(StrategyError::Incompatible { .. })));
    }
}
