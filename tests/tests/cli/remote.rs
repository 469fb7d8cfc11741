//! `status`, `unlock` and `cancel`, with and without a configuration file, tokens from the
//! environment, a file or stdin.

use bitbucket_diy_core::client::UnlockToken;

use crate::support::{World, command, run, run_with_stdin, unreachable_url};

/// `bitbucket-diy ARGS --url <sim> --user <admin>` with the password in the environment, no
/// configuration file.
fn remote(world: &World, args: &[&str]) -> std::process::Command {
    let url = world.sim.url().to_string();
    let mut c = command(world.dir.path(), args);
    c.args(["--url", &url, "--user", world.sim.user()]).env("BITBUCKET_DIY_BITBUCKET_PASSWORD", world.sim.password());
    c
}

#[tokio::test]
async fn status_shows_the_state_without_credentials_and_the_task_with_a_token() {
    let world = World::new().await;
    let url = world.sim.url().to_string();
    let out = run(command(world.dir.path(), &["status", "--url", &url])).await;
    out.code(0).says("RUNNING").says("8.19.0");
    assert!(out.stdout.contains("locked") && out.stdout.contains("no"), "{}", out.stdout);

    let lock = world.client().lock().await.unwrap();
    let json = run(command(world.dir.path(), &["--json", "status", "--url", &url])).await;
    json.code(0);
    assert_eq!(json.json()["locked"], true);
    assert_eq!(json.json()["state"], "MAINTENANCE");

    let mut with_token = remote(&world, &["status"]);
    with_token.env("BITBUCKET_DIY_UNLOCK_TOKEN", lock.token().expose_secret());
    run(with_token).await.code(0).says("db-state").says("AVAILABLE");
    lock.release().await.map_err(|(_, e)| e).unwrap();

    // From the configuration file, too.
    world.run(&["status"]).await.code(0).says("RUNNING");
    run(command(world.dir.path(), &["status", "--url", &unreachable_url()])).await.code(3).says("could not reach");
}

#[tokio::test]
async fn unlock_with_the_token_from_the_environment() {
    let world = World::new().await;
    let token = world.client().lock().await.unwrap().into_token();
    let mut unlock = remote(&world, &["unlock"]);
    unlock.env("BITBUCKET_DIY_UNLOCK_TOKEN", token.expose_secret());
    let out = run(unlock).await;
    out.code(0).says("unlocked").says("RUNNING");
    assert!(!out.stdout.contains(token.expose_secret()) && !out.stderr.contains(token.expose_secret()));
    assert!(!world.sim.is_locked());
}

#[tokio::test]
async fn unlock_with_the_token_from_a_file_or_stdin() {
    let world = World::new().await;
    let token = world.client().lock().await.unwrap().into_token();
    let file = world.dir.path().join("token");
    std::fs::write(&file, format!("{}\n", token.expose_secret())).unwrap();
    world.run(&["unlock", "--token-file", file.to_str().unwrap()]).await.code(0);
    assert!(!world.sim.is_locked());

    let token = world.client().lock().await.unwrap().into_token();
    run_with_stdin(world.command(&["unlock", "--token", "-"]), &format!("{}\n", token.expose_secret())).await.code(0);
    assert!(!world.sim.is_locked());
}

#[tokio::test]
async fn unlock_refuses_a_wrong_or_missing_token() {
    let world = World::new().await;
    let lock = world.client().lock().await.unwrap();
    let mut wrong = remote(&world, &["unlock"]);
    wrong.env("BITBUCKET_DIY_UNLOCK_TOKEN", "0000000000000000000000000000000000000000");
    run(wrong).await.code(3).says("rejected the token");
    run(remote(&world, &["unlock"])).await.code(2).says("BITBUCKET_DIY_UNLOCK_TOKEN");
    assert!(world.sim.is_locked());
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn unlock_with_a_wrong_password_exits_3() {
    let world = World::new().await;
    let token = world.client().lock().await.unwrap().into_token();
    let mut unlock = remote(&world, &["unlock"]);
    unlock.env("BITBUCKET_DIY_UNLOCK_TOKEN", token.expose_secret()).env("BITBUCKET_DIY_BITBUCKET_PASSWORD", "nope");
    run(unlock).await.code(3).says("rejected the credentials");
    assert!(world.sim.is_locked());
    world.client().unlock(&UnlockToken::new(token.expose_secret())).await.unwrap();
}

#[tokio::test]
async fn cancel_ends_the_task_and_keeps_the_lock() {
    let world = World::new().await;
    let client = world.client();
    let lock = client.lock().await.unwrap();
    let task = client.start_backup(lock.token()).await.unwrap();
    let mut cancel = remote(&world, &["cancel"]);
    cancel.env("BITBUCKET_DIY_CANCEL_TOKEN", task.cancel_token.expose_secret());
    run(cancel).await.code(0).says("cancelled").says("unlock");
    let state = world.sim.snapshot();
    assert_eq!(state.task_state.as_deref(), Some("CANCELED"), "{state:?}");
    assert!(state.locked);
    lock.release().await.map_err(|(_, e)| e).unwrap();
}
