//! The orchestrator end to end against the simulator, with a real home of real git repositories,
//! the native copy and the tar+zstd archive; faults injected in the server and in the steps.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bitbucket_diy_core::client::ClientError;
use bitbucket_diy_core::config::HooksConfig;
use bitbucket_diy_core::events::{Event, Phase, RecordedEvents};
use bitbucket_diy_core::orchestrator::{Hooks, RestoreRequest};
use bitbucket_diy_core::simulator::{Fault, SimEventKind};
use bitbucket_diy_core::strategy::StrategyError;
use bitbucket_diy_core::{Error, ErrorKind};
use support::{Bench, StepFault};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn backup_then_restore_round_trips_a_real_home() {
    let bench = Bench::new().await;
    let events = RecordedEvents::new();
    let orchestrator = bench.orchestrator().events(Arc::new(events.clone())).build().unwrap();

    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();

    assert!(report.archive.is_file(), "{}", report.archive.display());
    assert!(report.archive.file_name().unwrap().to_string_lossy().ends_with(".tar.zst"));
    assert!(!bench.sim.is_locked());
    let window = report.lock_window.expect("a locked backup has a lock window");
    let sim_window = bench.sim.lock_window().expect("simulator saw lock and unlock");
    assert!(window >= sim_window, "ours {window:?} must include the server's {sim_window:?}");
    let progress: Vec<u8> = bench
        .sim
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            SimEventKind::ProgressReported { percentage } => Some(percentage),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![50, 100]);
    let phases: Vec<Phase> = report.phases.iter().map(|p| p.phase).collect();
    for phase in
        [Phase::PrepareFilesystem, Phase::Lock, Phase::Drain, Phase::BackupFilesystem, Phase::Unlock, Phase::Archive]
    {
        assert!(phases.contains(&phase), "{phase} missing from {phases:?}");
    }
    assert!(events.events().iter().any(|e| matches!(e, Event::Unlocked { .. })));

    let restored = bench.dir.path().join("restored-home");
    let restore = orchestrator
        .restore(&RestoreRequest::new(report.id.as_str(), &restored, None), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(restore.id, report.id);
    support::assert_home_restored(&bench.home, &restored);
    assert!(
        restore.git_locks_removed.iter().any(|p| p.ends_with("HEAD.lock")),
        "stale locks of the sample home are cleaned: {:?}",
        restore.git_locks_removed
    );
}

#[tokio::test]
async fn archives_are_listed_newest_first_and_pruned() {
    let bench = Bench::new().await;
    let orchestrator = bench.orchestrator().with_options(|o| o.keep = 2).build().unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(orchestrator.backup(CancellationToken::new()).await.unwrap().id);
    }
    let listed: Vec<_> = orchestrator.list_backups().await.unwrap().into_iter().map(|a| a.metadata.id).collect();
    assert_eq!(
        listed,
        vec![ids[2].clone(), ids[1].clone()],
        "two runs within one second get -2 suffixes, newest first"
    );
}

#[tokio::test]
async fn lock_refused_leaves_no_archive_and_no_lock_of_ours() {
    let bench = Bench::new().await;
    bench.sim.add_fault(Fault::LockedBy { owner: "Jane Admin".into() });
    let orchestrator = bench.orchestrator().build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyLocked, "{err}");
    assert!(err.to_string().contains("Jane Admin"), "{err}");
    bench.assert_no_archive(&orchestrator).await;
}

#[tokio::test]
async fn never_draining_times_out_cancels_the_task_and_unlocks() {
    let bench = Bench::new().await;
    bench.sim.add_fault(Fault::NeverDrain);
    let orchestrator =
        bench.orchestrator().with_options(|o| o.drain.timeout = Duration::from_millis(600)).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Client(ClientError::DrainTimeout { .. })), "{err}");
    bench.assert_unlocked_and_task_ended();
    bench.assert_no_archive(&orchestrator).await;
}

