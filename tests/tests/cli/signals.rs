//! Ctrl-C and SIGTERM during a backup: the copy stops, Bitbucket is unlocked, exit 130.

use std::process::Stdio;
use std::time::Duration;

use bitbucket_diy_core::simulator::{Endpoint, Fault, SimEventKind, SimulatorConfig};
use rustix::process::{Pid, Signal, kill_process};

use crate::backup::wait_for;
use crate::support::World;

/// A backup that waits for a drain that takes 30 s; `signals` are sent once it is locked, 300 ms
/// apart. Returns the exit code and stderr.
async fn interrupted_backup(world: &World, signals: &[Signal]) -> (Option<i32>, String) {
    let child = world.command(&["backup"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(|| world.sim.is_locked().then_some(())).await;
    // Locked: now the drain wait is in progress.
    for signal in signals {
        kill_process(Pid::from_child(&child), *signal).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn slow_drain() -> SimulatorConfig {
    SimulatorConfig::default().with_drain_delay(Duration::from_secs(30))
}

#[tokio::test]
async fn ctrl_c_during_a_backup_unlocks_and_exits_130() {
    let world = World::with_simulator(slow_drain()).await;
    let (code, stderr) = interrupted_backup(&world, &[Signal::INT]).await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("Cancelling: stopping the copy and unlocking Bitbucket"), "{stderr}");
    assert!(stderr.contains("Bitbucket was unlocked"), "{stderr}");
    assert!(!world.sim.is_locked());
    let events = world.sim.events();
    assert!(events.iter().any(|e| matches!(e.kind, SimEventKind::Unlocked)), "{events:?}");
    assert!(events.iter().any(|e| matches!(e.kind, SimEventKind::BackupCancelled)), "the server task is cancelled");
    assert!(world.listed_ids().await.is_empty(), "no backup is written");
}

#[tokio::test]
async fn a_second_signal_while_unlocking_does_not_exit_early() {
    // The unlock takes a second: the second signal arrives while it is in flight.
    let world = World::with_simulator(
        slow_drain().with_fault(Fault::Slow { endpoint: Some(Endpoint::Unlock), delay: Duration::from_secs(1) }),
    )
    .await;
    let (code, stderr) = interrupted_backup(&world, &[Signal::TERM, Signal::INT]).await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("Still unlocking Bitbucket"), "{stderr}");
    assert!(!world.sim.is_locked(), "unlocked before exiting");
}
