//! The local MariaDB server of the test machine (127.0.0.1:3306, root without a password): SQL
//! through the real `mysql`, unique names, cleanup even on panic, and the conformance fixture.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use async_trait::async_trait;
use bitbucket_diy_core::config::{MysqlConfig, SecretSource};
use bitbucket_diy_core::strategy::conformance::database::DatabaseFixture;

use super::names::unique_name;

pub const HOST: &str = "127.0.0.1";
pub const PORT: u16 = 3306;

fn client() -> Command {
    let mut cmd = Command::new("mysql");
    cmd.args(["--no-defaults", "-h", HOST, "-P", "3306", "-uroot", "--batch", "--skip-column-names"])
        .arg("--default-character-set=utf8mb4");
    cmd
}

/// Fail (never skip) when the server is not there, saying how to start it.
pub fn require_mariadb() {
    let probe = client().args(["--connect-timeout=5", "-e", "select 1"]).output();
    let reachable = matches!(&probe, Ok(out) if out.status.success());
    assert!(
        reachable,
        "MariaDB is not reachable on {HOST}:{PORT} as root without a password: {}\n\
         Start it with `start-stop-daemon --start --background --exec /usr/sbin/mariadbd -- --user=mysql` \
         (as root, after `install -d -o mysql /run/mysqld`), or run the README's test command \
         `bash tests/run-all.sh`, which installs and starts it (scripts/ensure-test-services.sh).",
        match &probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("mysql could not run: {e}"),
        }
    );
}

/// Run `sql` (on standard input, so nothing of it shows in `ps`) as root, in `database` when
/// given; returns the rows, tab-separated.
pub fn mysql(database: Option<&str>, sql: &str) -> String {
    String::from_utf8_lossy(&mysql_bytes(database, sql)).into_owned()
}

