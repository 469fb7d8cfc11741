//! The built-in database strategies against the real PostgreSQL and MariaDB of the test machine,
//! with the real pg_dump, pg_restore, psql, mysqldump and mysql.
//!
//! When a server is not running, the tests fail with a message saying how to start it
//! (`bash tests/run-all.sh` does it): they never skip.

// Helpers outside `#[test]` functions panic on purpose: a failed fixture step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common"]
mod common {
    pub mod mariadb;
    pub mod names;
    pub mod postgres;
}

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bitbucket_diy_core::config::{CommandDatabaseConfig, SecretSource};
use bitbucket_diy_core::strategy::conformance::database::{self as conformance, restore_context, step_context};
use bitbucket_diy_core::strategy::database::{CommandDatabase, MysqlDatabase, PostgresDatabase};
use bitbucket_diy_core::strategy::{DatabaseStrategy, DatabaseTarget, StepReport, StrategyError, WorkingFolder};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use bitbucket_diy_core::client::Drained;
use common::names::unique_name;

// ---------------------------------------------------------------------------------------------
// helpers

/// Every process's command line, split into arguments.
fn command_lines() -> Vec<(u32, Vec<Vec<u8>>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args = raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect();
        found.push((pid, args));
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Processes running `program` whose arguments mention `mention`.
fn processes_of(program: &str, mention: &str) -> Vec<(u32, Vec<Vec<u8>>)> {
    command_lines()
        .into_iter()
        .filter(|(_, args)| {
            args.first().is_some_and(|a| Path::new(&*String::from_utf8_lossy(a)).ends_with(program))
                && args.iter().any(|a| contains(a, mention.as_bytes()))
        })
        .collect()
}

fn assert_no_command_line_contains(secret: &str) {
    for (pid, args) in command_lines() {
        for arg in &args {
            assert!(
                !contains(arg, secret.as_bytes()),
                "process {pid} has the password on its command line: {:?}",
                args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>()
            );
        }
    }
}

fn environment_of(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `root` with its content.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().strip_prefix(root).unwrap().to_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// What the working folder holds besides the dump folder.
fn leftovers(working: &Path) -> Vec<String> {
    std::fs::read_dir(working)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != WorkingFolder::DATABASE)
        .collect()
}

async fn backup(strategy: &dyn DatabaseStrategy, working: &Path) -> Result<StepReport, StrategyError> {
    strategy.backup(&step_context(working, CancellationToken::new()).unwrap(), &Drained::for_testing()).await
}

fn expect_command_failed(err: StrategyError, program: &str, stderr_part: &str) {
    match &err {
        StrategyError::CommandFailed { program: p, stderr, .. } => {
            assert_eq!(p, program, "{err}");
            assert!(stderr.contains(stderr_part), "stderr should mention {stderr_part:?}: {err}");
        }
        other => panic!("expected {program} to fail, got: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// postgresql

mod postgresql {
    use super::common::postgres::*;
    use super::*;

    fn strategy(config: &bitbucket_diy_core::config::PostgresConfig) -> PostgresDatabase {
        PostgresDatabase::from_config(config).unwrap()
    }

    #[tokio::test]
    async fn roundtrip_restores_identical_contents_into_a_new_database() {
        let fixture = PgFixture::new("pg_roundtrip");
        conformance::roundtrip(&strategy(&config(&fixture.source)), &fixture).await.unwrap();
    }

    #[tokio::test]
    async fn non_empty_targets_are_refused_and_left_untouched() {
        let fixture = PgFixture::new("pg_nonempty");
        let pg = strategy(&config(&fixture.source));
        conformance::refuses_non_empty_target(&pg, &fixture).await.unwrap();
        conformance::restore_refuses_non_empty_target(&pg, &fixture).await.unwrap();
    }

    #[tokio::test]
    async fn previous_dump_survives_a_failed_backup() {
        let fixture = PgFixture::new("pg_survives");
        let missing = config(&unique_name("pg_survives", "missing"));
        conformance::previous_dump_survives_failure(&strategy(&config(&fixture.source)), &strategy(&missing), &fixture)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn cancelled_backup_keeps_the_previous_dump() {
        let fixture = PgFixture::new("pg_cancelled");
        conformance::cancelled_backup_keeps_previous_dump(&strategy(&config(&fixture.source)), &fixture).await.unwrap();
    }

    #[tokio::test]
    async fn backup_is_a_parallel_directory_dump_with_its_versions_noted() {
        let fixture = PgFixture::new("pg_notes");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        let working = tempfile::tempdir().unwrap();
        let report = backup(&strategy(&config(&fixture.source)), working.path()).await.unwrap();

        let version = std::process::Command::new("pg_dump").arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&version.stdout).split_whitespace().nth(2).unwrap().to_owned();
        assert_eq!(report.notes.get("pg_dump_version"), Some(&version));
        assert_eq!(report.notes.get("format").map(String::as_str), Some("directory"));
        assert_eq!(report.notes.get("jobs").map(String::as_str), Some("2"));
        assert_eq!(report.notes.get("database"), Some(&fixture.source));
        assert_eq!(report.notes.get("encoding").map(String::as_str), Some("UTF8"));
        let dump = WorkingFolder::new(working.path()).database_dir();
        assert!(dump.join("toc.dat").is_file(), "no toc.dat in {}", dump.display());
        let files = tree(&dump);
        assert_eq!(report.files, files.len() as u64);
        assert_eq!(report.bytes, files.values().map(|f| f.len() as u64).sum::<u64>());
        assert!(leftovers(working.path()).is_empty(), "{:?}", leftovers(working.path()));
    }

    #[tokio::test]
    async fn dump_after_unlock_shows_the_database_as_it_was_when_the_snapshot_was_exported() {
        let fixture = PgFixture::new("pg_snapshot");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        psql(&fixture.source, "CREATE TABLE writes (id int PRIMARY KEY); INSERT INTO writes VALUES (1);");
        let pg = strategy(&config(&fixture.source));
        let working = tempfile::tempdir().unwrap();
        let ctx =
            bitbucket_diy_core::strategy::conformance::database::step_context(working.path(), CancellationToken::new())
                .unwrap();
        let snapshot = pg
            .export_snapshot(&ctx, &bitbucket_diy_core::client::Drained::for_testing())
            .await
            .unwrap()
            .expect("dump_after_unlock exports a snapshot");
        // Bitbucket writes again after the unlock: none of it may reach the dump.
        psql(&fixture.source, "INSERT INTO writes VALUES (2); DELETE FROM writes WHERE id = 1;");
        // DDL waits for the dump instead of breaking it.
        let ddl = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-U", SUPERUSER, "-d", &fixture.source])
            .args(["-c", "SET lock_timeout = '300ms'; DROP TABLE audit;"])
            .output()
            .unwrap();
        assert!(!ddl.status.success(), "DROP TABLE must wait for the dump");
        assert!(
            String::from_utf8_lossy(&ddl.stderr).contains("lock timeout"),
            "{}",
            String::from_utf8_lossy(&ddl.stderr)
        );
        let report = snapshot.finish(&ctx).await.unwrap();
        assert!(report.notes.contains_key("snapshot"), "{:?}", report.notes);
        let target =
            DatabaseTarget { database: conformance::DatabaseFixture::fresh_database_name(&fixture, "restored") };
        pg.restore(&restore_context(working.path(), &pg, &report).unwrap(), &target).await.unwrap();
        assert_eq!(psql(&target.database, "SELECT string_agg(id::text, ',') FROM writes;").trim(), "1");
        let aliases = psql(&target.database, "SELECT count(*) FROM pg_tables WHERE tablename = 'audit';");
        assert_eq!(aliases.trim(), "1");
        let open = psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND state LIKE 'idle in transaction%';",
                literal(&fixture.source)
            ),
        );
        assert_eq!(open.trim(), "0", "the exporting transaction is closed after the dump");
    }

    #[tokio::test]
    async fn restores_into_a_name_full_of_quotes_without_injection() {
        let fixture = PgFixture::new("pg_quotes");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        let pg = strategy(&config(&fixture.source));
        let working = tempfile::tempdir().unwrap();
        let report = backup(&pg, working.path()).await.unwrap();
        let name = fixture.cleanup.database(format!("{}'\"; DROP x; --", unique_name("q", "")));
        let target = DatabaseTarget { database: name.clone() };
        pg.check_restore_target(&target).await.unwrap();
        pg.restore(&restore_context(working.path(), &pg, &report).unwrap(), &target).await.unwrap();
        let exists = psql("postgres", &format!("SELECT count(*) FROM pg_database WHERE datname = {};", literal(&name)));
        assert_eq!(exists.trim(), "1");
        assert_eq!(contents_of(&name), contents_of(&fixture.source));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_reaches_pg_dump_through_a_private_passfile_never_a_command_line() {
        require_postgres();
        let cleanup = Cleanup::default();
        let role = cleanup.role(unique_name("pg_pass", "role"));
        let database = cleanup.database(unique_name("pg_pass", "src"));
        // ':' and '\' must be escaped in a password file.
        let password = format!("S3cret:{}\\pw-{}", std::process::id(), role.len());
        psql(
            "postgres",
            &format!(
                "CREATE ROLE {r} LOGIN PASSWORD {p}; CREATE DATABASE {d} OWNER {r};",
                r = ident(&role),
                p = literal(&password),
                d = ident(&database)
            ),
        );
        psql_as(&role, &database, SEED);
        let mut config = config(&database);
        config.user = role.clone();
        config.password = SecretSource::Value(SecretString::from(password.clone()));
        let pg = strategy(&config);

        let lock = TableLock::hold(&database, "audit");
        let working = tempfile::tempdir().unwrap();
        let ctx = step_context(working.path(), CancellationToken::new()).unwrap();
        let task = tokio::spawn(async move { pg.backup(&ctx, &Drained::for_testing()).await });
        wait_for_blocked_pg_dump(&database);

        assert_no_command_line_contains(&password);
        let dumps = processes_of("pg_dump", &database);
        assert!(!dumps.is_empty(), "no pg_dump process for {database} while it is blocked");
        let mut passfiles = Vec::new();
        for (pid, _) in &dumps {
            let env = environment_of(*pid);
            assert!(!env.contains_key("PGPASSWORD"), "pg_dump inherited PGPASSWORD");
            assert_eq!(env.get("PGCONNECT_TIMEOUT").map(String::as_str), Some("10"));
            let passfile = PathBuf::from(env.get("PGPASSFILE").expect("pg_dump gets PGPASSFILE"));
            assert_eq!(mode_of(&passfile), 0o600);
            assert_eq!(mode_of(passfile.parent().unwrap()), 0o700);
            let line = std::fs::read_to_string(&passfile).unwrap();
            assert_eq!(line, format!("*:*:*:*:{}\n", password.replace('\\', "\\\\").replace(':', "\\:")));
            passfiles.push(passfile);
        }
        lock.release();

        let report = task.await.unwrap().unwrap();
        assert!(report.files > 0);
        for passfile in passfiles {
            assert!(!passfile.parent().unwrap().exists(), "{} outlived the backup", passfile.display());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_during_pg_dump_removes_the_partial_dump_and_keeps_the_previous_one() {
        let fixture = PgFixture::new("pg_cancel_dump");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        let pg = strategy(&config(&fixture.source));
        let working = tempfile::tempdir().unwrap();
        backup(&pg, working.path()).await.unwrap();
        let dump = WorkingFolder::new(working.path()).database_dir();
        let before = tree(&dump);

        let lock = TableLock::hold(&fixture.source, "audit");
        let cancel = CancellationToken::new();
        let ctx = step_context(working.path(), cancel.clone()).unwrap();
        let task = tokio::spawn(async move { pg.backup(&ctx, &Drained::for_testing()).await });
        wait_for_blocked_pg_dump(&fixture.source);
        let partial = working.path().join("bitbucket-db.partial");
        assert!(partial.is_dir(), "pg_dump should be writing into {}", partial.display());
        cancel.cancel();
        let result = task.await.unwrap();
        lock.release();

        assert!(matches!(result, Err(StrategyError::Cancelled)), "{result:?}");
        assert!(!partial.exists(), "the partial dump was left behind");
        assert_eq!(tree(&dump), before, "the previous dump changed");
        assert!(leftovers(working.path()).is_empty(), "{:?}", leftovers(working.path()));
    }

    #[tokio::test]
    async fn a_missing_database_is_a_clear_error_before_the_lock() {
        require_postgres();
        let missing = unique_name("pg_missing", "db");
        let pg = strategy(&config(&missing));
        let working = tempfile::tempdir().unwrap();
        let ctx = step_context(working.path(), CancellationToken::new()).unwrap();
        let err = pg.prepare(&ctx).await.unwrap_err();
        expect_command_failed(err, "psql", &format!("database \"{missing}\" does not exist"));
        let err = backup(&pg, working.path()).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(std::fs::read_dir(working.path()).unwrap().next().is_none(), "a failed backup left files");
    }

    #[tokio::test]
    async fn missing_tools_are_named_with_an_install_hint() {
        let empty = tempfile::tempdir().unwrap();
        let mut config = config("bitbucket");
        config.bin_dir = Some(empty.path().to_owned());
        let pg = strategy(&config);
        let working = tempfile::tempdir().unwrap();
        for err in [
            pg.check().await.unwrap_err(),
            backup(&pg, working.path()).await.unwrap_err(),
            pg.check_restore_target(&DatabaseTarget { database: "anything".into() }).await.unwrap_err(),
        ] {
            match &err {
                StrategyError::ToolMissing { tool, hint } => {
                    assert!(tool == "pg_dump" || tool == "psql", "{err}");
                    assert!(hint.contains("apt-get install postgresql-client"), "{err}");
                    assert!(hint.contains(&empty.path().display().to_string()), "{err}");
                }
                other => panic!("expected ToolMissing, got {other}"),
            }
        }
    }

    #[tokio::test]
    async fn restore_refuses_what_is_not_a_pg_dump_directory() {
        let fixture = PgFixture::new("pg_foreign");
        let pg = strategy(&config(&fixture.source));
        let source = tempfile::tempdir().unwrap();
        let dump = WorkingFolder::new(source.path()).database_dir();
        std::fs::create_dir_all(&dump).unwrap();
        std::fs::write(dump.join("bitbucket.sql"), "-- MariaDB dump\n").unwrap();
        let target = DatabaseTarget { database: conformance::DatabaseFixture::fresh_database_name(&fixture, "t") };
        let report = StepReport::default();
        let err = pg.restore(&restore_context(source.path(), &pg, &report).unwrap(), &target).await.unwrap_err();
        assert!(matches!(err, StrategyError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("toc.dat"), "{err}");

        std::fs::write(dump.join("toc.dat"), "not a toc").unwrap();
        let err = pg.restore(&restore_context(source.path(), &pg, &report).unwrap(), &target).await.unwrap_err();
        assert!(matches!(err, StrategyError::Incompatible { .. }), "{err}");

        let mysql_made = MysqlDatabase::from_config(&common::mariadb::config("bitbucket")).unwrap();
        let err =
            pg.restore(&restore_context(source.path(), &mysql_made, &report).unwrap(), &target).await.unwrap_err();
        assert!(err.to_string().contains("`mysql` strategy"), "{err}");

        let exists = psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = {};", literal(&target.database)),
        );
        assert_eq!(exists.trim(), "0", "a refused restore created the target");
    }
}

// ---------------------------------------------------------------------------------------------
// mysql (MariaDB)

mod mariadb {
    use super::common::mariadb::*;
    use super::*;

    fn strategy(config: &bitbucket_diy_core::config::MysqlConfig) -> MysqlDatabase {
        MysqlDatabase::from_config(config).unwrap()
    }

    /// A user with a real password and every privilege on `database` (only), and a few tables.
    fn user_with_password(cleanup: &Cleanup, test: &str, database: &str, password: &str) -> String {
        let user = cleanup.user(unique_name(test, "u"));
        mysql(
            None,
            &format!(
                "CREATE DATABASE {d} CHARACTER SET utf8mb4; CREATE USER {u}@'%' IDENTIFIED BY {p}; \
                 GRANT ALL PRIVILEGES ON {d}.* TO {u}@'%';",
                d = ident(database),
                u = literal(&user),
                p = literal(password)
            ),
        );
        mysql(
            Some(database),
            "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, detail TEXT); \
             CREATE TABLE project (id INT PRIMARY KEY, name VARCHAR(50)); \
             INSERT INTO audit (detail) VALUES ('one'), ('two'); INSERT INTO project VALUES (1, 'ünï');",
        );
        user
    }

    #[tokio::test]
    async fn roundtrip_restores_identical_contents_into_a_new_database() {
        let fixture = MariaFixture::new("my_roundtrip");
        conformance::roundtrip(&strategy(&config(&fixture.source)), &fixture).await.unwrap();
    }

    #[tokio::test]
    async fn non_empty_targets_are_refused_and_left_untouched() {
        let fixture = MariaFixture::new("my_nonempty");
        let my = strategy(&config(&fixture.source));
        conformance::refuses_non_empty_target(&my, &fixture).await.unwrap();
        conformance::restore_refuses_non_empty_target(&my, &fixture).await.unwrap();
    }

    #[tokio::test]
    async fn previous_dump_survives_a_failed_backup() {
        let fixture = MariaFixture::new("my_survives");
        let missing = config(&unique_name("my_survives", "missing"));
        conformance::previous_dump_survives_failure(&strategy(&config(&fixture.source)), &strategy(&missing), &fixture)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn cancelled_backup_keeps_the_previous_dump() {
        let fixture = MariaFixture::new("my_cancelled");
        conformance::cancelled_backup_keeps_previous_dump(&strategy(&config(&fixture.source)), &fixture).await.unwrap();
    }

    #[tokio::test]
    async fn backup_is_one_database_without_create_or_use_with_versions_noted() {
        let fixture = MariaFixture::new("my_notes");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        let working = tempfile::tempdir().unwrap();
        let report = backup(&strategy(&config(&fixture.source)), working.path()).await.unwrap();

        let file = WorkingFolder::new(working.path()).database_dir().join(format!("{}.sql", fixture.source));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("-- MariaDB dump"), "not a mysqldump file");
        assert!(!text.contains("CREATE DATABASE") && !text.contains("\nUSE `"), "the dump names its database");
        assert!(text.contains("CREATE DEFINER") && text.contains("count_repositories"), "routines are missing");
        assert!(text.contains("TRIGGER"), "triggers are missing");
        assert!(text.contains("0x00FF10DEADBEEF00"), "binary data is not hex");
        assert_eq!(mode_of(&file), 0o600, "the dump must be private");
        assert_eq!(report.files, 1);
        assert_eq!(report.bytes, text.len() as u64);
        assert_eq!(report.notes.get("file"), Some(&format!("{}.sql", fixture.source)));
        assert!(report.notes["mysqldump_version"].contains("MariaDB"), "{:?}", report.notes);
        assert!(report.notes["server_version"].contains("MariaDB"), "{:?}", report.notes);
        assert_eq!(report.notes.get("collation").map(String::as_str), Some("utf8mb4_bin"));
        assert!(leftovers(working.path()).is_empty());
    }

    #[tokio::test]
    async fn restores_into_a_name_full_of_quotes_without_injection() {
        let fixture = MariaFixture::new("my_quotes");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        let my = strategy(&config(&fixture.source));
        let working = tempfile::tempdir().unwrap();
        let report = backup(&my, working.path()).await.unwrap();
        let name = fixture.cleanup.database(format!("{}`'\"; DROP x", unique_name("q", "")));
        let target = DatabaseTarget { database: name.clone() };
        my.check_restore_target(&target).await.unwrap();
        my.restore(&restore_context(working.path(), &my, &report).unwrap(), &target).await.unwrap();
        let exists = mysql(
            None,
            &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}", literal(&name)),
        );
        assert_eq!(exists.trim(), "1");
        assert_eq!(contents_of(&name), contents_of(&fixture.source));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_reaches_mysqldump_through_a_private_option_file_never_a_command_line() {
        require_mariadb();
        let cleanup = Cleanup::default();
        let database = cleanup.database(unique_name("my_pass", "src"));
        let password = format!("S3cret #\"{}\\ pw", std::process::id());
        let user = user_with_password(&cleanup, "my_pass", &database, &password);
        let mut config = config(&database);
        config.user = user.clone();
        config.password = SecretSource::Value(SecretString::from(password.clone()));
        let my = strategy(&config);

        let lock = TableLock::hold(&database, "audit");
        let working = tempfile::tempdir().unwrap();
        let ctx = step_context(working.path(), CancellationToken::new()).unwrap();
        let task = tokio::spawn(async move { my.backup(&ctx, &Drained::for_testing()).await });
        wait_for_blocked_dump(&database, &user);

        assert_no_command_line_contains(&password);
        let dumps = processes_of("mysqldump", &database);
        assert_eq!(dumps.len(), 1, "one mysqldump for {database} while it is blocked");
        let args = &dumps[0].1;
        let first = String::from_utf8_lossy(&args[1]).into_owned();
        let option_file = PathBuf::from(first.strip_prefix("--defaults-extra-file=").expect("option file comes first"));
        assert_eq!(mode_of(&option_file), 0o600);
        assert_eq!(mode_of(option_file.parent().unwrap()), 0o700);
        let args: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        for flag in ["--single-transaction", "--routines", "--triggers", "--events", "--no-tablespaces", "--hex-blob"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing from {args:?}");
        }
        assert!(!args.iter().any(|a| a == "--databases" || a.starts_with("-p") || a.starts_with("--password")));
        lock.release();

        let report = task.await.unwrap().unwrap();
        assert_eq!(report.files, 1);
        assert!(!option_file.parent().unwrap().exists(), "the option file outlived the backup");
        let dump =
            std::fs::read_to_string(WorkingFolder::new(working.path()).database_dir().join(format!("{database}.sql")))
                .unwrap();
        assert!(dump.contains("'ünï'"), "rows missing from the dump");
    }

    #[tokio::test]
    async fn a_wrong_password_is_a_clear_error_naming_the_client() {
        require_mariadb();
        let cleanup = Cleanup::default();
        let database = cleanup.database(unique_name("my_wrongpw", "src"));
        let user = user_with_password(&cleanup, "my_wrongpw", &database, "the-right-one");
        let mut config = config(&database);
        config.user = user;
        config.password = SecretSource::Value(SecretString::from("not-the-password".to_owned()));
        let my = strategy(&config);
        let working = tempfile::tempdir().unwrap();
        let ctx = step_context(working.path(), CancellationToken::new()).unwrap();

        let err = my.prepare(&ctx).await.unwrap_err();
        assert!(!err.to_string().contains("not-the-password"), "the error shows the password: {err}");
        expect_command_failed(err, "mysql", "Access denied");
        let err = backup(&my, working.path()).await.unwrap_err();
        expect_command_failed(err, "mysql", "Access denied");
        assert!(std::fs::read_dir(working.path()).unwrap().next().is_none(), "a failed backup left files");
    }

    #[tokio::test]
    async fn a_missing_database_fails_in_mysqldump_and_leaves_no_dump() {
        require_mariadb();
        let missing = unique_name("my_missing", "db");
        let my = strategy(&config(&missing));
        let working = tempfile::tempdir().unwrap();
        let ctx = step_context(working.path(), CancellationToken::new()).unwrap();
        let err = my.prepare(&ctx).await.unwrap_err();
        expect_command_failed(err, "mysql", "Unknown database");
        let err = backup(&my, working.path()).await.unwrap_err();
        expect_command_failed(err, "mysqldump", "Unknown database");
        assert!(leftovers(working.path()).is_empty(), "{:?}", leftovers(working.path()));
        assert!(!WorkingFolder::new(working.path()).database_dir().exists());
    }

    #[tokio::test]
    async fn missing_tools_are_named_with_an_install_hint() {
        let empty = tempfile::tempdir().unwrap();
        let mut config = config("bitbucket");
        config.bin_dir = Some(empty.path().to_owned());
        let my = strategy(&config);
        let working = tempfile::tempdir().unwrap();
        for err in [
            my.check().await.unwrap_err(),
            backup(&my, working.path()).await.unwrap_err(),
            my.check_restore_target(&DatabaseTarget { database: "anything".into() }).await.unwrap_err(),
        ] {
            match &err {
                StrategyError::ToolMissing { tool, hint } => {
                    assert!(tool == "mysqldump" || tool == "mysql", "{err}");
                    assert!(hint.contains("apt-get install"), "{err}");
                    assert!(hint.contains(&empty.path().display().to_string()), "{err}");
                }
                other => panic!("expected ToolMissing, got {other}"),
            }
        }
    }

    #[tokio::test]
    async fn restore_refuses_a_dump_made_with_databases() {
        let fixture = MariaFixture::new("my_databases");
        conformance::DatabaseFixture::seed(&fixture).await.unwrap();
        let source = tempfile::tempdir().unwrap();
        let dump = WorkingFolder::new(source.path()).database_dir();
        std::fs::create_dir_all(&dump).unwrap();
        let out = std::process::Command::new("mysqldump")
            .args(["--no-defaults", "-h", HOST, "-P", "3306", "-uroot", "--databases", &fixture.source])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(dump.join("legacy.sql"), &out.stdout).unwrap();

        let my = strategy(&config(&fixture.source));
        let target = DatabaseTarget { database: conformance::DatabaseFixture::fresh_database_name(&fixture, "t") };
        let err = my
            .restore(&restore_context(source.path(), &my, &StepReport::default()).unwrap(), &target)
            .await
            .unwrap_err();
        assert!(matches!(err, StrategyError::Incompatible { .. }) && err.to_string().contains("--databases"), "{err}");
        let exists = mysql(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                literal(&target.database)
            ),
        );
        assert_eq!(exists.trim(), "0", "a refused restore created the target");
    }
}

// ---------------------------------------------------------------------------------------------
// command

mod command {
    use super::common::postgres::{self as pg, PgFixture};
    use super::*;

    fn command_config(backup: &str, restore: &str) -> CommandDatabaseConfig {
        CommandDatabaseConfig {
            prepare: None,
            backup: backup.to_owned(),
            restore: restore.to_owned(),
            check_restore_target: None,
            atomic_snapshot: false,
            covered_by_filesystem: false,
        }
    }

    fn read_env_file(path: &Path) -> BTreeMap<String, String> {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect()
    }

    const RECORD_ENV: &str = "env | grep '^BITBUCKET_DIY_' | sort";

    #[tokio::test]
    async fn commands_get_the_documented_environment_in_every_phase() {
        let seen = tempfile::tempdir().unwrap();
        let at = |name: &str| format!("'{}'", seen.path().join(name).display());
        let mut config = command_config(
            &format!("{RECORD_ENV} > \"$BITBUCKET_DIY_DATABASE_DIR/env.txt\""),
            &format!(
                "{RECORD_ENV} > {}; cp \"$BITBUCKET_DIY_DATABASE_DIR/env.txt\" {}",
                at("restore.txt"),
                at("dump.txt")
            ),
        );
        config.prepare = Some(format!("{RECORD_ENV} > {}", at("prepare.txt")));
        config.check_restore_target = Some(format!("{RECORD_ENV} > {}", at("check.txt")));
        let strategy = CommandDatabase::from_config(&config).unwrap();

        let working = tempfile::tempdir().unwrap();
        let root = working.path().display().to_string();
        let ctx = step_context(working.path(), CancellationToken::new()).unwrap();
        let id = ctx.backup_id().as_str().to_owned();
        strategy.prepare(&ctx).await.unwrap();
        let report = strategy.backup(&ctx, &Drained::for_testing()).await.unwrap();
        assert_eq!(report.files, 1);

        let prepare = read_env_file(&seen.path().join("prepare.txt"));
        assert_eq!(prepare["BITBUCKET_DIY_PHASE"], "prepare");
        assert_eq!(prepare["BITBUCKET_DIY_BACKUP_ID"], id);
        assert_eq!(prepare["BITBUCKET_DIY_WORKING_FOLDER"], root);
        assert_eq!(prepare["BITBUCKET_DIY_DATABASE_DIR"], format!("{root}/bitbucket-db"));
        assert!(!prepare.contains_key("BITBUCKET_DIY_TARGET_DATABASE"));

        let dump = WorkingFolder::new(working.path()).database_dir();
        let backup_env = read_env_file(&dump.join("env.txt"));
        assert_eq!(backup_env["BITBUCKET_DIY_PHASE"], "backup");
        assert_eq!(backup_env["BITBUCKET_DIY_BACKUP_ID"], id);
        assert_eq!(backup_env["BITBUCKET_DIY_WORKING_FOLDER"], root);
        assert_eq!(backup_env["BITBUCKET_DIY_DATABASE_DIR"], format!("{root}/bitbucket-db.partial"));
        assert!(leftovers(working.path()).is_empty());

        let target = DatabaseTarget { database: "restored db".to_owned() };
        strategy.check_restore_target(&target).await.unwrap();
        let check = read_env_file(&seen.path().join("check.txt"));
        assert_eq!(check["BITBUCKET_DIY_PHASE"], "check-restore-target");
        assert_eq!(check["BITBUCKET_DIY_TARGET_DATABASE"], "restored db");
        assert!(!check.contains_key("BITBUCKET_DIY_DATABASE_DIR"));

        let restore_ctx = restore_context(working.path(), &strategy, &report).unwrap();
        strategy.restore(&restore_ctx, &target).await.unwrap();
        let restore = read_env_file(&seen.path().join("restore.txt"));
        assert_eq!(restore["BITBUCKET_DIY_PHASE"], "restore");
        assert_eq!(restore["BITBUCKET_DIY_TARGET_DATABASE"], "restored db");
        assert_eq!(restore["BITBUCKET_DIY_DATABASE_DIR"], format!("{root}/bitbucket-db"));
        assert_eq!(restore["BITBUCKET_DIY_BACKUP_ID"], restore_ctx.metadata().id.as_str());
        assert_eq!(read_env_file(&seen.path().join("dump.txt")), backup_env, "restore read another dump");
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_stderr_and_keeps_the_previous_dump() {
        let good =
            CommandDatabase::from_config(&command_config("echo v1 > \"$BITBUCKET_DIY_DATABASE_DIR/dump\"", "true"))
                .unwrap();
        let bad = CommandDatabase::from_config(&command_config(
            "echo half > \"$BITBUCKET_DIY_DATABASE_DIR/dump\"; echo 'dump failed: disk full' >&2; exit 3",
            "true",
        ))
        .unwrap();
        let working = tempfile::tempdir().unwrap();
        backup(&good, working.path()).await.unwrap();
        let err = backup(&bad, working.path()).await.unwrap_err();
        match &err {
            StrategyError::CommandFailed { status, stderr, .. } => {
                assert_eq!(status, "exit code 3");
                assert!(stderr.contains("dump failed: disk full"), "{err}");
            }
            other => panic!("expected CommandFailed, got {other}"),
        }
        let dump = WorkingFolder::new(working.path()).database_dir();
        assert_eq!(std::fs::read_to_string(dump.join("dump")).unwrap(), "v1\n");
        assert!(leftovers(working.path()).is_empty(), "{:?}", leftovers(working.path()));
    }

    #[tokio::test]
    async fn capabilities_follow_the_configuration() {
        let mut config = command_config("true", "true");
        assert_eq!(CommandDatabase::from_config(&config).unwrap().capabilities(), Default::default());
        config.atomic_snapshot = true;
        config.covered_by_filesystem = true;
        let caps = CommandDatabase::from_config(&config).unwrap().capabilities();
        assert!(caps.atomic_snapshot && caps.covered_by_filesystem && !caps.incremental_prepare);
        config.backup = "  ".to_owned();
        assert!(CommandDatabase::from_config(&config).is_err(), "a blank backup command is accepted");
    }

    /// pg_dump/pg_restore driven through the command strategy pass the same suite as the
    /// built-in strategies.
    #[tokio::test]
    async fn commands_running_pg_tools_pass_the_conformance_suite() {
        let fixture = PgFixture::new("cmd_pg");
        let connect = format!("-h {} -p {} -U {}", pg::HOST, pg::PORT, pg::SUPERUSER);
        let mut config = command_config(
            &format!("pg_dump {connect} -Fc -f \"$BITBUCKET_DIY_DATABASE_DIR/db.dump\" '{}'", fixture.source),
            &format!(
                "createdb {connect} -T template0 \"$BITBUCKET_DIY_TARGET_DATABASE\" && \
                 pg_restore {connect} --no-owner --exit-on-error -d \"$BITBUCKET_DIY_TARGET_DATABASE\" \
                 \"$BITBUCKET_DIY_DATABASE_DIR/db.dump\""
            ),
        );
        config.check_restore_target = Some(format!(
            "n=$(psql -X {connect} -d \"$BITBUCKET_DIY_TARGET_DATABASE\" -Atc \
             \"select count(*) from pg_tables where schemaname = 'public'\" 2>/dev/null || echo 0); \
             [ \"$n\" = 0 ] || {{ echo \"$n tables in $BITBUCKET_DIY_TARGET_DATABASE\" >&2; exit 1; }}"
        ));
        let strategy = CommandDatabase::from_config(&config).unwrap();
        conformance::roundtrip(&strategy, &fixture).await.unwrap();
        conformance::refuses_non_empty_target(&strategy, &fixture).await.unwrap();
        conformance::cancelled_backup_keeps_previous_dump(&strategy, &fixture).await.unwrap();
        let failing = CommandDatabase::from_config(&command_config(
            &format!("pg_dump {connect} -Fc -f \"$BITBUCKET_DIY_DATABASE_DIR/db.dump\" no_such_database_bbdiy"),
            "true",
        ))
        .unwrap();
        conformance::previous_dump_survives_failure(&strategy, &failing, &fixture).await.unwrap();
    }
}
