//! A typed async client for Bitbucket's maintenance and backup REST API
//! (see `docs/how-it-works.md` and the vendor's API notes).
//!
//! Retries: the idempotent reads (`application-properties`, `status`, `GET /mvc/maintenance`) and
//! the progress report (re-posting a percentage changes nothing) are retried with exponential
//! backoff on transport errors, timeouts, 5xx and 429 ([`ClientError::is_retryable`]; attempts and
//! first delay from [`MaintenanceClientBuilder::retries`]). `lock` and `start_backup` are **not**
//! retried: if the first request reached Bitbucket and only its answer was lost, a retry would be
//! refused (already locked) and the token we need would be gone. `unlock` and `cancel_backup` make
//! one attempt each: they are retried by the orchestrator, which knows how long it may keep trying
//! and reports a left-locked instance.
//!
//! Answers: any 2xx counts where Bitbucket documents 202. 401 is [`ClientError::Unauthorized`],
//! 403 [`ClientError::Forbidden`], 404 — or an HTML page where the API was expected, whatever its
//! status, e.g. a login page or a wrong context path — [`ClientError::NotFound`]. A refused lock
//! (409) is [`ClientError::AlreadyLocked`]; a 400, 409, 410 or 422 on a call that carries a token
//! is [`ClientError::InvalidToken`]. URLs in errors and logs never carry their query string, where
//! the tokens travel.

mod builder;
mod calls;
mod drain;
mod error;
mod http;
mod lock;
mod tokens;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use url::Url;

pub use builder::MaintenanceClientBuilder;
pub use error::ClientError;
pub use lock::{Drained, MaintenanceLock};
pub use tokens::{CancelToken, UnlockToken};
pub use wire::{
    ApplicationProperties, BackupTask, DrainState, InstanceState, InstanceStatus, LockOwner, MaintenanceState,
    MaintenanceTask, TaskProgress, TaskState,
};

use crate::error::ManualCommand;

/// How to wait for the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOptions {
    /// Interval between polls (never a busy loop).
    pub poll_interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self { poll_interval: Duration::from_millis(500), timeout: Duration::from_secs(30 * 60) }
    }
}

/// Talks to one Bitbucket instance. Cheap to clone (shares one connection pool).
///
/// Most callers let [`crate::orchestrator::BackupOrchestrator`] drive it. Scripts that drive
/// maintenance mode themselves (around a storage snapshot, say) call it step by step, and must
/// release the [`MaintenanceLock`] on every path. Here against the simulator:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bitbucket_diy_core::client::{DrainOptions, MaintenanceClient};
/// use bitbucket_diy_core::simulator::{Simulator, SimulatorConfig};
/// use tokio_util::sync::CancellationToken;
///
/// # let sim = Simulator::start(SimulatorConfig::default().with_context_path("/bitbucket")).await?;
/// # let (url, password) = (sim.url().to_string(), sim.password().to_owned());
/// // url = "https://bitbucket.example.com/bitbucket" for a real instance
/// let client = MaintenanceClient::builder(url).credentials("admin", password).build()?;
/// println!("Bitbucket {}", client.application_properties().await?.version);
///
/// let lock = client.lock().await?;
/// let task = client.start_backup(lock.token()).await?;
/// let drained = client
///     .wait_drained(lock.token(), &DrainOptions::default(), &CancellationToken::new(), |_| {})
///     .await?;
/// // … copy the database and the home while drained …
/// client.report_progress(lock.token(), 100).await?;
/// let lock_window = lock.release().await.map_err(|(_lock, e)| e)?;
/// println!("drained after {:?}, locked for {lock_window:?}", drained.waited());
/// # let _ = task;
/// # assert!(!sim.is_locked());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MaintenanceClient {
    inner: Arc<builder::Inner>,
}

impl std::fmt::Debug for MaintenanceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaintenanceClient")
            .field("base_url", &self.inner.base_url.as_str())
            .field("user", &self.inner.user)
            .finish_non_exhaustive()
    }
}

