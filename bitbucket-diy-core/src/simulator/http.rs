//! The HTTP face of the simulator: routing, basic auth, faults, and Bitbucket-shaped answers.
//!
//! One fallback handler serves everything, so every request (known or not) is counted, can be hit
//! by a fault and lands in the event log.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::client::LockOwner;
use crate::simulator::conn::ConnectionSwitch;
use crate::simulator::events::SimEventKind;
use crate::simulator::faults::{Endpoint, Intercept};
use crate::simulator::state::Refusal;
use crate::simulator::{Shared, World};

const MAINTENANCE_TOKEN_HEADER: &str = "X-Atlassian-Maintenance-Token";

/// What an SSO proxy or a session timeout shows instead of the API.
const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><title>Log in - Bitbucket</title></head>\
<body><form id=\"j-login-form\" action=\"/j_atl_security_check\" method=\"post\">\
<input name=\"j_username\"><input name=\"j_password\" type=\"password\"></form></body></html>\n";

/// What Bitbucket's Tomcat shows for a path it does not know (e.g. a wrong context path).
const NOT_FOUND_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><title>Page not found - Bitbucket</title></head>\
<body><h1>Page not found</h1><p>The page you were looking for could not be found.</p></body></html>\n";

enum Route {
    Endpoint(Endpoint),
    WrongMethod,
    Unknown,
}

fn route(context_path: &str, method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix(context_path) else { return Route::Unknown };
    let by_method: &[(Method, Endpoint)] = match rest {
        "/rest/api/1.0/application-properties" => &[(Method::GET, Endpoint::ApplicationProperties)],
        "/status" => &[(Method::GET, Endpoint::Status)],
        "/mvc/maintenance/lock" => &[(Method::POST, Endpoint::Lock), (Method::DELETE, Endpoint::Unlock)],
        "/mvc/admin/backups" => &[(Method::POST, Endpoint::StartBackup)],
        "/mvc/maintenance" => &[(Method::GET, Endpoint::MaintenanceState), (Method::POST, Endpoint::CancelBackup)],
        "/mvc/admin/backups/progress/client" => &[(Method::POST, Endpoint::Progress)],
        _ => return Route::Unknown,
    };
    by_method.iter().find(|(m, _)| m == method).map_or(Route::WrongMethod, |(_, e)| Route::Endpoint(*e))
}

/// An answer before it becomes HTTP, so a fault can still garble it.
struct Answer {
    status: u16,
    body: Body,
}

enum Body {
    Json(Value),
    Empty,
    Html(&'static str),
    /// Bytes sent as `application/json` whatever they are.
    RawJson(String),
}

impl Answer {
    fn json(status: u16, value: Value) -> Self {
        Self { status, body: Body::Json(value) }
    }

    fn empty(status: u16) -> Self {
        Self { status, body: Body::Empty }
    }

    fn html(status: u16, page: &'static str) -> Self {
        Self { status, body: Body::Html(page) }
    }

    fn error(status: u16, message: &str, exception: &str) -> Self {
        Self::json(status, json!({"errors": [{"context": null, "message": message, "exceptionName": exception}]}))
    }

