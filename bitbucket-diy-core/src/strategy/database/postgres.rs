//! `postgresql`: `pg_dump` in directory format with parallel jobs; `pg_restore` into a new
//! database.
//!
//! # Backup
//!
//! ```text
//! pg_dump --format=directory --jobs=N --no-password --file=<working>/bitbucket-db.partial \
//!         --dbname="host='…' port='…' user='…' dbname='…'"
//! ```
//!
//! - Flags follow the version of the `pg_dump` found (not `psql`'s, as the reference scripts do):
//!   `--jobs` needs 9.3 or later and is left out, with a warning, before that. We never add
//!   `--no-synchronized-snapshots`: the reference scripts add it for clients 10–14, and then the
//!   parallel workers each see their own snapshot, which is inconsistent while anything writes.
//!   (A standby older than 10 cannot share snapshots: there, set `jobs = 1`.)
//! - The dump is swapped into `bitbucket-db/` only when complete and synced; the previous
//!   complete dump survives any failure or cancellation (see `dump_slot`).
//! - The report's notes record `tool`, `pg_dump_version`, `server_version`, `format`, `jobs`,
//!   `database` and `encoding` (used to create the restore target).
//!
//! # Dump after the unlock (`dump_after_unlock = true`, the default)
//!
//! While Bitbucket is drained, a `psql` session opens a `REPEATABLE READ` transaction and runs
//! `SELECT pg_export_snapshot()`; that is all the lock window holds for the database. After the
//! unlock, `pg_dump --snapshot=<id>` (and each of its parallel workers) dumps exactly that
//! transaction's view while the session keeps it open, however much Bitbucket writes meanwhile.
//! The dump therefore shows the database as it was while drained, the same instant as the home
//! copy; `tests/consistency.rs` checks this under live writes.
//!
//! # Connection and password
//!
//! Host, port, user and database go in one quoted connection string, so no configured name can
//! smuggle in other connection options. The password reaches the tools through `PGPASSFILE`: a
//! `0600` file in a fresh `0700` folder, removed when the operation ends; never the command line.
//! `PGCONNECT_TIMEOUT` is set, and inherited variables that could point the tools elsewhere
//! (`PGHOST`, `PGSERVICE`, `PGOPTIONS`, …) are cleared, as is `PGPASSWORD` when a password is
//! configured (libpq prefers it to the password file). `--no-password` makes a missing password
//! an error instead of a prompt on the terminal.
//!
//! # Restore
//!
//! The target must not exist, or exist without user relations (tables, views, sequences); it is
//! created from `template0` with the dumped database's encoding, through
//! `maintenance_database`. Then:
//!
//! ```text
//! pg_restore --format=directory --jobs=N --no-owner --no-privileges --exit-on-error \
//!            --no-password --dbname="…dbname='<target>'" <dump>
//! ```
//!
//! `--no-owner` and `--no-privileges` because a restore usually lands on another server, where
//! the roles of the original may not exist: with `--exit-on-error` the first `ALTER … OWNER TO`
//! or `GRANT` naming a missing role would abort the restore. Every object is instead owned by
//! the configured `user`, which is the role Bitbucket connects as (set it to that role). If the
//! restore fails, a database this step created is dropped again, so a retry is not refused as
//! "not empty".

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::client::Drained;
use crate::config::{ConfigError, PostgresConfig};
use crate::events::{Phase, Unit};
use crate::strategy::database::client_files::{PrivateDir, pgpass_line};
use crate::strategy::database::dump_slot::{DumpSlot, blocking, tree_size};
use crate::strategy::database::tools::{missing_hint, tool_path};
use crate::strategy::{
    ChildCommand, ChildSession, DatabaseCapabilities, DatabaseStrategy, DatabaseTarget, DeferredDump, RestoreContext,
    StepContext, StepReport, StrategyError,
};

const STRATEGY: &str = "postgresql";
const INSTALL: &str = "install the PostgreSQL client tools (apt-get install postgresql-client)";
/// Seconds libpq waits for a connection before giving up.
const CONNECT_TIMEOUT_SECS: &str = "10";
/// PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1), which would make us check
/// one database and create another.
const MAX_IDENTIFIER_BYTES: usize = 63;
/// Inherited variables that could send the tools to another server, database or user, or
/// change how the session behaves.
const REDIRECTING_VARIABLES: [&str; 11] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGOPTIONS",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
];
/// Databases a restore must never write into.
const RESERVED_TARGETS: [&str; 2] = ["template0", "template1"];
/// First bytes of a pg_dump archive's `toc.dat`.
const ARCHIVE_MAGIC: &[u8] = b"PGDMP";

