//! The simulator through raw HTTP: status codes and JSON shapes as in `bitbucket-api.md`.
// clippy's allow-unwrap-in-tests does not reach helpers outside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bitbucket_diy_core::simulator::{Endpoint, Fault, SimEventKind, Simulator, SimulatorConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use common::{eventually, fast_config, raw_http, requests, start};

const TOKEN_HEADER: &str = "X-Atlassian-Maintenance-Token";

/// Raw calls as the vendor scripts make them: basic auth, JSON headers, empty bodies.
struct Raw {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

struct Reply {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn error_message(&self) -> String {
        self.json()["errors"][0]["message"].as_str().expect("Bitbucket error body").to_owned()
    }
}

impl Raw {
    fn new(sim: &Simulator) -> Self {
        Self {
            http: raw_http(),
            base: sim.url().as_str().trim_end_matches('/').to_owned(),
            user: sim.user().to_owned(),
            password: sim.password().to_owned(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        auth: Option<(&str, &str)>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .header("Accept", "application/json")
            .header("Content-Type", "application/json");
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let response = request.send().await.expect("the simulator answers");
        let status = response.status();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        Reply { status, content_type, text: response.text().await.unwrap() }
    }

    async fn admin(&self, method: Method, path_and_query: &str, token: Option<&str>) -> Reply {
        self.call(method, path_and_query, token, Some((&self.user, &self.password))).await
    }

    async fn lock(&self) -> String {
        let reply = self.admin(Method::POST, "/mvc/maintenance/lock", None).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        reply.json()["unlockToken"].as_str().unwrap().to_owned()
    }

    async fn start_backup(&self, unlock: &str) -> String {
        let reply = self.admin(Method::POST, "/mvc/admin/backups?external=true", Some(unlock)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        reply.json()["cancelToken"].as_str().unwrap().to_owned()
    }

    async fn poll(&self, unlock: &str) -> Value {
        let reply = self.admin(Method::GET, "/mvc/maintenance", Some(unlock)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()
    }

    async fn poll_until_drained(&self, unlock: &str) -> Value {
        for _ in 0..500 {
            let state = self.poll(unlock).await;
            if state["db-state"] == "DRAINED" && state["scm-state"] == "DRAINED" {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never drained");
    }

    async fn progress(&self, token: &str, percentage: &str) -> Reply {
        self.admin(
            Method::POST,
            &format!("/mvc/admin/backups/progress/client?token={token}&percentage={percentage}"),
            None,
        )
        .await
    }

    async fn unlock(&self, token: &str) -> Reply {
        self.admin(Method::DELETE, &format!("/mvc/maintenance/lock?token={token}"), None).await
    }
}

fn is_token(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn kinds(sim: &Simulator) -> Vec<SimEventKind> {
    sim.events().into_iter().map(|e| e.kind).filter(|k| !matches!(k, SimEventKind::Request { .. })).collect()
}

#[tokio::test]
async fn status_and_application_properties_need_no_auth() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let status = raw.call(Method::GET, "/status", None, None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json(), serde_json::json!({"state": "RUNNING"}));
    let props = raw.call(Method::GET, "/rest/api/1.0/application-properties", None, None).await;
    assert_eq!(props.status, StatusCode::OK);
    let props = props.json();
    assert_eq!(props["version"], "8.19.0");
    assert_eq!(props["buildNumber"], "8019000");
    assert_eq!(props["displayName"], "Bitbucket");
    assert!(props["buildDate"].is_string());
}

#[tokio::test]
async fn mvc_calls_need_an_administrator() {
    let sim = start(fast_config().with_non_admin_user("bob", "bob-pw")).await;
    let raw = Raw::new(&sim);
    for (auth, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(("admin", "wrong")), StatusCode::UNAUTHORIZED),
        (Some(("bob", "bob-pw")), StatusCode::FORBIDDEN),
    ] {
        for (method, path) in [
            (Method::POST, "/mvc/maintenance/lock"),
            (Method::GET, "/mvc/maintenance"),
            (Method::DELETE, "/mvc/maintenance/lock?token=x"),
            (Method::POST, "/mvc/admin/backups/progress/client?token=x&percentage=1"),
        ] {
            let reply = raw.call(method.clone(), path, None, auth).await;
            assert_eq!(reply.status, expected, "{method} {path} as {auth:?}");
            assert!(reply.content_type.starts_with("application/json"));
            let error = &reply.json()["errors"][0];
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(error["exceptionName"].is_string());
            assert!(error["context"].is_null());
        }
    }
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn full_state_machine_with_json_shapes() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    assert_eq!(sim.lock_window(), None);

    let lock = raw.admin(Method::POST, "/mvc/maintenance/lock", None).await;
    assert_eq!(lock.status, StatusCode::ACCEPTED);
    let lock = lock.json();
    let unlock = lock["unlockToken"].as_str().unwrap().to_owned();
    assert!(is_token(&unlock), "{unlock}");
    assert_eq!(lock["owner"]["name"], "admin");
    assert_eq!(lock["owner"]["displayName"], "Administrator");
    assert_eq!(raw.call(Method::GET, "/status", None, None).await.json()["state"], "MAINTENANCE");
    assert!(sim.begin_write().is_none(), "maintenance mode refuses writes");
    let snapshot = sim.snapshot();
    assert_eq!(snapshot.unlock_token.as_deref(), Some(unlock.as_str()), "the simulator knows its token");
    assert_eq!(snapshot.owner.as_deref(), Some("admin"));
    assert!(!format!("{snapshot:?}").contains(&unlock), "Debug hides the token");

    let no_task = raw.poll(&unlock).await;
    assert!(no_task.get("task").is_none());
    let started = raw.admin(Method::POST, "/mvc/admin/backups?external=true", Some(&unlock)).await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let started = started.json();
    let cancel = started["cancelToken"].as_str().unwrap();
    assert!(is_token(cancel) && cancel != unlock);
    assert_eq!(sim.snapshot().cancel_token.as_deref(), Some(cancel));
    assert!(started["id"].is_string());
    assert_eq!(started["type"], "BACKUP");
    assert_eq!(started["progress"]["message"], "Closing connections to the current database");
    assert_eq!(started["progress"]["percentage"], 0);
    let again = raw.admin(Method::POST, "/mvc/admin/backups?external=true", Some(&unlock)).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "one backup at a time");

    let draining = raw.poll(&unlock).await;
    assert_eq!(draining["task"]["state"], "RUNNING");
    assert_eq!(draining["task"]["id"], started["id"]);
    let drained = raw.poll_until_drained(&unlock).await;
    assert_eq!(drained["task"]["state"], "RUNNING", "RUNNING until progress 100");
    assert_eq!(drained["task"]["progress"]["percentage"], 10);

    for _ in 0..3 {
        let reply = raw.progress(&unlock, "50").await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "repeated percentages are accepted");
        assert!(reply.text.is_empty());
    }
    assert_eq!(raw.poll(&unlock).await["task"]["progress"]["percentage"], 55);
    assert_eq!(raw.progress(&unlock, "101").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(raw.progress(&unlock, "-1").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(raw.progress(&unlock, "100").await.status, StatusCode::ACCEPTED);
    assert_eq!(raw.progress(&unlock, "100").await.status, StatusCode::ACCEPTED, "a retried 100 is harmless");
    let finished = raw.poll(&unlock).await;
    assert_eq!(finished["task"]["state"], "SUCCESSFUL");
    assert_eq!((finished["db-state"].as_str(), finished["scm-state"].as_str()), (Some("AVAILABLE"), Some("AVAILABLE")));
    assert!(sim.lock_window().is_none(), "still locked");

    let unlocked = raw.unlock(&unlock).await;
    assert_eq!(unlocked.status, StatusCode::ACCEPTED);
    assert!(unlocked.text.is_empty());
    assert_eq!(raw.call(Method::GET, "/status", None, None).await.json()["state"], "RUNNING");
    let after = raw.admin(Method::GET, "/mvc/maintenance", None).await;
    assert_eq!(after.status, StatusCode::OK, "no lock: no token needed");
    assert_eq!(after.json(), serde_json::json!({"db-state": "AVAILABLE", "scm-state": "AVAILABLE"}));
    assert!(sim.lock_window().is_some());
    assert!(sim.begin_write().is_some());

    let state = sim.snapshot();
    assert_eq!(state.task_state.as_deref(), Some("SUCCESSFUL"));
    assert_eq!(state.progress, vec![50, 50, 50, 100, 100]);
    assert_eq!(state.request_count as usize, requests(&sim).len());
    assert_eq!(
        kinds(&sim),
        vec![
            SimEventKind::Locked { owner: "admin".into() },
            SimEventKind::BackupStarted,
            SimEventKind::Drained,
            SimEventKind::ProgressReported { percentage: 50 },
            SimEventKind::ProgressReported { percentage: 50 },
            SimEventKind::ProgressReported { percentage: 50 },
            SimEventKind::ProgressReported { percentage: 100 },
            SimEventKind::TaskFinished { state: "SUCCESSFUL".into() },
            SimEventKind::ProgressReported { percentage: 100 },
            SimEventKind::Unlocked,
        ]
    );
}

#[tokio::test]
async fn tokens_are_checked_where_the_api_requires_them() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    let wrong = "f".repeat(40);
    let missing = raw.admin(Method::POST, "/mvc/admin/backups?external=true", None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.error_message().contains("token"));
    assert_eq!(
        raw.admin(Method::POST, "/mvc/admin/backups?external=true", Some(&wrong)).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(raw.admin(Method::GET, "/mvc/maintenance", Some(&wrong)).await.status, StatusCode::CONFLICT);
    assert_eq!(raw.admin(Method::GET, "/mvc/maintenance", None).await.status, StatusCode::BAD_REQUEST);
    let cancel = raw.start_backup(&unlock).await;
    assert_eq!(raw.progress(&wrong, "50").await.status, StatusCode::CONFLICT);
    assert_eq!(raw.progress(&cancel, "50").await.status, StatusCode::CONFLICT, "progress takes the unlock token");
    assert_eq!(
        raw.admin(Method::POST, &format!("/mvc/maintenance?token={unlock}"), None).await.status,
        StatusCode::CONFLICT,
        "cancel takes the cancel token"
    );
    assert_eq!(raw.unlock(&cancel).await.status, StatusCode::CONFLICT);
    assert_eq!(raw.unlock(&wrong).await.status, StatusCode::CONFLICT);
    assert_eq!(raw.admin(Method::DELETE, "/mvc/maintenance/lock", None).await.status, StatusCode::BAD_REQUEST);
    assert!(sim.is_locked());
    assert_eq!(sim.snapshot().task_state.as_deref(), Some("RUNNING"));
}

#[tokio::test]
async fn the_maintenance_header_is_tolerated_everywhere() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    let t = Some(unlock.as_str());
    assert_eq!(raw.call(Method::GET, "/status", t, None).await.status, StatusCode::OK);
    assert_eq!(raw.call(Method::GET, "/rest/api/1.0/application-properties", t, None).await.status, StatusCode::OK);
    raw.start_backup(&unlock).await;
    raw.poll_until_drained(&unlock).await;
    let path = format!("/mvc/admin/backups/progress/client?token={unlock}&percentage=100");
    assert_eq!(raw.admin(Method::POST, &path, t).await.status, StatusCode::ACCEPTED);
    let path = format!("/mvc/maintenance/lock?token={unlock}");
    assert_eq!(raw.admin(Method::DELETE, &path, t).await.status, StatusCode::ACCEPTED);
    assert!(!sim.is_locked());
}

#[tokio::test]
async fn a_second_lock_is_refused_with_409() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let first = raw.lock().await;
    let second = raw.admin(Method::POST, "/mvc/maintenance/lock", None).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert!(second.error_message().contains("Administrator (admin)"), "{}", second.text);
    assert!(kinds(&sim).contains(&SimEventKind::LockRefused));
    assert_eq!(raw.unlock(&first).await.status, StatusCode::ACCEPTED);
    let third = raw.lock().await;
    assert_ne!(third, first, "every lock gets a fresh token");
}

#[tokio::test]
async fn unlock_while_running_cancels_the_task() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    raw.start_backup(&unlock).await;
    assert_eq!(raw.unlock(&unlock).await.status, StatusCode::ACCEPTED);
    let state = sim.snapshot();
    assert!(!state.locked);
    assert_eq!(state.task_state.as_deref(), Some("CANCELED"));
    let tail: Vec<SimEventKind> = kinds(&sim).into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        vec![
            SimEventKind::Unlocked,
            SimEventKind::TaskFinished { state: "CANCELED".into() },
            SimEventKind::BackupCancelled
        ]
    );
}

#[tokio::test]
async fn cancel_ends_the_task_but_keeps_the_lock() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    let cancel = raw.start_backup(&unlock).await;
    let reply = raw.admin(Method::POST, &format!("/mvc/maintenance?token={cancel}"), None).await;
    assert!(reply.status.is_success());
    let state = raw.poll(&unlock).await;
    assert_eq!(state["task"]["state"], "CANCELED");
    assert_eq!(state["db-state"], "AVAILABLE");
    assert_eq!(state["scm-state"], "AVAILABLE");
    assert!(sim.is_locked());
    let again = raw.admin(Method::POST, &format!("/mvc/maintenance?token={cancel}"), None).await;
    assert!(again.status.is_success(), "cancelling twice is harmless");
    assert_eq!(kinds(&sim).iter().filter(|k| **k == SimEventKind::BackupCancelled).count(), 1);
    assert_eq!(raw.progress(&unlock, "50").await.status, StatusCode::CONFLICT, "no progress on a cancelled task");
}

#[tokio::test]
async fn writes_in_flight_hold_the_drain_until_dropped() {
    let sim = start(fast_config()).await;
    let raw = Raw::new(&sim);
    let write = sim.begin_write().expect("allowed before the lock");
    assert_eq!(sim.snapshot().writes_in_flight, 1);
    let unlock = raw.lock().await;
    raw.start_backup(&unlock).await;
    // Well past the 30 ms drain delay: only the write holds the drain back.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let state = raw.poll(&unlock).await;
    assert_eq!((state["db-state"].as_str(), state["scm-state"].as_str()), (Some("DRAINING"), Some("DRAINING")));
    assert!(!kinds(&sim).contains(&SimEventKind::Drained));
    drop(write);
    raw.poll_until_drained(&unlock).await;
    assert_eq!(sim.snapshot().writes_in_flight, 0);
    assert!(kinds(&sim).contains(&SimEventKind::Drained));
}

#[tokio::test]
async fn drain_faults_hold_one_or_both_states() {
    let sim = start(fast_config().with_fault(Fault::OnlyDatabaseDrains)).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    raw.start_backup(&unlock).await;
    assert!(eventually(|| sim.snapshot().db_state == "DRAINED").await);
    let state = raw.poll(&unlock).await;
    assert_eq!((state["db-state"].as_str(), state["scm-state"].as_str()), (Some("DRAINED"), Some("DRAINING")));
    sim.clear_faults();
    sim.add_fault(Fault::NeverDrain);
    assert_eq!(sim.snapshot().scm_state, "DRAINING");
    sim.clear_faults();
    raw.poll_until_drained(&unlock).await;
}

#[tokio::test]
async fn a_failing_task_goes_failed_and_un_latches() {
    let sim = start(fast_config().with_fault(Fault::TaskFails)).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    raw.start_backup(&unlock).await;
    assert!(eventually(|| sim.snapshot().task_state.as_deref() == Some("FAILED")).await);
    let state = raw.poll(&unlock).await;
    assert_eq!(state["task"]["state"], "FAILED");
    assert_eq!(state["db-state"], "AVAILABLE");
    assert!(kinds(&sim).contains(&SimEventKind::TaskFinished { state: "FAILED".into() }));
    assert!(sim.is_locked(), "a failed task keeps the lock");
}

#[tokio::test]
async fn foreign_lock_holder_refuses_locks_until_cleared() {
    let sim = start(fast_config()).await;
    sim.add_fault(Fault::LockedBy { owner: "carol".into() });
    let raw = Raw::new(&sim);
    assert!(sim.is_locked());
    assert_eq!(sim.snapshot().owner.as_deref(), Some("carol"));
    assert_eq!(raw.call(Method::GET, "/status", None, None).await.json()["state"], "MAINTENANCE");
    let refused = raw.admin(Method::POST, "/mvc/maintenance/lock", None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.error_message().contains("carol"));
    sim.clear_faults();
    assert!(!sim.is_locked());
    raw.lock().await;
}

#[tokio::test]
async fn answer_faults_change_status_and_body() {
    let sim = start(fast_config().with_fault(Fault::ServerErrorOnRequest(2))).await;
    let raw = Raw::new(&sim);
    assert_eq!(raw.call(Method::GET, "/status", None, None).await.status, StatusCode::OK);
    let failed = raw.call(Method::GET, "/status", None, None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!failed.error_message().is_empty());
    assert_eq!(raw.call(Method::GET, "/status", None, None).await.status, StatusCode::OK);

    sim.add_fault(Fault::HtmlInsteadOfJson { endpoint: None });
    let html = raw.call(Method::GET, "/status", None, None).await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.content_type.starts_with("text/html") && html.text.starts_with("<!DOCTYPE html>"));
    sim.clear_faults();