#[tokio::test]
async fn only_one_state_draining_is_not_enough() {
    let bench = Bench::new().await;
    bench.sim.add_fault(Fault::OnlyDatabaseDrains);
    let orchestrator =
        bench.orchestrator().with_options(|o| o.drain.timeout = Duration::from_millis(600)).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    bench.assert_unlocked_and_task_ended();
}

#[tokio::test]
async fn a_failing_database_step_stops_the_copy_and_unlocks() {
    let bench = Bench::new().await;
    let orchestrator =
        bench.orchestrator().database(support::FaultyDatabase::new(StepFault::FailBackup)).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Database(StrategyError::Custom { .. })), "{err}");
    bench.assert_unlocked_and_task_ended();
    bench.assert_no_archive(&orchestrator).await;
}

#[tokio::test]
async fn a_failing_filesystem_step_unlocks() {
    let bench = Bench::new().await;
    let orchestrator = bench
        .orchestrator()
        .filesystem(support::FaultyFilesystem::new(bench.native(), StepFault::FailBackup))
        .build()
        .unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Strategy, "{err}");
    bench.assert_unlocked_and_task_ended();
    bench.assert_no_archive(&orchestrator).await;
}

#[tokio::test]
async fn a_failing_prepare_never_locks() {
    let bench = Bench::new().await;
    let orchestrator = bench
        .orchestrator()
        .filesystem(support::FaultyFilesystem::new(bench.native(), StepFault::FailPrepare))
        .build()
        .unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Strategy, "{err}");
    assert!(!bench.sim.events().iter().any(|e| matches!(e.kind, SimEventKind::Locked { .. })));
}

#[tokio::test]
async fn cancellation_mid_copy_stops_the_step_then_unlocks() {
    let bench = Bench::new().await;
    let (faulty, started) = support::FaultyFilesystem::blocking(bench.native());
    let orchestrator = bench.orchestrator().filesystem(faulty).build().unwrap();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { orchestrator.backup(cancel).await }
    });
    started.notified().await;
    assert!(bench.sim.is_locked(), "the copy runs while locked");
    cancel.cancel();
    let err = run.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled { during: Some(Phase::BackupFilesystem) }), "{err}");
    bench.assert_unlocked_and_task_ended();
}

#[tokio::test]
async fn unlock_failure_is_loud_and_names_the_command() {
    let bench = Bench::new().await;
    bench.sim.add_fault(Fault::RejectUnlock { times: 100 });
    let orchestrator = bench
        .orchestrator()
        .with_options(|o| {
            o.unlock_attempts = 3;
            o.unlock_retry_delay = Duration::from_millis(10);
        })
        .build()
        .unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeftLocked, "{err}");
    let text = err.to_string();
    assert!(text.contains("STILL LOCKED") && text.contains("bitbucket-diy unlock"), "{text}");
    assert!(bench.sim.is_locked());
    let token = bench.sim.snapshot().unlock_token.expect("the simulator knows the token");
    assert!(text.contains(&token), "the message must carry the token to unlock by hand");
    assert!(!format!("{err:?}").contains(&token), "Debug never shows it");
}

#[tokio::test]
async fn a_lost_progress_report_does_not_fail_a_complete_backup() {
    let bench = Bench::new().await;
    bench.sim.add_fault(Fault::ServerError { endpoint: bitbucket_diy_core::simulator::Endpoint::Progress, times: 100 });
    let orchestrator = bench.orchestrator().build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("progress")), "{:?}", report.warnings);
    assert!(!bench.sim.is_locked());
}

#[tokio::test]
async fn archive_failure_happens_unlocked_and_leaves_no_final_archive() {
    let bench = Bench::new().await;
    let blocked = bench.dir.path().join("archives-is-a-file");
    std::fs::write(&blocked, "not a folder").unwrap();
    let orchestrator = bench
        .orchestrator()
        .archive(bitbucket_diy_core::strategy::archive::TarZstdArchive::new(blocked.clone(), 3, 0))
        .build()
        .unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Io | ErrorKind::Archive), "{err}");
    assert!(!bench.sim.is_locked());
    assert_eq!(std::fs::read_to_string(&blocked).unwrap(), "not a folder");
}

