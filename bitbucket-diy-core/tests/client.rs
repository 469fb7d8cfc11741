//! The maintenance client against the simulator: every call, every error kind.
// clippy's allow-unwrap-in-tests does not reach helpers outside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::error::Error as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bitbucket_diy_core::client::{
    CancelToken, ClientError, DrainState, MaintenanceClient, MaintenanceState, TaskState, UnlockToken,
};
use bitbucket_diy_core::simulator::{Endpoint, Fault, SimEventKind};
use tokio_util::sync::CancellationToken;

use common::{client_for, count_requests, drain_options, eventually, fast_builder, fast_config, requests, start};

const WRONG_TOKEN: &str = "0000000000000000000000000000000000000000";

#[tokio::test]
async fn application_properties_reads_the_version() {
    let sim = start(fast_config().with_version("8.9.0")).await;
    let props = client_for(&sim).application_properties().await.unwrap();
    assert_eq!(props.version, "8.9.0");
    assert_eq!(props.display_name.as_deref(), Some("Bitbucket"));
    assert_eq!(props.build_number.as_deref(), Some("8009000"));
}

#[tokio::test]
async fn status_says_maintenance_while_locked() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    assert!(client.status().await.unwrap().is_running());
    let lock = client.lock().await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.state.as_str(), "MAINTENANCE");
    assert!(!status.is_running());
    lock.release().await.map_err(|(_, e)| e).unwrap();
    assert!(client.status().await.unwrap().is_running());
}

#[tokio::test]
async fn full_backup_cycle_unlocks_after_progress_100() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    assert_eq!(lock.owner().name, "admin");
    assert_eq!(lock.token().expose_secret().len(), 40);
    let task = client.start_backup(lock.token()).await.unwrap();
    assert_eq!(task.cancel_token.expose_secret().len(), 40);
    assert!(task.id.is_some());
    let polls = Mutex::new(Vec::<MaintenanceState>::new());
    let drained = client
        .wait_drained(lock.token(), &drain_options(Duration::from_secs(5)), &CancellationToken::new(), |s| {
            polls.lock().unwrap().push(s.clone())
        })
        .await
        .unwrap();
    assert!(!drained.is_zero_downtime());
    let polls = polls.into_inner().unwrap();
    assert!(polls.last().unwrap().is_drained());
    assert!(polls.iter().all(|s| s.task_state() == TaskState::Running));

    for _ in 0..3 {
        client.report_progress(lock.token(), 50).await.unwrap();
    }
    client.report_progress(lock.token(), 100).await.unwrap();
    let after = client.maintenance_state(lock.token()).await.unwrap();
    assert_eq!(after.task_state(), TaskState::Successful);
    assert_eq!((after.db_state, after.scm_state), (DrainState::Available, DrainState::Available));
    lock.release().await.map_err(|(_, e)| e).unwrap();

    let state = sim.snapshot();
    assert!(!state.locked);
    assert_eq!(state.task_state.as_deref(), Some("SUCCESSFUL"));
    assert_eq!(state.progress, vec![50, 50, 50, 100]);
    let milestones: Vec<SimEventKind> = sim
        .events()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| {
            matches!(
                k,
                SimEventKind::Locked { .. }
                    | SimEventKind::BackupStarted
                    | SimEventKind::Drained
                    | SimEventKind::Unlocked
            )
        })
        .collect();
    assert_eq!(
        milestones,
        vec![
            SimEventKind::Locked { owner: "admin".into() },
            SimEventKind::BackupStarted,
            SimEventKind::Drained,
            SimEventKind::Unlocked
        ]
    );
}