/// Dumps PostgreSQL with `pg_dump -Fd -j N` and restores with `pg_restore -j N` into a new
/// database (see the [module documentation](self) for the exact arguments and why).
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    config: PostgresConfig,
    password: Option<SecretString>,
}

/// A version of a PostgreSQL tool, as printed by `--version`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PgVersion {
    /// The version as printed ("15.20").
    text: String,
    /// Major and minor number: (9, 6) for 9.6.24, (15, 20) for 15.20; ordered either way.
    number: (u32, u32),
}

impl PgVersion {
    /// Parse `pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`.
    fn parse(output: &str) -> Option<Self> {
        let text = output.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut parts = text.split('.').map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next().flatten()?;
        let minor = parts.next().flatten().unwrap_or(0);
        Some(Self { text: text.to_owned(), number: (major, minor) })
    }

    fn supports_parallel_dump(&self) -> bool {
        self.number >= (9, 3)
    }

    fn supports_directory_format(&self) -> bool {
        self.number >= (9, 1)
    }
}

/// What a restore target holds.
#[derive(Debug, PartialEq, Eq)]
enum TargetState {
    Absent,
    Empty,
    /// The user relations found, as `kind schema.name`.
    NotEmpty(Vec<String>),
}

/// Opens the transaction whose snapshot the dump will use, prints the snapshot's id, then takes
/// `ACCESS SHARE` on every table, as pg_dump itself does when it starts: ordinary writes go on,
/// but DDL (which Bitbucket runs only when it upgrades) waits until the dump is written instead
/// of making pg_dump fail on a table the snapshot still shows.
const EXPORT_SNAPSHOT: &str = "SET lock_timeout = '30s';
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT pg_export_snapshot();
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables
           WHERE schemaname NOT IN ('pg_catalog', 'information_schema') LOOP
    EXECUTE 'LOCK TABLE ' || t.name || ' IN ACCESS SHARE MODE';
  END LOOP;
END $$;
SELECT 'locked';
";

/// The private folder and password file of one operation; removed when dropped.
#[derive(Debug)]
struct Session {
    dir: PrivateDir,
    passfile: Option<PathBuf>,
}

impl PostgresDatabase {
    /// A strategy for the server and database `config` names; reads the password now
    /// (`password_env` / `password_file`), so a missing one is a configuration error.
    pub fn from_config(config: &PostgresConfig) -> Result<Self, ConfigError> {
        let password = config.password.resolve("database.password")?;
        check_identifier(&config.database).map_err(|reason| ConfigError::invalid("database.database", reason))?;
        check_identifier(&config.maintenance_database)
            .map_err(|reason| ConfigError::invalid("database.maintenance_database", reason))?;
        if config.jobs == 0 {
            return Err(ConfigError::invalid("database.jobs", "must be at least 1"));
        }
        Ok(Self { config: config.clone(), password })
    }

    fn session(&self) -> Result<Session, StrategyError> {
        let dir = PrivateDir::new()?;
        let passfile = match &self.password {
            Some(password) => {
                let line = pgpass_line(STRATEGY, password)?;
                Some(dir.write("pgpass", secrecy::ExposeSecret::expose_secret(&line).as_bytes())?)
            }
            None => None,
        };
        Ok(Session { dir, passfile })
    }

