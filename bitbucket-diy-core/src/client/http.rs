//! One request to Bitbucket and the reading of its answer: headers, auth, error mapping, retries.
//!
//! Tokens travel in query strings and headers, so nothing here logs or reports a URL with its
//! query, and reqwest's own errors lose their URL before they are wrapped.

use std::future::Future;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use url::Url;

use crate::client::builder::Inner;
use crate::client::{ClientError, LockOwner, UnlockToken};

const MAINTENANCE_TOKEN_HEADER: &str = "X-Atlassian-Maintenance-Token";

/// The largest answer read. Bitbucket's maintenance answers are a few hundred bytes and its error
/// pages a few KB; reading an endless body from a broken proxy or a hostile server whole would
/// exhaust memory before the request timeout ends it.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What a 4xx refusal of a call means, beyond the statuses every call shares (401, 403, 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusals {
    /// Nothing special: an unexpected status.
    Plain,
    /// 409: someone holds the lock already.
    Lock,
    /// 400, 409, 410, 422: the token was rejected. The vendor does not document which status a
    /// wrong or stale token gets, so every "your request conflicts" status counts.
    Token,
}

/// One call: what to send. Query values may be secrets.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) query: Vec<(&'static str, &'a str)>,
    pub(crate) maintenance_token: Option<&'a UnlockToken>,
    pub(crate) authenticated: bool,
    pub(crate) refusals: Refusals,
}

impl<'a> Call<'a> {
    /// An anonymous `GET`.
    pub(crate) fn anonymous_get(path: &'static str) -> Self {
        Self {
            method: Method::GET,
            path,
            query: Vec::new(),
            maintenance_token: None,
            authenticated: false,
            refusals: Refusals::Plain,
        }
    }

    /// An authenticated call.
    pub(crate) fn authenticated(method: Method, path: &'static str, refusals: Refusals) -> Self {
        Self { method, path, query: Vec::new(), maintenance_token: None, authenticated: true, refusals }
    }

    pub(crate) fn query(mut self, name: &'static str, value: &'a str) -> Self {
        self.query.push((name, value));
        self
    }

    pub(crate) fn maintenance_token(mut self, token: &'a UnlockToken) -> Self {
        self.maintenance_token = Some(token);
        self
    }

    /// Every secret this call carries, to keep them out of error messages.
    fn secrets<'s>(&'s self, inner: &'s Inner) -> Vec<&'s str> {
        let mut secrets: Vec<&str> = self.query.iter().filter(|(name, _)| *name == "token").map(|(_, v)| *v).collect();
        secrets.extend(self.maintenance_token.map(UnlockToken::expose_secret));
        secrets.extend(inner.password.as_ref().map(ExposeSecret::expose_secret));
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

/// A 2xx answer that is not an HTML page.
pub(crate) struct Answer {
    /// The URL called, without its query.
    pub(crate) url: Url,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as `T`; missing fields and malformed JSON are [`ClientError::InvalidResponse`].
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ClientError::InvalidResponse {
                url: self.url.clone(),
                reason: "empty body where JSON was expected".into(),
            });
        }
        // serde_json's messages name positions and types, never the input text.
        serde_json::from_slice(&self.body).map_err(|e| ClientError::InvalidResponse {
            url: self.url.clone(),
            reason: format!("not the expected JSON: {e}"),
        })
    }
}

/// Bitbucket's REST error body.
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    message: Option<String>,
    /// Not documented by the vendor; our simulator sends it with a refused lock.
    #[serde(default)]
    owner: Option<LockOwner>,
}

/// What an error answer says: Bitbucket's message(s) and, for a refused lock, the holder.
struct Refusal {
    message: Option<String>,
    owner: Option<LockOwner>,
}