#[tokio::test]
async fn context_path_is_kept_with_or_without_trailing_slash() {
    let sim = start(fast_config().with_context_path("/bitbucket")).await;
    let base = sim.url().to_string();
    for url in [base.trim_end_matches('/').to_owned(), format!("{}/", base.trim_end_matches('/'))] {
        let client = fast_builder(url).credentials(sim.user(), sim.password()).build().unwrap();
        client.application_properties().await.unwrap();
        let lock = client.lock().await.unwrap();
        assert!(
            client.unlock_command(lock.token()).expose().contains("/bitbucket/mvc/maintenance/lock?token="),
            "the manual unlock command keeps the context path"
        );
        lock.release().await.map_err(|(_, e)| e).unwrap();
    }
    let seen = requests(&sim);
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|(_, path, status)| path.starts_with("/bitbucket/") && *status < 300), "{seen:?}");
}

#[tokio::test]
async fn wrong_context_path_is_not_found() {
    let sim = start(fast_config().with_context_path("/bitbucket")).await;
    let root = format!("http://{}:{}/", sim.url().host_str().unwrap(), sim.url().port().unwrap());
    let client = fast_builder(root).credentials(sim.user(), sim.password()).build().unwrap();
    let err = client.application_properties().await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound { .. }), "{err:?}");
    let err = client.lock().await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("context path"), "{err}");
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let sim = start(fast_config().with_fault(Fault::ServerError { endpoint: Endpoint::Status, times: 2 })).await;
    assert!(client_for(&sim).status().await.unwrap().is_running());
    assert_eq!(count_requests(&sim, "GET", "/status"), 3);
}

#[tokio::test]
async fn nth_request_failing_is_retried() {
    let sim = start(fast_config().with_fault(Fault::ServerErrorOnRequest(1))).await;
    client_for(&sim).application_properties().await.unwrap();
    let statuses: Vec<u16> = requests(&sim).into_iter().map(|r| r.2).collect();
    assert_eq!(statuses, vec![500, 200]);
}

#[tokio::test]
async fn server_errors_exhausting_retries_are_server_errors() {
    let sim = start(fast_config().with_fault(Fault::ServerError { endpoint: Endpoint::Status, times: 10 })).await;
    let err = client_for(&sim).status().await.unwrap_err();
    match &err {
        ClientError::Server { status: 500, message: Some(message), .. } => {
            assert!(message.contains("unexpected error"))
        }
        other => panic!("expected Server 500 with a message, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(count_requests(&sim, "GET", "/status"), 3, "attempts from retries(3, …)");
}

#[tokio::test]
async fn lock_and_start_are_never_retried() {
    let sim = start(fast_config().with_fault(Fault::ServerError { endpoint: Endpoint::Lock, times: 1 })).await;
    let client = client_for(&sim);
    let err = client.lock().await.unwrap_err();
    assert!(matches!(err, ClientError::Server { status: 500, .. }), "{err:?}");
    assert_eq!(count_requests(&sim, "POST", "/mvc/maintenance/lock"), 1);
    assert!(!sim.is_locked());

    let lock = client.lock().await.unwrap();
    sim.add_fault(Fault::ServerError { endpoint: Endpoint::StartBackup, times: 1 });
    let err = client.start_backup(lock.token()).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { status: 500, .. }), "{err:?}");
    assert_eq!(count_requests(&sim, "POST", "/mvc/admin/backups"), 1);
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error() {
    let sim = start(fast_config().with_fault(Fault::DropConnection { endpoint: Endpoint::Lock, times: 1 })).await;
    let err = client_for(&sim).lock().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!sim.is_locked(), "the dropped request was never processed");
}

#[tokio::test]
async fn dropped_connection_on_a_read_is_retried() {
    let sim = start(fast_config().with_fault(Fault::DropConnection { endpoint: Endpoint::Status, times: 2 })).await;
    assert!(client_for(&sim).status().await.unwrap().is_running());
    let dropped = sim.events().iter().filter(|e| matches!(e.kind, SimEventKind::ConnectionDropped { .. })).count();
    assert_eq!(dropped, 2);
}

