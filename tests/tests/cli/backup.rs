//! `backup`, `list`, `verify` and `restore` against the simulator, and how failures end.

use std::time::Duration;

use bitbucket_diy_core::client::UnlockToken;
use bitbucket_diy_core::sample_home;
use bitbucket_diy_core::simulator::{Fault, SimEventKind, SimulatorConfig};

use crate::support::{World, unreachable_url};

#[tokio::test]
async fn backup_list_verify_restore_round_trip() {
    let world = World::new().await;
    let metrics = world.dir.path().join("bitbucket_diy.prom");

    let backup = world.run(&["backup", "--metrics-file", metrics.to_str().unwrap()]).await;
    backup.code(0).says("complete").says("lock window");
    // Not a terminal: timestamped log lines in the reference scripts' spirit.
    let url = world.sim.url().to_string();
    assert!(
        backup
            .stderr
            .lines()
            .any(|l| l.contains(&format!("[{}] INFO: locked for maintenance", url.trim_end_matches('/')))),
        "{}",
        backup.stderr
    );
    assert!(!world.sim.is_locked());
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("bitbucket_diy_last_run_success 1\n"), "{prom}");
    assert!(prom.contains("bitbucket_diy_last_lock_window_seconds "), "{prom}");

    let ids = world.listed_ids().await;
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    let list = world.run(&["list"]).await;
    list.code(0).says(id).says("never").says("AGE");

    world.run(&["verify", "--deep", id]).await.code(0).says("verified (deep)").says("repositories passed");
    let list = world.run(&["list"]).await;
    assert!(list.stdout.lines().any(|l| l.starts_with(id.as_str()) && l.contains("deep,")), "{}", list.stdout);

    let restored = world.dir.path().join("restored");
    world.run(&["restore", id, "--home", restored.to_str().unwrap()]).await.code(0).says("restored");
    let checked = sample_home::fsck_all(&restored).unwrap();
    assert_eq!(checked, sample_home::fsck_all(&world.home).unwrap());
    assert_eq!(
        std::fs::read(restored.join("shared/bitbucket.properties")).unwrap(),
        std::fs::read(world.home.join("shared/bitbucket.properties")).unwrap()
    );

    // A restore never overwrites: the same target again is refused.
    world.run(&["restore", id, "--home", restored.to_str().unwrap()]).await.code(7).says("not empty");
}