    fn refusal(refusal: Refusal) -> Self {
        let mut error = json!({"context": null, "message": refusal.message, "exceptionName": refusal.exception});
        // Not a documented Bitbucket field: the message names the holder too, and clients read either.
        if let (Some(owner), Some(object)) = (refusal.owner, error.as_object_mut()) {
            object.insert("owner".to_owned(), json!(owner));
        }
        Self::json(refusal.status, json!({"errors": [error]}))
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A truncated body, as if a proxy cut the answer short.
    fn garbled(self) -> Self {
        let full = match &self.body {
            Body::Json(value) => value.to_string(),
            _ => "{\"errors\":[]}".to_owned(),
        };
        let cut = full.char_indices().nth(full.chars().count() / 2).map_or(full.len(), |(i, _)| i);
        Self { status: self.status, body: Body::RawJson(full[..cut].to_owned()) }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self.body {
            Body::Json(value) => (status, Json(value)).into_response(),
            Body::Empty => status.into_response(),
            Body::Html(page) => (status, [(header::CONTENT_TYPE, "text/html;charset=UTF-8")], page).into_response(),
            Body::RawJson(text) => {
                (status, [(header::CONTENT_TYPE, "application/json;charset=UTF-8")], text).into_response()
            }
        }
    }
}

/// 401 for missing or wrong credentials, 403 for a user without system-admin permission.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Answer> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let pair = credentials.as_deref().and_then(|c| c.split_once(':'));
    let is = |user: &crate::simulator::SimUser| pair == Some((user.name.as_str(), user.password.as_str()));
    if is(&shared.admin) {
        Ok(())
    } else if shared.non_admin_users.iter().any(is) {
        Err(Answer::error(
            403,
            "You are not permitted to access this resource",
            "com.atlassian.bitbucket.AuthorisationException",
        ))
    } else {
        Err(Answer::error(
            401,
            "Authentication failed. Please check your credentials and try again.",
            "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
        ))
    }
}

fn query_value(query: &[(String, String)], name: &str) -> Option<String> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Run one authorised `/mvc` call against the state machine.
fn process_mvc(shared: &Shared, world: &mut World, endpoint: Endpoint, request: &Request, now: Instant) -> Answer {
    let query: Vec<(String, String)> = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Tolerated on every call, read only where the API requires it.
    let header_token = request.headers().get(MAINTENANCE_TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let token = query_value(&query, "token");
    let World { machine, faults } = world;
    let result = match endpoint {
        Endpoint::Lock => {
            let user = LockOwner { display_name: shared.admin_display_name.clone(), name: shared.admin.name.clone() };
            machine
                .lock(now, user, faults.locked_by())
                .map(|granted| Answer::json(202, json!({"unlockToken": granted.unlock_token, "owner": granted.owner})))
        }
        Endpoint::StartBackup => {
            let external = query_value(&query, "external").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            machine.start_backup(now, header_token, external).map(|started| {
                Answer::json(
                    202,
                    json!({"id": started.id, "type": "BACKUP", "cancelToken": started.cancel_token,
                           "progress": started.progress}),
                )
            })
        }
        Endpoint::MaintenanceState => {
            machine.maintenance_state(header_token).map(|state| Answer::json(200, json!(state)))
        }
        Endpoint::Progress => {
            let percentage = query_value(&query, "percentage");
            machine.report_progress(now, token.as_deref(), percentage.as_deref()).map(|()| Answer::empty(202))
        }
        // The vendor docs only say 2xx for cancel; 200 with an empty body is our choice.
        Endpoint::CancelBackup => machine.cancel_backup(now, token.as_deref()).map(|()| Answer::empty(200)),
        Endpoint::Unlock => machine.unlock(now, token.as_deref()).map(|()| Answer::empty(202)),
        Endpoint::ApplicationProperties | Endpoint::Status => {
            return Answer::error(500, "not an /mvc call", "java.lang.IllegalStateException");
        }
    };
    result.unwrap_or_else(Answer::refusal)
}

fn process(shared: &Shared, world: &mut World, endpoint: Endpoint, request: &Request, now: Instant) -> Answer {
    match endpoint {
        // Public in Bitbucket: no credentials needed (and supplied ones are not checked here).
        Endpoint::ApplicationProperties => Answer::json(
            200,
            json!({"version": shared.version, "buildNumber": build_number(&shared.version),
                   "buildDate": "1717000000000", "displayName": "Bitbucket"}),
        ),
        Endpoint::Status => {
            let locked = world.machine.is_locked(world.faults.locked_by());
            Answer::json(200, json!({"state": if locked { "MAINTENANCE" } else { "RUNNING" }}))
        }
        _ => match authorize(shared, request.headers()) {
            Ok(()) => process_mvc(shared, world, endpoint, request, now),
            Err(answer) => answer,
        },
    }
}

/// `8.19.0` → `8019000`, the way Bitbucket numbers its builds.
fn build_number(version: &str) -> String {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major * 1_000_000 + minor * 1_000 + patch).to_string()
}

/// Path (below the context path) of the simulator's own event log. Not part of Bitbucket's API:
/// it lets a rehearsal or a benchmark read what the simulator saw (lock window, progress) from
/// another process. It carries no token and is not counted, logged or subject to faults.
pub const EVENTS_PATH: &str = "/_simulator/events";

/// Every request lands here.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<ConnectionSwitch>,
    request: Request,
) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    if request.method() == Method::GET && path.strip_prefix(shared.context_path.as_str()) == Some(EVENTS_PATH) {
        let (events, lock_window) = shared.with_world(|w| (w.machine.events(), w.machine.lock_window()));
        let body = json!({ "events": events, "lock_window_seconds": lock_window.map(|d| d.as_secs_f64()) });
        return Json(body).into_response();
    }
    let route = route(&shared.context_path, request.method(), &path);
    let endpoint = match route {
        Route::Endpoint(e) => Some(e),
        _ => None,
    };
    let (request_no, delay) = {
        let mut world = shared.world();
        (world.machine.count_request(), world.faults.slow_delay(endpoint))
    };
    if let Some(delay) = delay {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => {}
        }
    }

    let mut guard = shared.world();
    let world = &mut *guard;
    let now = Instant::now();
    world.machine.advance(now, world.faults.drain_faults());
    let mut cut = false;
    let answer = if let Some((intercept, fault)) = world.faults.intercept(request_no, endpoint) {
        world.machine.record_at(now, SimEventKind::FaultTriggered { fault });
        match intercept {
            Intercept::Drop => {
                cut = true;
                Answer::empty(500)
            }
            Intercept::Html => Answer::html(200, LOGIN_PAGE),
            Intercept::ServerError => Answer::error(
                500,
                "An unexpected error occurred (simulated). Please try again.",
                "java.lang.RuntimeException",
            ),
        }
    } else {
        let answer = match route {
            Route::Endpoint(endpoint) => process(&shared, world, endpoint, &request, now),
            Route::WrongMethod => Answer::error(
                405,
                "Method not allowed",
                "org.springframework.web.HttpRequestMethodNotSupportedException",
            ),
            Route::Unknown => Answer::html(404, NOT_FOUND_PAGE),
        };
        if world.faults.answer_lost(endpoint) {
            cut = true;
            world.machine.record_at(now, SimEventKind::FaultTriggered { fault: "answer-lost".to_owned() });
        }
        if answer.is_success() && world.faults.malformed_json(endpoint) {
            world.machine.record_at(now, SimEventKind::FaultTriggered { fault: "malformed-json".to_owned() });
            answer.garbled()
        } else {
            answer
        }
    };
    if cut {
        connection.cut();
        world.machine.record_at(Instant::now(), SimEventKind::ConnectionDropped { method, path });
    } else {
        world.machine.record_at(Instant::now(), SimEventKind::Request { method, path, status: answer.status });
    }
    drop(guard);
    answer.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_respect_the_context_path() {
        assert!(matches!(route("/bb", &Method::GET, "/bb/status"), Route::Endpoint(Endpoint::Status)));
        assert!(matches!(route("/bb", &Method::GET, "/status"), Route::Unknown));
        assert!(matches!(route("/bb", &Method::GET, "/bbx/status"), Route::Unknown));
        assert!(matches!(route("", &Method::DELETE, "/mvc/maintenance/lock"), Route::Endpoint(Endpoint::Unlock)));
        assert!(matches!(route("", &Method::PUT, "/mvc/maintenance/lock"), Route::WrongMethod));
    }

    #[test]
    fn build_numbers_follow_the_version() {
        assert_eq!(build_number("8.19.0"), "8019000");
        assert_eq!(build_number("7.21.12"), "7021012");
    }

    #[test]
    fn garbled_answers_are_not_json() {
        let answer = Answer::json(202, json!({"unlockToken": "abc", "owner": {"name": "admin"}})).garbled();
        let Body::RawJson(text) = answer.body else { panic!("not raw") };
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
}