fn is_html(content_type: Option<&str>, body: &[u8]) -> bool {
    let declared = content_type.is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    declared || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

fn read_refusal(body: &[u8], secrets: &[&str]) -> Refusal {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else { return Refusal { message: None, owner: None } };
    let messages: Vec<String> =
        parsed.errors.iter().filter_map(|e| e.message.clone()).filter(|m| !m.is_empty()).collect();
    let mut message = (!messages.is_empty()).then(|| messages.join("; "));
    // A server that echoes a token back must not put it into our error messages.
    if let Some(text) = message.as_mut() {
        for secret in secrets {
            *text = text.replace(secret, "[REDACTED]");
        }
    }
    let owner = parsed.errors.into_iter().find_map(|e| e.owner);
    Refusal { message, owner }
}

/// The lock holder named by a refusal: the `owner` object if present, else "… by NAME" in the message.
fn lock_holder(refusal: &Refusal) -> String {
    if let Some(owner) = &refusal.owner {
        if owner.display_name.is_empty() || owner.display_name == owner.name || owner.name.is_empty() {
            let name = if owner.display_name.is_empty() { &owner.name } else { &owner.display_name };
            return name.clone();
        }
        return owner.to_string();
    }
    refusal
        .message
        .as_deref()
        .and_then(|m| m.rsplit_once(" by "))
        .map(|(_, holder)| holder.trim().trim_end_matches('.').to_owned())
        .unwrap_or_default()
}

fn status_error(status: StatusCode, url: Url, refusals: Refusals, refusal: Refusal) -> ClientError {
    match (status.as_u16(), refusals) {
        (401, _) => ClientError::Unauthorized { url },
        (403, _) => ClientError::Forbidden { url, message: refusal.message },
        (404, _) => ClientError::NotFound { url, detail: "404 Not Found".to_owned() },
        (300..=399, _) => ClientError::NotFound { url, detail: format!("a redirect ({status}) to another server") },
        (409, Refusals::Lock) => ClientError::AlreadyLocked { owner: lock_holder(&refusal), message: refusal.message },
        (400 | 409 | 410 | 422, Refusals::Token) => {
            ClientError::InvalidToken { url, status: status.as_u16(), message: refusal.message }
        }
        (code, _) => ClientError::Server { url, status: code, message: refusal.message },
    }
}

impl Inner {
    fn transport_error(&self, url: &Url, error: reqwest::Error) -> ClientError {
        if error.is_timeout() {
            let after = if error.is_connect() { self.connect_timeout } else { self.request_timeout };
            return ClientError::Timeout { url: url.clone(), after };
        }
        ClientError::Transport { url: url.clone(), source: error.without_url() }
    }

    /// Send one request (no retry). Non-2xx answers and HTML pages become errors.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Answer, ClientError> {
        let url = self.endpoint(call.path);
        let mut full_url = url.clone();
        if !call.query.is_empty() {
            full_url.query_pairs_mut().extend_pairs(call.query.iter());
        }
        let mut request = self.http.request(call.method.clone(), full_url).header(ACCEPT, "application/json");
        if call.method == Method::POST {
            // Bitbucket's MVC endpoints expect a JSON content type even with no body.
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if call.authenticated
            && let Some(password) = &self.password
        {
            request = request.basic_auth(&self.user, Some(password.expose_secret()));
        }
        if let Some(token) = call.maintenance_token {
            request = request.header(MAINTENANCE_TOKEN_HEADER, token.expose_secret());
        }
        tracing::debug!(method = %call.method, path = url.path(), "calling Bitbucket");
        let response = request.send().await.map_err(|e| self.transport_error(&url, e))?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = self.read_answer(&url, response).await?;
        tracing::debug!(method = %call.method, path = url.path(), status = status.as_u16(), "Bitbucket answered");
        if !status.is_success() {
            let secrets = call.secrets(self);
            return Err(status_error(status, url, call.refusals, read_refusal(&body, &secrets)));
        }
        if is_html(content_type.as_deref(), &body) {
            // A login page or a servlet's page: the request never reached the API.
            let detail = format!("an HTML page with status {}", status.as_u16());
            return Err(ClientError::NotFound { url, detail });
        }
        Ok(Answer { url, body })
    }

    /// The body, up to [`MAX_ANSWER_BYTES`].
    async fn read_answer(&self, url: &Url, mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let too_large = || ClientError::InvalidResponse {
            url: url.clone(),
            reason: format!("the answer is larger than {} KiB, which no Bitbucket answer is", MAX_ANSWER_BYTES / 1024),
        };
        if response.content_length().is_some_and(|length| length > MAX_ANSWER_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(url, e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Run `attempt` until it succeeds, fails for good, or the attempts are used up.
    pub(crate) async fn retried<T, Fut>(
        &self,
        what: &'static str,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry_base_delay)
            .with_max_delay(self.retry_base_delay.saturating_mul(32))
            .with_max_times(self.retry_attempts.saturating_sub(1) as usize)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(ClientError::is_retryable)
            .notify(|error, delay| tracing::warn!("{what} failed ({error}); retrying in {delay:?}"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> Refusal {
        read_refusal(body.as_bytes(), &["0123456789abcdef"])
    }

    #[test]
    fn html_is_recognised_by_type_or_first_byte() {
        assert!(is_html(Some("text/html;charset=UTF-8"), b"{}"));
        assert!(is_html(None, b"  \n<!DOCTYPE html>"));
        assert!(!is_html(Some("application/json"), b"{\"a\":1}"));
    }

    #[test]
    fn messages_are_joined_and_scrubbed() {
        let r = refusal(r#"{"errors":[{"message":"bad token 0123456789abcdef"},{"message":"again"}]}"#);
        assert_eq!(r.message.as_deref(), Some("bad token [REDACTED]; again"));
        assert!(refusal("<html>").message.is_none());
    }

    #[test]
    fn lock_holder_comes_from_owner_or_message() {
        let from_owner = refusal(r#"{"errors":[{"message":"x","owner":{"name":"bob","displayName":"Bob B"}}]}"#);
        assert_eq!(lock_holder(&from_owner), "Bob B (bob)");
        let from_message = refusal(r#"{"errors":[{"message":"The instance is locked for maintenance by carol."}]}"#);
        assert_eq!(lock_holder(&from_message), "carol");
        assert_eq!(lock_holder(&refusal("{}")), "");
    }

    #[test]
    fn token_refusals_depend_on_the_call() {
        let url = Url::parse("http://h/x").unwrap();
        let none = || Refusal { message: None, owner: None };
        let err = status_error(StatusCode::CONFLICT, url.clone(), Refusals::Token, none());
        assert!(matches!(err, ClientError::InvalidToken { status: 409, .. }));
        let err = status_error(StatusCode::CONFLICT, url.clone(), Refusals::Plain, none());
        assert!(matches!(err, ClientError::Server { status: 409, .. }));
        let err = status_error(StatusCode::NOT_FOUND, url, Refusals::Token, none());
        assert!(matches!(err, ClientError::NotFound { .. }));
    }
}
