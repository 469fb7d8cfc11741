//! `config init`, `config check`, `config import-vars`, and bad configurations for every command.

use std::os::unix::fs::PermissionsExt;

use bitbucket_diy_core::BackupConfig;
use bitbucket_diy_core::config::EXAMPLE_CONFIG;

use crate::support::{World, command, run, unreachable_url};

#[tokio::test]
async fn unknown_key_exits_2_naming_file_key_and_line() {
    let world = World::new().await;
    world.edit_config("[archive]\n", "[archive]\nkepp = 3\n");
    let out = world.run(&["backup"]).await;
    out.code(2).says("kepp").says(world.config.to_str().unwrap());
    assert!(out.stderr.contains("line 13"), "{}", out.stderr);
    // Every command that reads the configuration refuses it the same way.
    world.run(&["list"]).await.code(2).says("kepp");
    // A metrics file given on the command line records even that failure.
    let metrics = world.dir.path().join("metrics.prom");
    world.run(&["backup", "--metrics-file", metrics.to_str().unwrap()]).await.code(2);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("bitbucket_diy_last_run_exit_code 2\n") && prom.contains("kind=\"config\""), "{prom}");
    assert!(!world.sim.is_locked());
}

#[tokio::test]
async fn wrong_type_and_bad_override_exit_2() {
    let world = World::new().await;
    world.edit_config("[archive]\n", "[archive]\nkeep = \"seven\"\n");
    world.run(&["list"]).await.code(2).says("keep");

    let world = World::new().await;
    let mut list = world.command(&["list"]);
    list.env("BITBUCKET_DIY_ARCHIVE_KEEP", "many");
    run(list).await.code(2).says("BITBUCKET_DIY_ARCHIVE_KEEP");
}

#[tokio::test]
async fn missing_configuration_lists_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    run(command(dir.path(), &["list"]))
        .await
        .code(2)
        .says("no configuration file")
        .says("/etc/bitbucket-diy/config.toml");
    let absent = dir.path().join("absent.toml");
    run(command(dir.path(), &["--config", absent.to_str().unwrap(), "list"])).await.code(2).says("absent.toml");
}

#[tokio::test]
async fn configuration_is_found_on_the_search_path() {
    let world = World::new().await;
    let xdg = world.dir.path().join(".config/bitbucket-diy");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::copy(&world.config, xdg.join("config.toml")).unwrap();
    run(command(world.dir.path(), &["list"])).await.code(0).says("No backups");
}

#[tokio::test]
async fn config_init_writes_a_file_that_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let printed = run(command(dir.path(), &["config", "init"])).await;
    printed.code(0);
    assert_eq!(printed.stdout, EXAMPLE_CONFIG);

    let file = dir.path().join("etc/bitbucket-diy.toml");
    run(command(dir.path(), &["config", "init", file.to_str().unwrap()])).await.code(0).says("config check");
    BackupConfig::load_with_env(&file, []).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::write(&file, "# mine\n").unwrap();
    run(command(dir.path(), &["config", "init", file.to_str().unwrap()])).await.code(2).says("--force");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    run(command(dir.path(), &["config", "init", "--force", file.to_str().unwrap()])).await.code(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), EXAMPLE_CONFIG);
}

#[tokio::test]
async fn config_check_probes_without_locking() {
    let world = World::new().await;
    let out = world.run(&["config", "check"]).await;
    out.code(0).says("version 8.19.0").says("working folder").says("nothing was locked");
    assert!(
        !world
            .sim
            .events()
            .iter()
            .any(|e| e.kind
                == bitbucket_diy_core::simulator::SimEventKind::Locked { owner: world.sim.user().to_owned() })
    );
    assert!(world.sim.snapshot().request_count > 0, "Bitbucket was probed");
    let json = world.run(&["--json", "config", "check"]).await;
    json.code(0);
    assert!(json.json()["checks"].as_array().unwrap().len() >= 4);
}

#[tokio::test]
async fn config_check_fails_on_an_unreachable_server_and_an_unwritable_folder() {
    let world = World::new().await;
    world.edit_config(world.sim.url().as_str(), &unreachable_url());
    world.run(&["config", "check"]).await.code(3).says("could not reach");

    let world = World::new().await;
    let blocker = world.dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    world.edit_config(world.archives.to_str().unwrap(), blocker.join("archives").to_str().unwrap());
    world.run(&["config", "check"]).await.code(4).says("a-file");
}