/// `mysql`, byte for byte: binary columns come out raw (NULL as `NULL`, as opposed to an
/// empty value), and the caller escapes what is not text.
pub fn mysql_bytes(database: Option<&str>, sql: &str) -> Vec<u8> {
    let mut cmd = client();
    if let Some(db) = database {
        cmd.arg(format!("--database={db}"));
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mysql runs");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "mysql failed: {}\nSQL:\n{sql}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A quoted string literal (the test server runs the default SQL mode).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Databases and users this test created, dropped when it ends (also when it panics).
#[derive(Default)]
pub struct Cleanup {
    databases: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn database(&self, name: String) -> String {
        self.databases.lock().unwrap().push(name.clone());
        name
    }

    pub fn user(&self, name: String) -> String {
        self.users.lock().unwrap().push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut sql = String::new();
        for db in self.databases.get_mut().map(std::mem::take).unwrap_or_default() {
            sql.push_str(&format!("DROP DATABASE IF EXISTS {};\n", ident(&db)));
        }
        for user in self.users.get_mut().map(std::mem::take).unwrap_or_default() {
            sql.push_str(&format!("DROP USER IF EXISTS {}@'%';\n", literal(&user)));
        }
        if sql.is_empty() {
            return;
        }
        // No assert here: a panic while unwinding would abort and hide the test's own failure.
        if let Ok(mut child) =
            client().arg("--force").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
        {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(sql.as_bytes());
            }
            let _ = child.wait();
        }
    }
}

/// The strategy's configuration for `database` on the local server, as root.
pub fn config(database: &str) -> MysqlConfig {
    MysqlConfig {
        host: HOST.to_owned(),
        port: PORT,
        database: database.to_owned(),
        user: "root".to_owned(),
        password: SecretSource::Unset,
        dump_options: Vec::new(),
        bin_dir: None,
    }
}

/// Tables with a foreign key and auto-increment, 4-byte UTF-8, binary and blob data, a view,
/// a trigger and a stored procedure.
pub const SEED: &str = r#"
CREATE TABLE project (
    id INT AUTO_INCREMENT PRIMARY KEY,
    project_key VARCHAR(20) NOT NULL UNIQUE,
    name VARCHAR(200) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE repository (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    project_id INT NOT NULL,
    slug VARCHAR(100) NOT NULL,
    avatar VARBINARY(64),
    content LONGBLOB,
    created DATETIME(6) NOT NULL,
    CONSTRAINT fk_repository_project FOREIGN KEY (project_id) REFERENCES project (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE audit (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    detail TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin AUTO_INCREMENT=1000;
INSERT INTO project (project_key, name) VALUES
    ('PRJ', 'Prøject ünïcode ✓ 日本語'),
    ('EMO', 'emoji 🎉 with \'quotes\', "double", back\\slash and a\ttab');
INSERT INTO repository (project_id, slug, avatar, content, created) VALUES
    (1, 'repo-a', X'00FF10DEADBEEF00', NULL, '2024-01-02 03:04:05.000001'),
    (1, 'repo-b', NULL, REPEAT(X'00FF0A0D5C27', 50), '2024-02-29 23:59:59.123456'),
    (2, 'répo-ç', X'', X'', '1999-12-31 00:00:00');
CREATE TRIGGER audit_repository AFTER INSERT ON repository
    FOR EACH ROW INSERT INTO audit (detail) VALUES (CONCAT('created ', NEW.slug));
INSERT INTO repository (project_id, slug, created) VALUES (2, 'after-trigger', '2025-05-05 05:05:05');
CREATE VIEW repository_by_project AS
    SELECT p.project_key, r.slug FROM repository r JOIN project p ON p.id = r.project_id;
CREATE PROCEDURE count_repositories(OUT n INT) SELECT COUNT(*) INTO n FROM repository;
"#;

/// Everything a restore must reproduce: tables with their next auto-increment value, rows,
/// views' rows, foreign keys, triggers and routines.
pub fn contents_of(database: &str) -> String {
    let schema = literal(database);
    let mut text = String::from("== tables\n");
    text.push_str(&mysql(
        None,
        &format!(
            "SELECT TABLE_NAME, TABLE_TYPE, IFNULL(AUTO_INCREMENT, '-') FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = {schema} ORDER BY TABLE_NAME"
        ),
    ));
    let tables = mysql(
        None,
        &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {schema} ORDER BY TABLE_NAME"),
    );
    for table in tables.lines() {
        text.push_str(&format!("== rows of {table}\n"));
        let rows = mysql_bytes(Some(database), &format!("SELECT * FROM {} ORDER BY 1, 2", ident(table)));
        text.push_str(&rows.escape_ascii().to_string());
        text.push('\n');
    }
    text.push_str("== foreign keys\n");
    text.push_str(&mysql(
        None,
        &format!(
            "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = {schema} ORDER BY 1"
        ),
    ));
    text.push_str("== triggers\n");
    text.push_str(&mysql(
        None,
        &format!(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = {schema} ORDER BY 1"
        ),
    ));
    text.push_str("== routines\n");
    text.push_str(&mysql(
        None,
        &format!(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = {schema} ORDER BY 2"
        ),
    ));
    text
}

/// The conformance fixture: a source database, fresh targets, all dropped at the end.
pub struct MariaFixture {
    pub cleanup: Cleanup,
    pub source: String,
    test: String,
}

impl MariaFixture {
    pub fn new(test: &str) -> Self {
        require_mariadb();
        let cleanup = Cleanup::default();
        let source = cleanup.database(unique_name(test, "src"));
        Self { cleanup, source, test: test.to_owned() }
    }
}

#[async_trait]
impl DatabaseFixture for MariaFixture {
    fn source_database(&self) -> String {
        self.source.clone()
    }

    fn fresh_database_name(&self, purpose: &str) -> String {
        self.cleanup.database(unique_name(&self.test, purpose))
    }

    async fn seed(&self) -> Result<(), String> {
        mysql(
            None,
            &format!(
                "DROP DATABASE IF EXISTS {0}; CREATE DATABASE {0} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;",
                ident(&self.source)
            ),
        );
        mysql(Some(&self.source), SEED);
        Ok(())
    }

    async fn contents(&self, database: &str) -> Result<String, String> {
        Ok(contents_of(database))
    }

    async fn create_non_empty(&self, database: &str) -> Result<(), String> {
        mysql(None, &format!("CREATE DATABASE {};", ident(database)));
        mysql(
            Some(database),
            "CREATE TABLE precious (id INT PRIMARY KEY, note TEXT); INSERT INTO precious VALUES (1, 'keep me');",
        );
        Ok(())
    }
}

/// A session holding `LOCK TABLES … WRITE` on `table`: mysqldump's read of it waits, which keeps
/// a backup running as long as a test needs, without any timing.
pub struct TableLock {
    child: Child,
}

impl TableLock {
    pub fn hold(database: &str, table: &str) -> Self {
        let mut child = client()
            .args(["--unbuffered", &format!("--database={database}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "LOCK TABLES {} WRITE; SELECT 'locked';", ident(table)).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "the locking session did not confirm the lock");
        Self { child }
    }

    pub fn release(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = writeln!(stdin, "UNLOCK TABLES;");
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

/// Wait until a session of `user` on `database` waits for a table's metadata lock.
pub fn wait_for_blocked_dump(database: &str, user: &str) {
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = {} AND USER = {} \
         AND STATE LIKE '%metadata lock%'",
        literal(database),
        literal(user)
    );
    super::postgres::wait_until("mysqldump to block on the table lock", || mysql(None, &sql).trim() != "0");
}