#[tokio::test]
async fn lost_lock_answer_leaves_the_instance_locked_and_is_not_retried() {
    let sim = start(fast_config().with_fault(Fault::AnswerLost { endpoint: Endpoint::Lock, times: 1 })).await;
    let err = client_for(&sim).lock().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(sim.is_locked(), "Bitbucket processed the lock");
    assert_eq!(sim.snapshot().request_count, 1, "a retry would have been refused as already locked");
}

#[tokio::test]
async fn network_failure_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let client = fast_builder(url).retries(2, Duration::from_millis(1)).build().unwrap();
    let err = client.status().await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert!(err.source().is_some(), "reqwest's error is kept as the source");
}

#[tokio::test]
async fn slow_answer_beyond_the_request_timeout_is_a_timeout() {
    let sim = start(
        fast_config().with_fault(Fault::Slow { endpoint: Some(Endpoint::Status), delay: Duration::from_secs(3) }),
    )
    .await;
    let client = fast_builder(sim.url().as_str())
        .request_timeout(Duration::from_millis(150))
        .retries(2, Duration::from_millis(1))
        .build()
        .unwrap();
    let err = client.status().await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { after, .. } if after == Duration::from_millis(150)), "{err:?}");
    assert_eq!(sim.snapshot().request_count, 2, "a timeout is retried");
    sim.shutdown().await;
}