/// One broken setting does not hide the next: every probe runs and is listed, the first failure
/// sets the exit code.
#[tokio::test]
async fn config_check_lists_every_failure() {
    let world = World::new().await;
    let blocker = world.dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    world.edit_config(world.archives.to_str().unwrap(), blocker.join("archives").to_str().unwrap());
    world.edit_config(world.sim.url().as_str(), &unreachable_url());
    let out = world.run(&["config", "check"]).await;
    out.code(4).says("FAILED  archive folder").says("FAILED  Bitbucket at").says("ok  working folder");
}

const VARS: &str = r#"# bitbucket.diy-backup.vars.sh of the vendor scripts
INSTANCE_NAME=bitbucket
BITBUCKET_URL=https://bitbucket.example.com
BITBUCKET_HOME=/var/atlassian/application-data/bitbucket
BITBUCKET_BACKUP_USER=admin
BITBUCKET_BACKUP_PASS="s3cret"
BACKUP_DISK_TYPE=rsync
BACKUP_DATABASE_TYPE=postgresql
BACKUP_ARCHIVE_TYPE=tar
BITBUCKET_BACKUP_ROOT=/backup/work
BITBUCKET_BACKUP_ARCHIVE_ROOT=/backup/archives
KEEP_BACKUPS=5
POSTGRES_HOST=db.example.com
HIPCHAT_URL=https://hipchat.example.com
AWS_REGION=us-east-1
"#;

#[tokio::test]
async fn import_vars_prints_a_loadable_configuration_and_warns_per_variable() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("bitbucket.diy-backup.vars.sh");
    std::fs::write(&vars, VARS).unwrap();
    let out = run(command(dir.path(), &["config", "import-vars", vars.to_str().unwrap()])).await;
    out.code(0);
    let loaded = BackupConfig::from_toml_with_env(&out.stdout, "imported", []).unwrap();
    assert_eq!(loaded.config.archive.keep, 5);
    assert!(!out.stdout.contains("s3cret"), "{}", out.stdout);
    for variable in ["AWS_REGION", "HIPCHAT_URL", "BITBUCKET_BACKUP_PASS"] {
        assert!(out.stderr.lines().any(|l| l.contains("WARN") && l.contains(variable)), "{variable}: {}", out.stderr);
    }
    assert!(out.stderr.contains("line 15"), "{}", out.stderr);

    let json = run(command(dir.path(), &["--json", "config", "import-vars", vars.to_str().unwrap()])).await;
    json.code(0);
    assert!(json.json()["warnings"].as_array().unwrap().iter().any(|w| w["variable"] == "AWS_REGION"));

    run(command(dir.path(), &["config", "import-vars", "/no/such/vars.sh"])).await.code(2).says("/no/such/vars.sh");
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_has_examples() {
    let dir = tempfile::tempdir().unwrap();
    run(command(dir.path(), &["backup", "--no-such-flag"])).await.code(2);
    run(command(dir.path(), &["verify"])).await.code(2).says("<ARCHIVE>");
    for cmd in ["backup", "restore", "list", "verify", "status", "unlock", "cancel", "simulate", "demo", "completions"]
    {
        run(command(dir.path(), &[cmd, "--help"])).await.code(0).says("Examples:");
    }
    run(command(dir.path(), &["config", "init", "--help"])).await.code(0).says("Examples:");
}

#[tokio::test]
async fn completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    run(command(dir.path(), &["completions", "bash"]))
        .await
        .code(0)
        .says("complete -F _bitbucket__diy")
        .says("import-vars");
    run(command(dir.path(), &["completions", "zsh"])).await.code(0).says("#compdef bitbucket-diy");
    run(command(dir.path(), &["completions", "fish"])).await.code(0).says("complete -c bitbucket-diy");
}

#[tokio::test]
async fn list_and_verify_need_no_secrets() {
    let world = World::new().await;
    world.run(&["backup"]).await.code(0);
    world.write_config(
        "[database]\ntype = \"postgresql\"\nhost = \"127.0.0.1\"\npassword_env = \"BBDIY_UNSET_DB_PASSWORD\"\n",
        "",
    );
    // Neither the Bitbucket nor the database password is set.
    let mut list = command(world.dir.path(), &["--config", world.config.to_str().unwrap(), "list"]);
    list.env_remove(crate::support::PASSWORD_VAR);
    run(list).await.code(0).says("never");
    let mut verify = command(world.dir.path(), &["--config", world.config.to_str().unwrap(), "verify", "--latest"]);
    verify.env_remove(crate::support::PASSWORD_VAR);
    run(verify).await.code(0).says("verified");
    // A backup does need them, and says which.
    world.run(&["backup"]).await.code(2).says("BBDIY_UNSET_DB_PASSWORD");
}