    fn command(&self, session: &Session, tool: &str) -> ChildCommand {
        let bin_dir = self.config.bin_dir.as_deref();
        let mut cmd = ChildCommand::new(tool_path(bin_dir, tool)).install_hint(missing_hint(INSTALL, bin_dir));
        for var in REDIRECTING_VARIABLES {
            cmd = cmd.env_remove(var);
        }
        cmd = cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS);
        if let Some(passfile) = &session.passfile {
            cmd = cmd.env_remove("PGPASSWORD").env("PGPASSFILE", passfile);
        }
        cmd
    }

    /// A libpq connection string for `database`, every value quoted.
    fn conninfo(&self, database: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            quote_conninfo(&self.config.host),
            self.config.port,
            quote_conninfo(&self.config.user),
            quote_conninfo(database)
        )
    }

    async fn tool_version(
        &self,
        session: &Session,
        tool: &str,
        cancel: &CancellationToken,
    ) -> Result<PgVersion, StrategyError> {
        let output = self.command(session, tool).arg("--version").run(cancel).await?;
        let text = output.stdout_text();
        PgVersion::parse(&text).ok_or_else(|| StrategyError::Incompatible {
            strategy: STRATEGY.to_owned(),
            reason: format!("cannot read the version of {tool} from `{}`", text.trim()),
        })
    }

    /// Run `script` with psql on `database`; psql variables (`:'name'` literals, `:"name"`
    /// identifiers) carry names safely into the SQL. Returns the unaligned, tuples-only output.
    async fn psql(
        &self,
        session: &Session,
        database: &str,
        script: &str,
        variables: &[(&str, &str)],
        cancel: &CancellationToken,
    ) -> Result<String, StrategyError> {
        let script_path = session.dir.write("script.sql", script.as_bytes())?;
        let mut cmd = self
            .command(session, "psql")
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--no-password"])
            .args(["--set", "ON_ERROR_STOP=1"]);
        for (name, value) in variables {
            cmd = cmd.arg("--set").arg(format!("{name}={value}"));
        }
        let output =
            cmd.arg("--dbname").arg(self.conninfo(database)).arg("--file").arg(&script_path).run(cancel).await?;
        Ok(output.stdout_text())
    }

    async fn probe(&self, cancel: &CancellationToken) -> Result<(), StrategyError> {
        let session = self.session()?;
        let version = self.tool_version(&session, "pg_dump", cancel).await?;
        require_directory_format(&version)?;
        self.psql(&session, &self.config.database, "SELECT 1;\n", &[], cancel).await?;
        Ok(())
    }

    async fn target_state(
        &self,
        session: &Session,
        target: &str,
        cancel: &CancellationToken,
    ) -> Result<TargetState, StrategyError> {
        let exists = self
            .psql(
                session,
                &self.config.maintenance_database,
                "SELECT count(*) FROM pg_database WHERE datname = :'target';\n",
                &[("target", target)],
                cancel,
            )
            .await?;
        if exists.trim() == "0" {
            return Ok(TargetState::Absent);
        }
        // Schemas starting with pg_ are reserved for the system (catalog, toast, temp).
        let relations = self
            .psql(
                session,
                target,
                "SELECT format('%s %I.%I', CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' \
                 WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' ELSE 'table' END, n.nspname, c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
                 AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1;\n",
                &[],
                cancel,
            )
            .await?;
        let found: Vec<String> = relations.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok(if found.is_empty() { TargetState::Empty } else { TargetState::NotEmpty(found) })
    }

    fn check_target_name(&self, target: &str) -> Result<(), StrategyError> {
        let invalid = |reason: String| StrategyError::InvalidSetting {
            strategy: STRATEGY.to_owned(),
            setting: "target database".to_owned(),
            reason,
        };
        check_identifier(target).map_err(|reason| invalid(format!("`{target}` {reason}")))?;
        if RESERVED_TARGETS.contains(&target) || target == self.config.maintenance_database {
            return Err(invalid(format!("`{target}` is a template or the maintenance database")));
        }
        Ok(())
    }

    async fn create_database(
        &self,
        session: &Session,
        target: &str,
        encoding: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<(), StrategyError> {
        // template0: anything added to template1 on the new server would collide with the dump.
        let (script, variables) = match encoding {
            Some(encoding) => (
                "CREATE DATABASE :\"target\" WITH TEMPLATE = template0 ENCODING = :'encoding';\n",
                vec![("target", target), ("encoding", encoding)],
            ),
            None => ("CREATE DATABASE :\"target\" WITH TEMPLATE = template0;\n", vec![("target", target)]),
        };
        self.psql(session, &self.config.maintenance_database, script, &variables, cancel).await?;
        Ok(())
    }

    async fn drop_database(&self, session: &Session, target: &str) -> Result<(), StrategyError> {
        // FORCE (13+) ends the connections a killed pg_restore may leave behind for a moment.
        let script = "SELECT current_setting('server_version_num')::int >= 130000 AS can_force \\gset\n\
                      \\if :can_force\n\
                      DROP DATABASE IF EXISTS :\"target\" WITH (FORCE);\n\
                      \\else\n\
                      DROP DATABASE IF EXISTS :\"target\";\n\
                      \\endif\n";
        // A fresh token: this runs after the restore itself was cancelled.
        self.psql(session, &self.config.maintenance_database, script, &[("target", target)], &CancellationToken::new())
            .await?;
        Ok(())
    }

    async fn source_facts(
        &self,
        session: &Session,
        cancel: &CancellationToken,
    ) -> Result<(String, String), StrategyError> {
        let row = self
            .psql(
                session,
                &self.config.database,
                "SELECT current_setting('server_version'), pg_encoding_to_char(encoding) \
                 FROM pg_database WHERE datname = current_database();\n",
                &[],
                cancel,
            )
            .await?;
        let row = row.trim();
        let (server, encoding) = row.rsplit_once('|').unwrap_or((row, ""));
        Ok((server.to_owned(), encoding.to_owned()))
    }
}

