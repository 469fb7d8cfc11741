//! A MariaDB-backed backup and restore through the CLI, against the real server on
//! 127.0.0.1:3306 (root without a password).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::World;

fn mysql(database: Option<&str>, sql: &str) -> String {
    let mut command = Command::new("mysql");
    command.args(["--no-defaults", "-h", "127.0.0.1", "-P", "3306", "-uroot", "--batch", "--skip-column-names"]);
    if let Some(database) = database {
        command.arg(database);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mysql runs (apt-get install mariadb-client)");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mysql failed: {}\nIs MariaDB running on 127.0.0.1:3306 with root and no password? Start it with \
         scripts/ensure-test-services.sh (as root).",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Drops the databases when the test ends, panicking or not.
struct Databases(Vec<String>);

impl Drop for Databases {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("mysql")
                .args(["--no-defaults", "-h", "127.0.0.1", "-P", "3306", "-uroot", "-e"])
                .arg(format!("DROP DATABASE IF EXISTS `{name}`"))
                .output();
        }
    }
}

#[tokio::test]
async fn mariadb_backup_and_restore_through_the_cli() {
    let source = crate::postgres::unique("my_src");
    let target = crate::postgres::unique("my_restored");
    let _cleanup = Databases(vec![source.clone(), target.clone()]);
    mysql(None, &format!("CREATE DATABASE `{source}`"));
    mysql(
        Some(&source),
        "CREATE TABLE repository (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL);\n\
         INSERT INTO repository VALUES (1, 'one'), (2, 'two'), (3, 'three');",
    );
    let world = World::new().await;
    world.write_config(
        &format!("[database]\ntype = \"mysql\"\nhost = \"127.0.0.1\"\ndatabase = \"{source}\"\nuser = \"root\"\n"),
        "",
    );
    world.run(&["backup"]).await.code(0);
    let id = world.listed_ids().await.remove(0);
    let home = world.dir.path().join("restored-home");
    world.run(&["restore", &id, "--home", home.to_str().unwrap(), "--database", &target]).await.code(0);
    assert_eq!(mysql(Some(&target), "SELECT name FROM repository WHERE id = 2"), "two");
    assert_eq!(mysql(Some(&target), "SELECT COUNT(*) FROM repository"), "3");
}
