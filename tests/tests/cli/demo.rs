//! `demo`: the README's first command.

use crate::support::{command, run};

#[tokio::test]
async fn demo_runs_end_to_end_and_reports_the_lock_window() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = run(command(dir.path(), &["demo", "--dir", demo_dir.to_str().unwrap()])).await;
    out.code(0).says("lock window").says("identical to the original").says("DELETE /bitbucket/mvc/maintenance/lock");
    assert!(out.stderr.contains("[6/6]"), "steps are logged: {}", out.stderr);
    let archives: Vec<_> = std::fs::read_dir(demo_dir.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert!(demo_dir.join("restored-home/shared/data/repositories").is_dir());

    // The configuration the demo wrote works with the other commands.
    let config = demo_dir.join("bitbucket-diy.toml");
    run(command(dir.path(), &["--config", config.to_str().unwrap(), "list"])).await.code(0).says("deep,");

    // A folder in use is refused, untouched.
    run(command(dir.path(), &["demo", "--dir", demo_dir.to_str().unwrap()])).await.code(2).says("not empty");
}