    sim.add_fault(Fault::MalformedJson { endpoint: Endpoint::Status });
    let malformed = raw.call(Method::GET, "/status", None, None).await;
    assert_eq!(malformed.status, StatusCode::OK);
    assert!(malformed.content_type.starts_with("application/json"));
    assert!(serde_json::from_str::<Value>(&malformed.text).is_err());
    sim.clear_faults();

    sim.add_fault(Fault::ServerError { endpoint: Endpoint::Lock, times: 1 });
    assert_eq!(raw.admin(Method::POST, "/mvc/maintenance/lock", None).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    let unlock = raw.lock().await;
    sim.add_fault(Fault::RejectUnlock { times: 2 });
    assert_eq!(raw.unlock(&unlock).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(raw.unlock(&unlock).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(raw.unlock(&unlock).await.status, StatusCode::ACCEPTED);
    assert!(kinds(&sim).iter().any(|k| matches!(k, SimEventKind::FaultTriggered { .. })));
}

#[tokio::test]
async fn dropped_connections_get_no_answer() {
    let sim = start(fast_config().with_fault(Fault::DropConnection { endpoint: Endpoint::Status, times: 1 })).await;
    let http = raw_http();
    let url = format!("{}/status", sim.url().as_str().trim_end_matches('/'));
    let err = http.get(&url).send().await.expect_err("the connection is closed without an answer");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert!(http.get(&url).send().await.unwrap().status().is_success());
    assert!(kinds(&sim).iter().any(|k| matches!(k, SimEventKind::ConnectionDropped { path, .. } if path == "/status")));
}

#[tokio::test]
async fn slow_fault_delays_the_answer() {
    let sim = start(fast_config().with_fault(Fault::Slow { endpoint: None, delay: Duration::from_secs(5) })).await;
    let _ = raw_http(); // installs the TLS provider reqwest needs to build
    let http = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let err = http.get(format!("{}/status", sim.url())).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_get_an_html_404_and_wrong_methods_405() {
    let sim = start(fast_config().with_context_path("bitbucket/")).await;
    let port = sim.url().port().unwrap();
    assert_eq!(sim.url().as_str(), format!("http://127.0.0.1:{port}/bitbucket"));
    let raw = Raw::new(&sim);
    let missing = raw.call(Method::GET, "/nope", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.content_type.starts_with("text/html") && missing.text.starts_with('<'));
    let root = format!("http://{}:{}/status", sim.url().host_str().unwrap(), sim.url().port().unwrap());
    let outside = raw.http.get(root).send().await.unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND, "the context path is required");
    let wrong_method = raw.admin(Method::PUT, "/mvc/maintenance/lock", None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    let unsupported = raw.admin(Method::POST, "/mvc/admin/backups", None).await;
    assert!(unsupported.status.is_client_error());
}

#[tokio::test]
async fn events_carry_paths_without_query_strings_in_time_order() {
    let sim = start(fast_config().with_context_path("/bb")).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    raw.unlock(&unlock).await;
    let events = sim.events();
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at && w[0].wall <= w[1].wall));
    let paths: Vec<(String, String, u16)> = requests(&sim);
    assert_eq!(
        paths,
        vec![
            ("POST".to_owned(), "/bb/mvc/maintenance/lock".to_owned(), 202),
            ("DELETE".to_owned(), "/bb/mvc/maintenance/lock".to_owned(), 202)
        ]
    );
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(&unlock), "the event log never holds a token");
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(SimulatorConfig::default()).await;
    let url = format!("{}/status", sim.url().as_str().trim_end_matches('/'));
    let http = raw_http();
    assert!(http.get(&url).send().await.unwrap().status().is_success());
    sim.shutdown().await;
    let fresh = raw_http();
    assert!(fresh.get(&url).send().await.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn defaults_match_the_documented_ones() {
    let config = SimulatorConfig::default();
    assert_eq!((config.admin.name.as_str(), config.admin.password.as_str()), ("admin", "admin"));
    assert_eq!(config.version, "8.19.0");
    assert_eq!(config.drain_delay, Duration::from_millis(200));
    assert_eq!(config.context_path, "");
    let sim = start(config).await;
    assert_eq!((sim.user(), sim.password()), ("admin", "admin"));
    assert_eq!(sim.url().host_str(), Some("127.0.0.1"));
    assert_ne!(sim.url().port(), Some(0));
}

#[tokio::test]
async fn event_log_is_readable_over_http_without_tokens() {
    let sim = start(fast_config().with_context_path("/bitbucket")).await;
    let raw = Raw::new(&sim);
    let unlock = raw.lock().await;
    assert_eq!(raw.unlock(&unlock).await.status, StatusCode::ACCEPTED);
    let url = format!("{}{}", sim.url(), bitbucket_diy_core::simulator::EVENTS_PATH);
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(!body.contains(&unlock), "the event log never carries a token");
    let json: Value = serde_json::from_str(&body).unwrap();
    let window = json["lock_window_seconds"].as_f64().expect("a lock window after lock and unlock");
    assert!((window - sim.lock_window().unwrap().as_secs_f64()).abs() < 1e-6);
    let events = json["events"].as_array().unwrap();
    assert_eq!(events.len(), sim.events().len());
    assert!(body.contains("unlocked"), "{body}");
}
