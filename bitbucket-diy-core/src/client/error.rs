//! Errors of the maintenance client.

use std::time::Duration;

use url::Url;

use crate::client::DrainState;
use crate::client::TaskState;
use crate::error::ErrorKind;

/// A call to Bitbucket failed. URLs in these errors never carry a token (query strings are
/// removed before an error is built).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client's own settings are invalid (bad URL, unreadable CA certificate).
    #[error("invalid client setting `{setting}`: {reason}")]
    InvalidConfig {
        /// Which setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// 401: wrong user or password.
    #[error("Bitbucket at {url} rejected the credentials (401): check the user and password")]
    Unauthorized {
        /// The URL called.
        url: Url,
    },
    /// 403: the user lacks system-admin permission.
    #[error("Bitbucket at {url} refused the request (403): the user needs system-admin permission{}", fmt_message(.message))]
    Forbidden {
        /// The URL called.
        url: Url,
        /// Bitbucket's message, if any.
        message: Option<String>,
    },
    /// The instance is already locked for maintenance.
    #[error("Bitbucket is already locked for maintenance{}{}", if .owner.is_empty() { String::new() } else { format!(" by {}", .owner) }, fmt_message(.message))]
    AlreadyLocked {
        /// Who holds the lock, when Bitbucket says.
        owner: String,
        /// Bitbucket's message, if any.
        message: Option<String>,
    },
    /// The unlock or cancel token was rejected.
    #[error("Bitbucket rejected the token at {url} ({status}){}", fmt_message(.message))]
    InvalidToken {
        /// The URL called (without the token).
        url: Url,
        /// HTTP status.
        status: u16,
        /// Bitbucket's message, if any.
        message: Option<String>,
    },
    /// 404, or an HTML page where JSON was expected: wrong base URL or context path.
    #[error("{url} is not Bitbucket's API ({detail}): check the base URL and its context path")]
    NotFound {
        /// The URL called.
        url: Url,
        /// What came back ("404", "an HTML page").
        detail: String,
    },
    /// 5xx or another unexpected status, with Bitbucket's message.
    #[error("Bitbucket at {url} answered {status}{}", fmt_message(.message))]
    Server {
        /// The URL called.
        url: Url,
        /// HTTP status.
        status: u16,
        /// Bitbucket's message, if any.
        message: Option<String>,
    },
    /// A 2xx answer we cannot read (malformed JSON, missing field).
    #[error("unreadable answer from {url}: {reason}")]
    InvalidResponse {
        /// The URL called.
        url: Url,
        /// What is wrong with it.
        reason: String,
    },
    /// The network failed.
    #[error("could not reach {url}: {}", causes(.source))]
    Transport {
        /// The URL called.
        url: Url,
        /// reqwest's error (its URL is stripped of query strings).
        #[source]
        source: reqwest::Error,
    },
    /// A request took longer than the request timeout.
    #[error("{url} did not answer within {after:?}")]
    Timeout {
        /// The URL called.
        url: Url,
        /// The timeout.
        after: Duration,
    },
    /// The backup task ended (or never ran) before both states drained.
    #[error(
        "Bitbucket's backup task is {task_state} before draining finished (db-state {db_state}, scm-state {scm_state})"
    )]
    DrainFailed {
        /// The task state seen.
        task_state: TaskState,
        /// The database drain state seen.
        db_state: DrainState,
        /// The SCM drain state seen.
        scm_state: DrainState,
    },
    /// The drain did not complete within the drain timeout.
    #[error("Bitbucket did not drain within {after:?} (db-state {db_state}, scm-state {scm_state})")]
    DrainTimeout {
        /// The timeout.
        after: Duration,
        /// The database drain state last seen.
        db_state: DrainState,
        /// The SCM drain state last seen.
        scm_state: DrainState,
    },
    /// The wait was cancelled through its cancellation handle.
    #[error("cancelled while waiting for Bitbucket")]
    Cancelled,
}

/// reqwest's own message is "error sending request"; the reason (refused, DNS, TLS…) is in its
/// sources. Each distinct message once, joined.
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn fmt_message(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

impl ClientError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::InvalidConfig { .. } => ErrorKind::Config,
            ClientError::Unauthorized { .. } => ErrorKind::Unauthorized,
            ClientError::Forbidden { .. } => ErrorKind::Forbidden,
            ClientError::AlreadyLocked { .. } => ErrorKind::AlreadyLocked,
            ClientError::InvalidToken { .. } => ErrorKind::InvalidToken,
            ClientError::NotFound { .. } => ErrorKind::NotFound,
            ClientError::Server { .. } => ErrorKind::Server,
            ClientError::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            ClientError::Transport { .. } => ErrorKind::Transport,
            ClientError::Timeout { .. } | ClientError::DrainTimeout { .. } => ErrorKind::Timeout,
            ClientError::DrainFailed { .. } => ErrorKind::DrainFailed,
            ClientError::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// Transient failures: the same request may succeed a moment later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Timeout { .. } => true,
            ClientError::Server { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