impl MaintenanceClient {
    /// Start building a client for the instance at `base_url` (context path included).
    pub fn builder(base_url: impl Into<String>) -> MaintenanceClientBuilder {
        MaintenanceClientBuilder::new(base_url)
    }

    /// The base URL, context path included.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// The user the client authenticates as.
    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// `GET /rest/api/1.0/application-properties` (no auth needed). Retried.
    pub async fn application_properties(&self) -> Result<ApplicationProperties, ClientError> {
        self.inner.application_properties().await
    }

    /// `GET /status` (no auth needed). Retried.
    pub async fn status(&self) -> Result<InstanceStatus, ClientError> {
        self.inner.status().await
    }

    /// `POST /mvc/maintenance/lock`. Not retried.
    pub async fn lock(&self) -> Result<MaintenanceLock, ClientError> {
        // Timed from before the request: the lock window we report is never shorter than the
        // one users saw.
        let requested_at = std::time::Instant::now();
        let (token, owner) = self.inner.lock().await?;
        Ok(MaintenanceLock::new(self.clone(), token, owner, requested_at))
    }

    /// `POST /mvc/admin/backups?external=true` with the maintenance token. Not retried.
    pub async fn start_backup(&self, token: &UnlockToken) -> Result<BackupTask, ClientError> {
        self.inner.start_backup(token).await
    }

    /// `GET /mvc/maintenance` with the maintenance token. Retried.
    pub async fn maintenance_state(&self, token: &UnlockToken) -> Result<MaintenanceState, ClientError> {
        self.inner.maintenance_state(token).await
    }

    /// Poll `GET /mvc/maintenance` every `options.poll_interval` until both `db-state` and
    /// `scm-state` are `DRAINED`. Fails with [`ClientError::DrainFailed`] as soon as the task is
    /// anything but `RUNNING`, [`ClientError::DrainTimeout`] after `options.timeout`, and
    /// [`ClientError::Cancelled`] when `cancel` fires. `on_poll` sees every state read.
    pub async fn wait_drained(
        &self,
        token: &UnlockToken,
        options: &DrainOptions,
        cancel: &CancellationToken,
        on_poll: impl Fn(&MaintenanceState) + Send,
    ) -> Result<Drained, ClientError> {
        self.inner.wait_drained(token, options, cancel, on_poll).await
    }

    /// `POST /mvc/admin/backups/progress/client?token=<unlock token>&percentage=N`. Retried.
    pub async fn report_progress(&self, token: &UnlockToken, percentage: u8) -> Result<(), ClientError> {
        self.inner.report_progress(token, percentage).await
    }

    /// `POST /mvc/maintenance?token=<cancel token>`: ends the backup task, keeps the lock.
    pub async fn cancel_backup(&self, token: &CancelToken) -> Result<(), ClientError> {
        self.inner.cancel_backup(token).await
    }

    /// `DELETE /mvc/maintenance/lock?token=<unlock token>`.
    pub async fn unlock(&self, token: &UnlockToken) -> Result<(), ClientError> {
        self.inner.unlock(token).await
    }

    /// The command a human runs to unlock by hand (token included: keep it off logs). The token
    /// travels in the environment of `bitbucket-diy unlock`, where other users cannot see it in
    /// `ps`; the curl alternative is for hosts without bitbucket-diy.
    pub fn unlock_command(&self, token: &UnlockToken) -> ManualCommand {
        let url = self.inner.endpoint("mvc/maintenance/lock");
        ManualCommand::new(format!(
            "BITBUCKET_DIY_UNLOCK_TOKEN={token} bitbucket-diy unlock --url {base} --user {user}\n    \
             (or: curl -u {user} -X DELETE {curl_url})",
            token = token.expose_secret(),
            base = shell_quote(self.inner.base_url.as_str()),
            user = shell_quote(&self.inner.user),
            curl_url = shell_quote(&format!("{url}?token={}", token.expose_secret())),
        ))
    }
}

/// `text` as one shell word: single-quoted, with embedded single quotes escaped.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