#[async_trait]
impl DatabaseStrategy for PostgresDatabase {
    fn name(&self) -> &str {
        STRATEGY
    }

    /// All false: the dump is taken whole under the lock; nothing before it can shorten it.
    fn capabilities(&self) -> DatabaseCapabilities {
        DatabaseCapabilities::default()
    }

    /// The dump is read only from the database folder; success waits for the whole archive.
    fn restores_while_extracting(&self) -> bool {
        true
    }

    /// Finds `pg_dump` and `psql` and runs `SELECT 1` on the database.
    async fn check(&self) -> Result<(), StrategyError> {
        self.probe(&CancellationToken::new()).await
    }

    /// The same probe as [`Self::check`], so a missing tool or a refused login fails the run
    /// before Bitbucket is locked.
    async fn prepare(&self, ctx: &StepContext) -> Result<(), StrategyError> {
        self.probe(ctx.cancellation()).await
    }

    async fn backup(&self, ctx: &StepContext, _drained: &Drained) -> Result<StepReport, StrategyError> {
        if ctx.is_cancelled() {
            return Err(StrategyError::Cancelled);
        }
        let session = self.session()?;
        self.dump(ctx, &session, None).await
    }

    async fn export_snapshot(
        &self,
        ctx: &StepContext,
        _drained: &Drained,
    ) -> Result<Option<Box<dyn DeferredDump>>, StrategyError> {
        if !self.config.dump_after_unlock {
            return Ok(None);
        }
        let session = self.session()?;
        let mut psql = self
            .command(&session, "psql")
            .args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--no-password"])
            .args(["--set", "ON_ERROR_STOP=1"])
            .arg("--dbname")
            .arg(self.conninfo(&self.config.database))
            .spawn_session()?;
        let export = async {
            psql.send(EXPORT_SNAPSHOT).await?;
            let snapshot = psql.read_line().await?;
            let locked = psql.read_line().await?;
            Ok::<_, StrategyError>((snapshot, locked))
        };
        let (snapshot, locked) = tokio::select! {
            lines = export => lines?,
            () = ctx.cancellation().cancelled() => return Err(StrategyError::Cancelled),
        };
        let snapshot = snapshot.trim().to_owned();
        if locked.trim() != "locked" {
            return Err(StrategyError::CommandFailed {
                program: "psql".to_owned(),
                status: "unexpected answer".to_owned(),
                stderr: format!("expected `locked` after locking the tables, got `{}`", locked.trim()),
            });
        }
        // An id like `00000003-0000001B-1`; anything else is not something to pass to pg_dump.
        if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(StrategyError::CommandFailed {
                program: "psql".to_owned(),
                status: "unexpected answer".to_owned(),
                stderr: format!("pg_export_snapshot() returned `{snapshot}`"),
            });
        }
        Ok(Some(Box::new(ExportedSnapshot { strategy: self.clone(), session, psql, snapshot })))
    }
    async fn check_restore_target(&self, target: &DatabaseTarget) -> Result<(), StrategyError> {
        self.check_target_name(&target.database)?;
        let session = self.session()?;
        match self.target_state(&session, &target.database, &CancellationToken::new()).await? {
            TargetState::Absent | TargetState::Empty => Ok(()),
            TargetState::NotEmpty(found) => Err(not_empty(&target.database, &found)),
        }
    }

    async fn restore(&self, ctx: &RestoreContext, target: &DatabaseTarget) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let cancel = ctx.cancellation();
        let recorded = &ctx.metadata().database.name;
        if !recorded.is_empty() && recorded != STRATEGY {
            return Err(StrategyError::Incompatible {
                strategy: STRATEGY.to_owned(),
                reason: format!("the backup's database was dumped by the `{recorded}` strategy"),
            });
        }
        self.check_target_name(&target.database)?;
        let dump = ctx.source().database_dir();
        check_dump_folder(&dump).await?;

        let session = self.session()?;
        let listing =
            self.command(&session, "pg_restore").arg("--list").arg(&dump).run(cancel).await.map_err(|e| match e {
                StrategyError::CommandFailed { stderr, .. } => StrategyError::Incompatible {
                    strategy: STRATEGY.to_owned(),
                    reason: format!("pg_restore cannot read {}: {stderr}", dump.display()),
                },
                other => other,
            })?;
        if !listing.stdout_text().lines().any(|l| l.trim_start_matches([';', ' ']) == "Format: DIRECTORY") {
            return Err(StrategyError::Incompatible {
                strategy: STRATEGY.to_owned(),
                reason: format!("{} is not a directory-format pg_dump", dump.display()),
            });
        }
        let version = self.tool_version(&session, "pg_restore", cancel).await?;

        let created = match self.target_state(&session, &target.database, cancel).await? {
            TargetState::NotEmpty(found) => return Err(not_empty(&target.database, &found)),
            TargetState::Empty => false,
            TargetState::Absent => {
                let encoding = ctx.metadata().database.notes.get("encoding").map(String::as_str);
                self.create_database(&session, &target.database, encoding, cancel).await?;
                true
            }
        };

        // --no-owner/--no-privileges: the original roles may not exist on this server, and with
        // --exit-on-error the first ALTER OWNER or GRANT naming one would abort the restore; the
        // configured user (the role Bitbucket connects as) owns everything instead.
        let restored = self
            .command(&session, "pg_restore")
            .args(["--format=directory", "--no-owner", "--no-privileges", "--exit-on-error", "--no-password"])
            .arg(format!("--jobs={}", self.config.jobs))
            .arg("--dbname")
            .arg(self.conninfo(&target.database))
            .arg(&dump)
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
            if created && let Err(drop_error) = self.drop_database(&session, &target.database).await {
                ctx.emit(crate::events::Event::Warning {
                    message: format!(
                        "could not drop the half-restored database {}: {drop_error}; drop it by hand before retrying",
                        target.database
                    ),
                });
            }
            return Err(e);
        }

        let size = blocking({
            let dump = dump.clone();
            move || Ok(tree_size(&dump))
        })
        .await?;
        Ok(StepReport { bytes: size.bytes, files: size.files, elapsed: started.elapsed(), ..Default::default() }
            .note("tool", "pg_restore")
            .note("pg_restore_version", version.text)
            .note("jobs", self.config.jobs.to_string())
            .note("database", target.database.clone())
            .note("created", created.to_string()))
    }
}

