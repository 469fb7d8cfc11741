//! `simulate`: a standalone simulator that answers like Bitbucket until Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use bitbucket_diy_core::MaintenanceClient;
use rustix::process::{Pid, Signal, kill_process};

use crate::support::{command, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_prints_its_url_answers_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(
        dir.path(),
        &["simulate", "--listen", "127.0.0.1:0", "--context-path", "/bb", "--user", "root", "--password", "pw"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::task::block_in_place(|| stdout.read_line(&mut first)).unwrap();
    let url = first.strip_prefix("url").map(str::trim).unwrap_or_else(|| panic!("first line: {first:?}")).to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/bb"), "{url}");

    let client = MaintenanceClient::builder(url.as_str()).credentials("root", "pw").build().unwrap();
    assert!(client.status().await.unwrap().is_running());
    let lock = client.lock().await.unwrap();
    assert!(!client.status().await.unwrap().is_running(), "locked: MAINTENANCE");
    lock.release().await.map_err(|(_, e)| e).unwrap();

    kill_process(Pid::from_child(&child), Signal::INT).unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("POST /bb/mvc/maintenance/lock → 202"), "requests are logged: {stderr}");
}

#[tokio::test]
async fn simulate_refuses_an_unknown_fault() {
    let dir = tempfile::tempdir().unwrap();
    run(command(dir.path(), &["simulate", "--fault", "never-drains"])).await.code(2).says("unknown fault");
}