#[tokio::test]
async fn html_instead_of_json_is_not_found() {
    let sim = start(fast_config().with_fault(Fault::HtmlInsteadOfJson { endpoint: Some(Endpoint::Lock) })).await;
    let err = client_for(&sim).lock().await.unwrap_err();
    match &err {
        ClientError::NotFound { detail, .. } => assert!(detail.contains("HTML"), "{detail}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn html_login_page_on_unlock_is_not_a_success() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let token = client.lock().await.unwrap().into_token();
    sim.add_fault(Fault::HtmlInsteadOfJson { endpoint: Some(Endpoint::Unlock) });
    let err = client.unlock(&token).await.unwrap_err();
    assert!(matches!(err, ClientError::NotFound { .. }), "{err:?}");
    assert!(sim.is_locked());
    sim.clear_faults();
    client.unlock(&token).await.unwrap();
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn malformed_json_is_an_invalid_response() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    sim.add_fault(Fault::MalformedJson { endpoint: Endpoint::MaintenanceState });
    let err = client.maintenance_state(lock.token()).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidResponse { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(count_requests(&sim, "GET", "/mvc/maintenance"), 1, "not retried");
    sim.clear_faults();
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn malformed_lock_answer_is_an_invalid_response() {
    let sim = start(fast_config().with_fault(Fault::MalformedJson { endpoint: Endpoint::Lock })).await;
    let err = client_for(&sim).lock().await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidResponse { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_password_is_unauthorized() {
    let sim = start(fast_config()).await;
    let client = fast_builder(sim.url().as_str()).credentials(sim.user(), "not-the-password").build().unwrap();
    let err = client.lock().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err:?}");
    let anonymous = fast_builder(sim.url().as_str()).build().unwrap();
    let err = anonymous.lock().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err:?}");
    assert!(!sim.is_locked());
    assert!(anonymous.status().await.is_ok(), "status needs no credentials");
}

#[tokio::test]
async fn non_admin_is_forbidden() {
    let sim = start(fast_config().with_non_admin_user("alice", "alice-pw")).await;
    let client = fast_builder(sim.url().as_str()).credentials("alice", "alice-pw").build().unwrap();
    let err = client.lock().await.unwrap_err();
    match &err {
        ClientError::Forbidden { message: Some(message), .. } => assert!(message.contains("not permitted")),
        other => panic!("expected Forbidden with Bitbucket's message, got {other:?}"),
    }
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn locked_by_someone_else_is_already_locked_with_the_owner() {
    let sim = start(fast_config().with_fault(Fault::LockedBy { owner: "carol".into() })).await;
    let client = client_for(&sim);
    let err = client.lock().await.unwrap_err();
    match &err {
        ClientError::AlreadyLocked { owner, .. } => assert_eq!(owner, "carol"),
        other => panic!("expected AlreadyLocked, got {other:?}"),
    }
    assert!(err.to_string().contains("carol"));
    assert!(!client.status().await.unwrap().is_running());
    sim.clear_faults();
    let lock = client.lock().await.unwrap();
    let err = client.lock().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::AlreadyLocked { owner, .. } if owner == "Administrator (admin)"),
        "a second lock names the first holder: {err:?}"
    );
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn wrong_tokens_are_invalid_token() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let wrong = UnlockToken::new(WRONG_TOKEN);
    let lock = client.lock().await.unwrap();
    for err in [
        client.start_backup(&wrong).await.unwrap_err(),
        client.maintenance_state(&wrong).await.unwrap_err(),
        client.report_progress(&wrong, 50).await.unwrap_err(),
        client.cancel_backup(&CancelToken::new(WRONG_TOKEN)).await.unwrap_err(),
        client.unlock(&wrong).await.unwrap_err(),
    ] {
        assert!(matches!(err, ClientError::InvalidToken { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert!(sim.is_locked(), "a wrong token unlocks nothing");
    let token = lock.into_token();
    client.unlock(&token).await.unwrap();
    let err = client.report_progress(&token, 100).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidToken { .. }), "a stale token: {err:?}");
}

#[tokio::test]
async fn task_failure_is_drain_failed() {
    let sim = start(fast_config().with_fault(Fault::TaskFails)).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    let err = client
        .wait_drained(lock.token(), &drain_options(Duration::from_secs(5)), &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::DrainFailed { task_state: TaskState::Failed, .. }), "{err:?}");
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn no_backup_task_is_drain_failed() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    let err = client
        .wait_drained(lock.token(), &drain_options(Duration::from_secs(5)), &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::DrainFailed { task_state: TaskState::None, .. }), "{err:?}");
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn never_draining_is_a_drain_timeout() {
    let sim = start(fast_config().with_fault(Fault::NeverDrain)).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    let err = client
        .wait_drained(lock.token(), &drain_options(Duration::from_millis(200)), &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    match err {
        ClientError::DrainTimeout { db_state, scm_state, .. } => {
            assert_eq!((db_state, scm_state), (DrainState::Draining, DrainState::Draining));
        }
        other => panic!("expected DrainTimeout, got {other:?}"),
    }
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn only_the_database_draining_is_a_drain_timeout() {
    let sim = start(fast_config().with_fault(Fault::OnlyDatabaseDrains)).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    let err = client
        .wait_drained(lock.token(), &drain_options(Duration::from_millis(300)), &CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    match err {
        ClientError::DrainTimeout { db_state, scm_state, .. } => {
            assert_eq!((db_state, scm_state), (DrainState::Drained, DrainState::Draining), "both fields are checked");
        }
        other => panic!("expected DrainTimeout, got {other:?}"),
    }
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn drain_waits_for_in_flight_writes() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let write = sim.begin_write().expect("writes are allowed before the lock");
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    let cancel = CancellationToken::new();
    let err = client
        .wait_drained(lock.token(), &drain_options(Duration::from_millis(300)), &cancel, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::DrainTimeout { .. }), "{err:?}");
    drop(write);
    client.wait_drained(lock.token(), &drain_options(Duration::from_secs(5)), &cancel, |_| {}).await.unwrap();
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn cancellation_stops_the_wait() {
    let sim = start(fast_config().with_fault(Fault::NeverDrain)).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    let cancel = CancellationToken::new();
    let polls = AtomicUsize::new(0);
    let err = client
        .wait_drained(lock.token(), &drain_options(Duration::from_secs(30)), &cancel, |_| {
            polls.fetch_add(1, Ordering::SeqCst);
            cancel.cancel();
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Cancelled), "{err:?}");
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn cancel_backup_ends_the_task_and_keeps_the_lock() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    let task = client.start_backup(lock.token()).await.unwrap();
    client.cancel_backup(&task.cancel_token).await.unwrap();
    let state = client.maintenance_state(lock.token()).await.unwrap();
    assert_eq!(state.task_state(), TaskState::Canceled);
    assert_eq!((state.db_state, state.scm_state), (DrainState::Available, DrainState::Available));
    assert!(sim.is_locked());
    lock.release().await.map_err(|(_, e)| e).unwrap();
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn unlock_makes_one_attempt_and_release_hands_the_lock_back() {
    let sim = start(fast_config().with_fault(Fault::RejectUnlock { times: 1 })).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    let (lock, err) = lock.release().await.unwrap_err();
    assert!(matches!(err, ClientError::Server { status: 500, .. }), "{err:?}");
    assert_eq!(count_requests(&sim, "DELETE", "/mvc/maintenance/lock"), 1, "unlock is not retried by the client");
    assert!(sim.is_locked());
    lock.release().await.map_err(|(_, e)| e).unwrap();
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn progress_is_retried() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let lock = client.lock().await.unwrap();
    client.start_backup(lock.token()).await.unwrap();
    sim.add_fault(Fault::ServerError { endpoint: Endpoint::Progress, times: 2 });
    client.report_progress(lock.token(), 100).await.unwrap();
    assert_eq!(sim.snapshot().progress, vec![100]);
    assert_eq!(count_requests(&sim, "POST", "/progress/client"), 3);
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[tokio::test]
async fn progress_over_100_is_refused_before_sending() {
    let sim = start(fast_config()).await;
    let client = client_for(&sim);
    let err = client.report_progress(&UnlockToken::new(WRONG_TOKEN), 101).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidConfig { setting: "percentage", .. }), "{err:?}");
    assert_eq!(sim.snapshot().request_count, 0);
}

#[tokio::test]
async fn dropped_lock_is_unlocked_best_effort() {
    let sim = start(fast_config()).await;
    let lock = client_for(&sim).lock().await.unwrap();
    assert!(sim.is_locked());
    drop(lock);
    assert!(eventually(|| !sim.is_locked()).await, "the dropped guard unlocked the instance");
    assert!(sim.events().iter().any(|e| e.kind == SimEventKind::Unlocked));
}

#[tokio::test]
async fn errors_never_show_tokens_or_the_password() {
    const PASSWORD: &str = "pw-Zq8-never-shown";
    let sim = start(fast_config().with_admin("admin", PASSWORD)).await;
    let client = fast_builder(sim.url().as_str()).credentials("admin", PASSWORD).build().unwrap();
    let impatient = fast_builder(sim.url().as_str())
        .credentials("admin", PASSWORD)
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let lock = client.lock().await.unwrap();
    let token = lock.token().clone();
    let task = client.start_backup(&token).await.unwrap();
    let wrong = UnlockToken::new(WRONG_TOKEN);

    let mut errors: Vec<ClientError> = vec![
        client.unlock(&wrong).await.unwrap_err(),
        client.cancel_backup(&CancelToken::new(WRONG_TOKEN)).await.unwrap_err(),
        client.report_progress(&wrong, 10).await.unwrap_err(),
    ];
    sim.add_fault(Fault::DropConnection { endpoint: Endpoint::Unlock, times: 1 });
    errors.push(client.unlock(&token).await.unwrap_err());
    sim.add_fault(Fault::RejectUnlock { times: 1 });
    errors.push(client.unlock(&token).await.unwrap_err());
    sim.add_fault(Fault::Slow { endpoint: Some(Endpoint::Progress), delay: Duration::from_secs(2) });
    errors.push(impatient.report_progress(&token, 10).await.unwrap_err());
    sim.add_fault(Fault::DropConnection { endpoint: Endpoint::CancelBackup, times: 1 });
    errors.push(client.cancel_backup(&task.cancel_token).await.unwrap_err());
    let wrong_password =
        fast_builder(sim.url().as_str()).credentials("admin", format!("{PASSWORD}-x")).build().unwrap();
    errors.push(wrong_password.lock().await.unwrap_err());

    let kinds: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            ClientError::InvalidToken { .. } => "token",
            ClientError::Transport { .. } => "transport",
            ClientError::Server { .. } => "server",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Unauthorized { .. } => "unauthorized",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["token", "token", "token", "transport", "server", "timeout", "transport", "unauthorized"]);
    let secrets = [token.expose_secret(), task.cancel_token.expose_secret(), WRONG_TOKEN, PASSWORD];
    for err in &errors {
        let mut shown = vec![err.to_string(), format!("{err:?}")];
        let mut source = err.source();
        while let Some(s) = source {
            shown.push(s.to_string());
            shown.push(format!("{s:?}"));
            source = s.source();
        }
        for text in shown {
            assert!(!text.contains('?'), "no query string in {text}");
            for secret in secrets {
                assert!(!text.contains(secret), "a secret leaked into {text}");
            }
        }
    }
    let debug = format!("{client:?} {lock:?} {task:?}");
    for secret in secrets {
        assert!(!debug.contains(secret), "a secret leaked into {debug}");
    }
    sim.clear_faults();
    lock.release().await.map_err(|(_, e)| e).unwrap();
}

#[test]
fn bad_urls_are_invalid_config() {
    for url in ["ftp://bitbucket.example.com/", "http://admin:pw@bitbucket.example.com/", "bitbucket.example.com", ""] {
        let err = MaintenanceClient::builder(url).build().unwrap_err();
        assert!(matches!(err, ClientError::InvalidConfig { setting: "url", .. }), "{url}: {err:?}");
        assert!(!err.to_string().contains("admin:pw"), "{err}");
    }
}

#[test]
fn unreadable_or_bogus_ca_file_is_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = MaintenanceClient::builder("https://bitbucket.example.com").ca_certificate(&missing).build().unwrap_err();
    assert!(matches!(&err, ClientError::InvalidConfig { setting: "ca_cert", .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "the message names the file: {err}");

    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let err = MaintenanceClient::builder("https://bitbucket.example.com").ca_certificate(&bogus).build().unwrap_err();
    assert!(matches!(err, ClientError::InvalidConfig { setting: "ca_cert", .. }), "{err:?}");
}

#[test]
fn skipping_tls_verification_still_builds() {
    let client = MaintenanceClient::builder("https://bitbucket.example.com/bitbucket")
        .danger_skip_tls_verify(true)
        .build()
        .unwrap();
    assert_eq!(client.base_url().as_str(), "https://bitbucket.example.com/bitbucket/");
}

/// A server that redirects `/moved/…` to `/…` on itself, serves `/status`, and sends everything
/// else to another host (`localhost` instead of `127.0.0.1`).
async fn redirecting_server() -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |uri: Uri| async move {
        let path = uri.path().to_owned();
        if path == "/status" {
            ([(header::CONTENT_TYPE, "application/json")], r#"{"state":"RUNNING"}"#).into_response()
        } else if let Some(rest) = path.strip_prefix("/moved") {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, rest.to_owned())]).into_response()
        } else {
            let elsewhere = format!("http://localhost:{port}{path}");
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, elsewhere)]).into_response()
        }
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}"), server)
}

#[tokio::test]
async fn redirects_are_followed_within_the_origin_only() {
    let (base, server) = redirecting_server().await;
    let moved = fast_builder(format!("{base}/moved")).build().unwrap();
    assert!(moved.status().await.unwrap().is_running(), "a same-origin redirect is followed");

    let client = fast_builder(&base).credentials("admin", "pw").build().unwrap();
    let err = client.lock().await.unwrap_err();
    match &err {
        ClientError::NotFound { detail, .. } => assert!(detail.contains("redirect"), "{detail}"),
        other => panic!("a redirect to another host must not be followed: {other:?}"),
    }
    server.abort();
}
