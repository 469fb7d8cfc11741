//! A PostgreSQL-backed backup and restore through the CLI, against the real server on
//! 127.0.0.1:5432 (trust authentication, superuser `postgres`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::World;

/// Run `sql` on `database` through psql (fed on stdin); panics with psql's message on failure.
fn psql(database: &str, sql: &str) -> String {
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d"])
        .arg(database)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs (apt-get install postgresql-client)");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "psql on {database} failed: {}\nIs PostgreSQL running on 127.0.0.1:5432 with trust authentication for \
         `postgres`? Start it with scripts/ensure-test-services.sh (as root).",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Drops the databases when the test ends, panicking or not.
struct Databases(Vec<String>);

impl Drop for Databases {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", "postgres", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .output();
        }
    }
}

pub fn unique(purpose: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("bbdiy_cli_{}_{:x}_{}_{purpose}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn postgresql_backup_and_restore_through_the_cli() {
    let source = unique("src");
    let target = unique("restored");
    let _cleanup = Databases(vec![source.clone(), target.clone()]);
    psql("postgres", &format!("CREATE DATABASE \"{source}\""));
    psql(
        &source,
        "CREATE TABLE repository (id int PRIMARY KEY, name text NOT NULL);\n\
         INSERT INTO repository SELECT g, 'repo-' || g FROM generate_series(1, 250) g;",
    );

    let world = World::new().await;
    world.write_config(
        &format!(
            "[database]\ntype = \"postgresql\"\nhost = \"127.0.0.1\"\nport = 5432\ndatabase = \"{source}\"\n\
             user = \"postgres\"\njobs = 2\n"
        ),
        "",
    );
    let backup = world.run(&["backup"]).await;
    backup.code(0).says("dumping the database");
    let id = world.listed_ids().await.remove(0);

    let home = world.dir.path().join("restored-home");
    world.run(&["restore", &id, "--home", home.to_str().unwrap(), "--database", &target]).await.code(0).says(&target);
    assert_eq!(psql(&target, "SELECT count(*) FROM repository"), "250");
    assert_eq!(psql(&target, "SELECT name FROM repository WHERE id = 42"), "repo-42");

    // Restoring into an existing database is refused before anything is written.
    let again = world.dir.path().join("again");
    world.run(&["restore", &id, "--home", again.to_str().unwrap(), "--database", &target]).await.code(7);
    assert!(!again.exists());
    // A restore needs a database name with this strategy.
    world.run(&["restore", &id, "--home", again.to_str().unwrap()]).await.code(2).says("--database");
}