impl PostgresDatabase {
    /// `pg_dump` into the dump slot; from `snapshot` when one was exported while drained.
    async fn dump(
        &self,
        ctx: &StepContext,
        session: &Session,
        snapshot: Option<&str>,
    ) -> Result<StepReport, StrategyError> {
        let started = Instant::now();
        let cancel = ctx.cancellation();
        let version = self.tool_version(session, "pg_dump", cancel).await?;
        require_directory_format(&version)?;
        let (server_version, encoding) = self.source_facts(session, cancel).await?;
        let jobs = if version.supports_parallel_dump() {
            self.config.jobs
        } else {
            if self.config.jobs > 1 {
                ctx.warn(format!("pg_dump {} cannot dump in parallel (needs 9.3); using one job", version.text));
            }
            1
        };

        let slot = DumpSlot::new(ctx.working());
        slot.begin(false).await?;
        let mut dump = self
            .command(session, "pg_dump")
            .args(["--format=directory", "--no-password"])
            .arg(format!("--file={}", slot.partial().display()));
        if jobs > 1 {
            dump = dump.arg(format!("--jobs={jobs}"));
        }
        if let Some(snapshot) = snapshot {
            dump = dump.arg(format!("--snapshot={snapshot}"));
        }
        let dumped = dump.arg("--dbname").arg(self.conninfo(&self.config.database)).run(cancel).await;
        let size = slot.finish(dumped).await?;
        ctx.progress(Phase::BackupDatabase, size.bytes, Some(size.bytes), Unit::Bytes);

        let mut report =
            StepReport { bytes: size.bytes, files: size.files, elapsed: started.elapsed(), ..Default::default() }
                .note("tool", "pg_dump")
                .note("pg_dump_version", version.text)
                .note("server_version", server_version)
                .note("format", "directory")
                .note("jobs", jobs.to_string())
                .note("database", self.config.database.clone());
        if !encoding.is_empty() {
            report = report.note("encoding", encoding);
        }
        Ok(report)
    }
}

/// A snapshot exported while drained, held open by its `psql` session until the dump is written.
#[derive(Debug)]
struct ExportedSnapshot {
    strategy: PostgresDatabase,
    session: Session,
    psql: ChildSession,
    snapshot: String,
}

