//! The local PostgreSQL server of the test machine (127.0.0.1:5432, trust, superuser `postgres`):
//! SQL through the real `psql`, unique database and role names, cleanup even on panic, and the
//! conformance fixture.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bitbucket_diy_core::config::{PostgresConfig, SecretSource};
use bitbucket_diy_core::strategy::conformance::database::DatabaseFixture;

use super::names::unique_name;

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 5432;
pub const SUPERUSER: &str = "postgres";

/// Fail (never skip) when the server is not there, saying how to start it.
pub fn require_postgres() {
    let probe = Command::new("psql")
        .args(["-X", "-At", "-h", HOST, "-p", "5432", "-U", SUPERUSER, "-d", "postgres", "-c", "select 1"])
        .env("PGCONNECT_TIMEOUT", "5")
        .output();
    let reachable = matches!(&probe, Ok(out) if out.status.success());
    assert!(
        reachable,
        "PostgreSQL is not reachable on {HOST}:{PORT} as `{SUPERUSER}` (trust auth): {}\n\
         Start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` (as root), or run the \
         README's test command `bash tests/run-all.sh`, which installs and starts it \
         (scripts/ensure-test-services.sh).",
        match &probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("psql could not run: {e}"),
        }
    );
}

/// Run `sql` (fed on standard input, so nothing of it shows in `ps`) on `database` as `user`;
/// returns the unaligned, tuples-only output. Panics with psql's message on failure.
pub fn psql_as(user: &str, database: &str, sql: &str) -> String {
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", "5432", "-U", user, "-d", database])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "psql on {database} failed: {}\nSQL:\n{sql}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `psql_as` the superuser.
pub fn psql(database: &str, sql: &str) -> String {
    psql_as(SUPERUSER, database, sql)
}

/// A single-quoted SQL literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A double-quoted SQL identifier.
pub fn ident(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Databases and roles this test created, dropped when it ends (also when it panics).
#[derive(Default)]
pub struct Cleanup {
    databases: Mutex<Vec<String>>,
    roles: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn database(&self, name: String) -> String {
        self.databases.lock().unwrap().push(name.clone());
        name
    }

    pub fn role(&self, name: String) -> String {
        self.roles.lock().unwrap().push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut sql = String::new();
        for db in self.databases.get_mut().map(std::mem::take).unwrap_or_default() {
            sql.push_str(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE);\n", ident(&db)));
        }
        for role in self.roles.get_mut().map(std::mem::take).unwrap_or_default() {
            sql.push_str(&format!("DROP ROLE IF EXISTS {};\n", ident(&role)));
        }
        if sql.is_empty() {
            return;
        }
        // No assert here: a panic while unwinding would abort and hide the test's own failure.
        let child = Command::new("psql")
            .args(["-X", "-q", "-h", HOST, "-p", "5432", "-U", SUPERUSER, "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(sql.as_bytes());
            }
            let _ = child.wait();
        }
    }
}

/// The strategy's configuration for `database` on the local server.
pub fn config(database: &str) -> PostgresConfig {
    PostgresConfig {
        host: HOST.to_owned(),
        port: PORT,
        database: database.to_owned(),
        user: SUPERUSER.to_owned(),
        password: SecretSource::Unset,
        jobs: 2,
        bin_dir: None,
        maintenance_database: "postgres".to_owned(),
        dump_after_unlock: true,
    }
}

/// Tables with a foreign key, identity and serial columns, a free-standing sequence, non-ASCII
/// text (including 4-byte characters), binary data, JSON and a view.
pub const SEED: &str = r#"
CREATE TABLE project (
    id serial PRIMARY KEY,
    project_key text UNIQUE NOT NULL,
    name text NOT NULL
);
CREATE TABLE repository (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    project_id int NOT NULL REFERENCES project (id),
    slug text NOT NULL,
    avatar bytea,
    created timestamptz NOT NULL
);
CREATE SEQUENCE audit_seq START 1000;
CREATE TABLE audit (id bigint PRIMARY KEY DEFAULT nextval('audit_seq'), detail jsonb NOT NULL);
INSERT INTO project (project_key, name) VALUES
    ('PRJ', 'Prøject ünïcode ✓ 日本語'),
    ('EMO', 'emoji 🎉 with ''quotes'', "double", back\slash and a	tab');
INSERT INTO repository (project_id, slug, avatar, created) VALUES
    (1, 'repo-a', '\x00ff10deadbeef00'::bytea, '2024-01-02 03:04:05+00'),
    (1, 'repo-b', NULL, '2024-02-29 23:59:59.123456+00'),
    (2, 'répo-ç', decode(repeat('00ff', 512), 'hex'), '1999-12-31 00:00:00+00');
INSERT INTO audit (detail) SELECT jsonb_build_object('n', g, 'text', 'ligne ' || g) FROM generate_series(1, 200) g;
CREATE VIEW repository_by_project AS
    SELECT p.project_key, r.slug FROM repository r JOIN project p ON p.id = r.project_id;
"#;

/// Everything a restore must reproduce: every table's rows, every view's rows, every
/// sequence's position, every constraint.
pub fn contents_of(database: &str) -> String {
    let relations = psql(
        database,
        "SELECT c.relkind::text || ' ' || format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'v', 'S') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
         ORDER BY 1;",
    );
    let mut text = String::new();
    for line in relations.lines() {
        let (kind, name) = line.split_once(' ').unwrap();
        text.push_str(&format!("== {kind} {name}\n"));
        let query = match kind {
            "S" => format!("SELECT last_value, is_called FROM {name};"),
            _ => format!("SELECT t::text FROM {name} t ORDER BY 1;"),
        };
        text.push_str(&psql(database, &query));
    }
    text.push_str("== constraints\n");
    text.push_str(&psql(
        database,
        "SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE connamespace = 'public'::regnamespace ORDER BY 1;",
    ));
    text
}

/// The conformance fixture: a source database, fresh targets, all dropped at the end.
pub struct PgFixture {
    pub cleanup: Cleanup,
    pub source: String,
    test: String,
}

impl PgFixture {
    /// A fixture for `test`; the source database is created by `seed`.
    pub fn new(test: &str) -> Self {
        require_postgres();
        let cleanup = Cleanup::default();
        let source = cleanup.database(unique_name(test, "src"));
        Self { cleanup, source, test: test.to_owned() }
    }
}

#[async_trait]
impl DatabaseFixture for PgFixture {
    fn source_database(&self) -> String {
        self.source.clone()
    }

    fn fresh_database_name(&self, purpose: &str) -> String {
        self.cleanup.database(unique_name(&self.test, purpose))
    }

    async fn seed(&self) -> Result<(), String> {
        psql("postgres", &format!("DROP DATABASE IF EXISTS {0}; CREATE DATABASE {0};", ident(&self.source)));
        psql(&self.source, SEED);
        Ok(())
    }

    async fn contents(&self, database: &str) -> Result<String, String> {
        Ok(contents_of(database))
    }

    async fn create_non_empty(&self, database: &str) -> Result<(), String> {
        psql("postgres", &format!("CREATE DATABASE {};", ident(database)));
        psql(
            database,
            "CREATE TABLE precious (id int PRIMARY KEY, note text); INSERT INTO precious VALUES (1, 'keep me');",
        );
        Ok(())
    }
}

/// A session holding `ACCESS EXCLUSIVE` on `table` of `database` until released: pg_dump waits
/// for it, which keeps a backup running as long as a test needs, without any timing.
pub struct TableLock {
    child: Child,
}

impl TableLock {
    pub fn hold(database: &str, table: &str) -> Self {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-h", HOST, "-p", "5432", "-U", SUPERUSER, "-d", database])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE;", ident(table)).unwrap();
        stdin.flush().unwrap();
        let granted = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = {} AND l.mode = 'AccessExclusiveLock' AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());",
            literal(table)
        );
        wait_until(&format!("the lock on {table}"), || psql(database, &granted).trim() == "1");
        Self { child }
    }

    /// Commit and end the session.
    pub fn release(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        let _ = self.child.wait();
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until pg_dump's connection to `database` is blocked on a lock.
pub fn wait_for_blocked_pg_dump(database: &str) {
    wait_for_blocked_client(database, "pg_dump");
}

/// Wait until a connection of `application` (`pg_dump`, `psql`) to `database` is blocked on a lock.
pub fn wait_for_blocked_client(database: &str, application: &str) {
    let blocked = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND application_name = {} \
         AND wait_event_type = 'Lock';",
        literal(database),
        literal(application)
    );
    wait_until(&format!("{application} to block on the table lock"), || psql("postgres", &blocked).trim() != "0");
}

/// Poll `condition` every 50 ms; fail after a generous bound (a hang, not a timing check).
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what} after 60 s");
}