#[tokio::test]
async fn json_reports_parse_and_errors_are_json_too() {
    let world = World::new().await;
    let backup = world.run(&["--json", "backup"]).await;
    backup.code(0);
    let report = backup.json();
    assert!(report["lock_window"].as_f64().unwrap() > 0.0, "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    assert!(std::path::Path::new(report["archive"].as_str().unwrap()).is_file());

    let verify = world.run(&["--json", "verify", "--latest"]).await;
    verify.code(0);
    assert!(verify.json()["verify"]["entries"].as_u64().unwrap() > 0);
    let listed = world.run(&["--json", "list"]).await.json();
    assert_eq!(listed[0]["metadata"]["id"], id.as_str());
    assert_eq!(listed[0]["verification"]["ok"], true);

    let missing = world.run(&["--json", "verify", "no-such-backup"]).await;
    missing.code(5);
    let error = missing.json();
    assert_eq!(error["error"]["kind"], "archive");
    assert_eq!(error["error"]["exit_code"], 5);
    assert!(error["error"]["message"].as_str().unwrap().contains(&id), "lists what is there: {error}");
}

#[tokio::test]
async fn progress_as_json_lines() {
    let world = World::new().await;
    let run = world.run(&["backup", "--progress", "json"]).await;
    run.code(0);
    let events: Vec<serde_json::Value> =
        run.stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for expected in ["phase-started", "locked", "drained", "unlocked", "archive-written"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(events.iter().all(|e| e["time"].is_string()));
}

#[tokio::test]
async fn quiet_backup_prints_only_the_report() {
    let world = World::new().await;
    let run = world.run(&["-q", "backup"]).await;
    run.code(0).says("complete");
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[tokio::test]
async fn retention_drops_the_verification_of_pruned_archives() {
    let world = World::new().await;
    world.edit_config("[archive]\n", "[archive]\nkeep = 1\n");
    world.run(&["backup"]).await.code(0);
    world.run(&["verify", "--latest"]).await.code(0);
    world.run(&["backup"]).await.code(0);
    let ids = world.listed_ids().await;
    assert_eq!(ids.len(), 1, "keep = 1");
    world.run(&["list"]).await.code(0).says("never");
    let log = std::fs::read_to_string(world.archives.join(".bitbucket-diy-verified.json")).unwrap();
    assert!(!log.contains("\"ok\""), "the pruned archive's record is gone: {log}");
}

#[tokio::test]
async fn lock_refused_exits_3_and_metrics_record_the_failure() {
    let world = World::new().await;
    world.sim.add_fault(Fault::LockedBy { owner: "Jane Admin".into() });
    let metrics = world.dir.path().join("metrics.prom");
    world.edit_config("poll_interval", &format!("metrics_file = \"{}\"\npoll_interval", metrics.display()));
    world.run(&["backup"]).await.code(3).says("already locked").says("Jane Admin");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("bitbucket_diy_last_run_success 0\n"), "{prom}");
    assert!(prom.contains("bitbucket_diy_last_run_exit_code 3\n"), "{prom}");
    assert!(prom.contains("kind=\"already-locked\""), "{prom}");
    assert!(world.listed_ids().await.is_empty());
}

#[tokio::test]
async fn wrong_password_exits_3_and_says_so() {
    let world = World::new().await;
    let mut command = world.command(&["backup"]);
    command.env(crate::support::PASSWORD_VAR, "not-the-password");
    let run = crate::support::run(command).await;
    run.code(3).says("rejected the credentials");
    assert!(!run.stderr.contains("not-the-password"), "{}", run.stderr);
    assert!(!world.sim.is_locked());
}

#[tokio::test]
async fn unreachable_server_exits_3() {
    let world = World::new().await;
    world.edit_config(world.sim.url().as_str(), &unreachable_url());
    world.run(&["backup"]).await.code(3).says("could not reach");
}

#[tokio::test]
async fn no_password_and_no_terminal_names_the_variable() {
    let world = World::new().await;
    world.edit_config(&format!("password_env = \"{}\"\n", crate::support::PASSWORD_VAR), "");
    world.run(&["backup"]).await.code(2).says("BITBUCKET_DIY_BITBUCKET_PASSWORD");
    // The environment variable is enough (and a configuration file never needs the password).
    let mut command = world.command(&["backup"]);
    command.env("BITBUCKET_DIY_BITBUCKET_PASSWORD", world.sim.password());
    crate::support::run(command).await.code(0);
}

#[tokio::test]
async fn left_locked_exits_10_with_the_unlock_command() {
    // Someone takes the lock over while our backup waits for the drain: our token goes stale, the
    // unlock is refused and Bitbucket is still in maintenance mode, so a human must act.
    let world = World::with_simulator(SimulatorConfig::default().with_drain_delay(Duration::from_secs(30))).await;
    let backup = world.command(&["backup"]);
    let running = tokio::spawn(crate::support::run(backup));
    let ours = wait_for(|| world.sim.snapshot().unlock_token).await;
    let client = world.client();
    client.unlock(&UnlockToken::new(ours.clone())).await.unwrap();
    let theirs = client.lock().await.unwrap().into_token();

    let run = running.await.unwrap();
    run.code(10).says("BITBUCKET IS STILL LOCKED");
    run.says(&format!("BITBUCKET_DIY_UNLOCK_TOKEN={ours} bitbucket-diy unlock --url"));
    assert!(world.sim.is_locked());

    let mut unlock = world.command(&["unlock"]);
    unlock.env("BITBUCKET_DIY_UNLOCK_TOKEN", theirs.expose_secret());
    crate::support::run(unlock).await.code(0).says("unlocked");
    assert!(!world.sim.is_locked());
    assert!(world.sim.events().iter().any(|e| matches!(e.kind, SimEventKind::Unlocked)));
}

/// Poll `probe` every 20 ms until it gives a value (at most 10 s).
pub async fn wait_for<T>(probe: impl Fn() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(value) = probe() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting after 10 s");
}

#[tokio::test]
async fn a_hook_can_run_bitbucket_diy_again() {
    // Hooks get BITBUCKET_DIY_BACKUP_ID, which looks like an override of `[backup] id`: it must
    // not break the configuration of a `bitbucket-diy` the hook runs.
    let world = World::new().await;
    let out = world.dir.path().join("hook.out");
    let hook = format!(
        "{} --config {} verify --latest > {} 2>&1",
        crate::support::binary().display(),
        world.config.display(),
        out.display()
    );
    world.edit_config("poll_interval", &format!("hooks.after_archive = [{}]\npoll_interval", toml_string(&hook)));
    world.run(&["backup"]).await.code(0);
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(printed.contains("verified"), "{printed}");
    world.run(&["list"]).await.code(0).says("yes,");
}

#[tokio::test]
async fn hooks_never_see_our_secret_variables() {
    // The password given through BITBUCKET_DIY_BITBUCKET_PASSWORD overrides the file's
    // password_env, and must not reach the user's hook.
    let world = World::new().await;
    let out = world.dir.path().join("hook-env.out");
    let hook = format!("env > {}", out.display());
    world.edit_config("poll_interval", &format!("hooks.after_archive = [{}]\npoll_interval", toml_string(&hook)));
    let mut command = world.command(&["backup"]);
    command.env_remove(crate::support::PASSWORD_VAR).env("BITBUCKET_DIY_BITBUCKET_PASSWORD", world.sim.password());
    crate::support::run(command).await.code(0);
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(env.contains("BITBUCKET_DIY_HOOK=after_archive"), "{env}");
    assert!(!env.contains("BITBUCKET_DIY_BITBUCKET_PASSWORD"), "{env}");
    assert!(!env.contains(world.sim.password()), "the hook saw the password:\n{env}");
}

fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
