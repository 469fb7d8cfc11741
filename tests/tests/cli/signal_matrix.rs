//! The fault matrix's signal cells (docs/reliability.md): SIGINT and SIGTERM sent to the real
//! binary during prepare, the drain wait, the final copy and the archive. Each cell checks the
//! matrix's four promises: Bitbucket unlocked (or never locked), the server-side task cancelled
//! where one started, nothing under a final archive name, a non-zero exit naming the cause.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use bitbucket_diy_core::simulator::{SimEventKind, SimulatorConfig};
use rustix::process::{Pid, Signal, kill_process};

use crate::support::World;

/// Where a cell interrupts the run, and how the run is made to linger there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A database `prepare` command that sleeps, before anything is locked.
    Prepare,
    /// A drain that takes 30 s.
    Drain,
    /// A database `backup` command that sleeps while Bitbucket is drained.
    FinalCopy,
    /// gzip -9 of 48 MB of random data, after the unlock.
    Archive,
}

impl Stage {
    /// The `phase-started` event after which the signal is sent.
    fn phase(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare-database",
            Stage::Drain => "drain",
            Stage::FinalCopy => "backup-database",
            Stage::Archive => "archive",
        }
    }

    async fn world(self) -> World {
        let drain = if self == Stage::Drain { Duration::from_secs(30) } else { Duration::from_millis(20) };
        let world = World::with_simulator(SimulatorConfig::default().with_drain_delay(drain)).await;
        let (prepare, backup) = match self {
            Stage::Prepare => ("sleep 60", "true"),
            Stage::FinalCopy => ("true", "sleep 60"),
            _ => ("true", "true"),
        };
        world.write_config(
            &format!(
                "[database]\ntype = \"command\"\nprepare = \"{prepare}\"\nbackup = \"{backup}\"\nrestore = \"true\"\n"
            ),
            "",
        );
        if self == Stage::Archive {
            world.edit_config("[archive]\n", "[archive]\ntype = \"tar-gz\"\nlevel = 9\n");
            let noise: Vec<u8> = (0u64..48 << 20).map(|i| (i.wrapping_mul(6364136223846793005) >> 56) as u8).collect();
            std::fs::write(world.home.join("shared/data/attachments/large.bin"), noise).unwrap();
        }
        world
    }
}

/// Run a backup, send `signal` once `stage` started, and return (exit code, stderr).
async fn interrupt(world: &World, stage: Stage, signal: Signal) -> (Option<i32>, String) {
    let mut child =
        world.command(&["--progress", "json", "backup"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = Pid::from_child(&child);
    let stderr = child.stderr.take().unwrap();
    let wanted = format!("\"phase\":\"{}\"", stage.phase());
    let collected = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if !sent && line.contains("\"event\":\"phase-started\"") && line.contains(&wanted) {
                // Give the step a moment to start its child process or its stream.
                std::thread::sleep(Duration::from_millis(150));
                kill_process(pid, signal).unwrap();
                sent = true;
            }
            lines.push(line);
        }
        (sent, lines.join("\n"))
    });
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let (sent, stderr) = collected.await.unwrap();
    assert!(sent, "the run never reached {stage:?}:\n{stderr}");
    (status.code(), stderr)
}

async fn cell(stage: Stage, signal: Signal) {
    let world = stage.world().await;
    let (code, stderr) = interrupt(&world, stage, signal).await;
    let cell = format!("{signal:?} during {stage:?}");

    assert_eq!(code, Some(130), "{cell}: exit code\n{stderr}");
    assert!(stderr.contains("cancelled"), "{cell}: the message names the cause\n{stderr}");
    assert!(!world.sim.is_locked(), "{cell}: Bitbucket must be unlocked");
    let events = world.sim.events();
    let locked = events.iter().any(|e| matches!(e.kind, SimEventKind::Locked { .. }));
    let unlocked = events.iter().any(|e| matches!(e.kind, SimEventKind::Unlocked));
    let started = events.iter().any(|e| matches!(e.kind, SimEventKind::BackupStarted));
    match stage {
        Stage::Prepare => assert!(!locked, "{cell}: interrupted before the lock, so never locked"),
        _ => assert!(locked && unlocked, "{cell}: locked, then unlocked: {events:?}"),
    }
    if matches!(stage, Stage::Drain | Stage::FinalCopy) {
        assert!(started);
        assert_ne!(world.sim.snapshot().task_state.as_deref(), Some("RUNNING"), "{cell}: task cancelled");
    }
    let finals: Vec<String> = std::fs::read_dir(&world.archives)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(finals.iter().all(|name| name.starts_with('.')), "{cell}: nothing under a final name: {finals:?}");
    assert!(finals.is_empty(), "{cell}: temporary files are removed too: {finals:?}");
}

#[tokio::test]
async fn sigint_during_prepare() {
    cell(Stage::Prepare, Signal::INT).await;
}

#[tokio::test]
async fn sigterm_during_prepare() {
    cell(Stage::Prepare, Signal::TERM).await;
}

#[tokio::test]
async fn sigint_during_drain_wait() {
    cell(Stage::Drain, Signal::INT).await;
}

#[tokio::test]
async fn sigterm_during_drain_wait() {
    cell(Stage::Drain, Signal::TERM).await;
}

#[tokio::test]
async fn sigint_during_final_copy() {
    cell(Stage::FinalCopy, Signal::INT).await;
}

#[tokio::test]
async fn sigterm_during_final_copy() {
    cell(Stage::FinalCopy, Signal::TERM).await;
}

#[tokio::test]
async fn sigint_during_archive() {
    cell(Stage::Archive, Signal::INT).await;
}

#[tokio::test]
async fn sigterm_during_archive() {
    cell(Stage::Archive, Signal::TERM).await;
}