#[tokio::test]
async fn zero_downtime_is_refused_without_atomic_snapshots() {
    let bench = Bench::new().await;
    let orchestrator = bench.orchestrator().with_options(|o| o.zero_downtime = true).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::ZeroDowntimeRefused { .. }), "{err}");
    assert!(err.to_string().contains("native"), "{err}");
    assert!(bench.sim.events().iter().all(|e| !matches!(e.kind, SimEventKind::Locked { .. })));
}

#[tokio::test]
async fn zero_downtime_with_snapshots_never_locks() {
    let bench = Bench::new().await;
    let snapshot = support::FaultyFilesystem::atomic(bench.native());
    let orchestrator =
        bench.orchestrator().filesystem(snapshot).with_options(|o| o.zero_downtime = true).build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    assert!(report.zero_downtime && report.lock_window.is_none());
    assert!(bench.sim.events().iter().all(|e| !matches!(e.kind, SimEventKind::Locked { .. })));
    assert!(report.archive.is_file());
}

#[tokio::test]
async fn overlapping_runs_are_refused() {
    let bench = Bench::new().await;
    let (faulty, started) = support::FaultyFilesystem::blocking(bench.native());
    let first = Arc::new(bench.orchestrator().filesystem(faulty).build().unwrap());
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (first, cancel) = (first.clone(), cancel.clone());
        async move { first.backup(cancel).await }
    });
    started.notified().await;
    let second = bench.orchestrator().build().unwrap();
    let err = second.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(err.to_string().contains(&std::process::id().to_string()), "names the holder: {err}");
    cancel.cancel();
    let _ = run.await.unwrap();
    assert!(!bench.sim.is_locked());
}

#[tokio::test]
async fn failing_before_lock_hook_aborts_before_locking_and_failure_hooks_run() {
    let bench = Bench::new().await;
    let marker = bench.dir.path().join("on-failure-ran");
    let hooks = Hooks::new(HooksConfig {
        before_lock: vec!["exit 9".into()],
        on_failure: vec![format!("echo \"$BITBUCKET_DIY_ERROR_KIND\" > {}", marker.display())],
        ..HooksConfig::default()
    });
    let orchestrator = bench.orchestrator().hooks(hooks).build().unwrap();
    let err = orchestrator.backup(CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Hook, "{err}");
    assert!(bench.sim.events().iter().all(|e| !matches!(e.kind, SimEventKind::Locked { .. })));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "hook");
}

#[tokio::test]
async fn restore_refuses_a_non_empty_home_and_a_foreign_database_strategy() {
    let bench = Bench::new().await;
    let orchestrator = bench.orchestrator().build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();

    let occupied = bench.dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join(".keep"), "").unwrap();
    let err = orchestrator
        .restore(&RestoreRequest::new(report.id.as_str(), &occupied, None), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RestoreTarget, "{err}");
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1, "nothing written");

    let other = bench.orchestrator().database(support::FaultyDatabase::new(StepFault::None)).build().unwrap();
    let err = other
        .restore(
            &RestoreRequest::new(report.id.as_str(), bench.dir.path().join("new"), Some("x".into())),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`none` database strategy"), "{err}");
}

#[tokio::test]
async fn deep_verify_runs_git_fsck_on_every_repository() {
    let bench = Bench::new().await;
    let orchestrator = bench.orchestrator().build().unwrap();
    let report = orchestrator.backup(CancellationToken::new()).await.unwrap();
    let verified = orchestrator.verify(report.id.as_str(), true, CancellationToken::new()).await.unwrap();
    assert_eq!(verified.repositories, support::repository_count(&bench.home));
    assert!(verified.verify.entries > 0);
}