#[async_trait]
impl DeferredDump for ExportedSnapshot {
    async fn finish(mut self: Box<Self>, ctx: &StepContext) -> Result<StepReport, StrategyError> {
        let report = self.strategy.dump(ctx, &self.session, Some(&self.snapshot)).await?;
        // The dump holds the snapshot's view; ending the transaction releases it on the server.
        self.psql.send("COMMIT;\n").await?;
        let ExportedSnapshot { psql, .. } = *self;
        psql.finish().await?;
        Ok(report.note("snapshot", "exported while drained; dumped after the unlock"))
    }
}

fn require_directory_format(version: &PgVersion) -> Result<(), StrategyError> {
    if version.supports_directory_format() {
        Ok(())
    } else {
        Err(StrategyError::Incompatible {
            strategy: STRATEGY.to_owned(),
            reason: format!("pg_dump {} is too old: the directory format needs 9.1 or later", version.text),
        })
    }
}

/// Refuse anything but a pg_dump directory: `toc.dat` starting with the archive magic.
async fn check_dump_folder(dump: &Path) -> Result<(), StrategyError> {
    let toc = dump.join("toc.dat");
    let magic = blocking({
        let toc = toc.clone();
        move || {
            use std::io::Read;
            let mut head = [0u8; 5];
            let read = std::fs::File::open(&toc).and_then(|mut f| f.read_exact(&mut head));
            Ok(read.ok().map(|()| head))
        }
    })
    .await?;
    match magic {
        Some(head) if head == ARCHIVE_MAGIC => Ok(()),
        Some(_) => Err(StrategyError::Incompatible {
            strategy: STRATEGY.to_owned(),
            reason: format!("{} is not a pg_dump archive", toc.display()),
        }),
        None => Err(StrategyError::Incompatible {
            strategy: STRATEGY.to_owned(),
            reason: format!("{} holds no pg_dump directory-format dump (no readable toc.dat)", dump.display()),
        }),
    }
}

fn not_empty(database: &str, found: &[String]) -> StrategyError {
    const SHOWN: usize = 5;
    let mut detail = format!(
        "database exists and holds {} user relation{}: {}",
        found.len(),
        if found.len() == 1 { "" } else { "s" },
        found.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ")
    );
    if found.len() > SHOWN {
        detail.push_str(&format!(" and {} more", found.len() - SHOWN));
    }
    StrategyError::TargetNotEmpty { target: database.to_owned(), detail }
}

/// A database name PostgreSQL keeps as written.
fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("is empty".to_owned())
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Err(format!("is longer than {MAX_IDENTIFIER_BYTES} bytes, which PostgreSQL would truncate"))
    } else if name.contains('\0') {
        Err("contains a NUL character".to_owned())
    } else {
        Ok(())
    }
}

/// Quote a value for a libpq connection string.
fn quote_conninfo(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_old_and_new_numbering() {
        let v = PgVersion::parse("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n").unwrap();
        assert_eq!((v.text.as_str(), v.number), ("15.20", (15, 20)));
        assert!(v.supports_parallel_dump());
        let old = PgVersion::parse("pg_dump (PostgreSQL) 9.2.24").unwrap();
        assert_eq!(old.number, (9, 2));
        assert!(!old.supports_parallel_dump() && old.supports_directory_format());
        assert_eq!(PgVersion::parse("pg_dump (PostgreSQL) 17devel").unwrap().number, (17, 0));
        assert!(PgVersion::parse("no version here").is_none());
    }

    #[test]
    fn conninfo_values_cannot_add_options() {
        assert_eq!(quote_conninfo("db' host=evil"), r"'db\' host=evil'");
        assert_eq!(quote_conninfo(r"a\b"), r"'a\\b'");
    }

    #[test]
    fn identifiers_that_postgres_would_change_are_refused() {
        assert!(check_identifier("bitbucket").is_ok());
        assert!(check_identifier("").is_err());
        assert!(check_identifier(&"x".repeat(64)).is_err());
        assert!(check_identifier("a\0b").is_err());
    }

    #[test]
    fn not_empty_names_what_was_found() {
        let found: Vec<String> = (0..7).map(|i| format!("table public.t{i}")).collect();
        let text = not_empty("restored", &found).to_string();
        assert!(
            text.contains("restored") && text.contains("7 user relations") && text.contains("and 2 more"),
            "{text}"
        );
    }
}
