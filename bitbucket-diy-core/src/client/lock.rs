//! The maintenance lock as a guard, and the proof that the instance is drained.

use std::time::{Duration, Instant};

use crate::client::{ClientError, DrainState, LockOwner, MaintenanceClient, UnlockToken};
use crate::error::ManualCommand;

/// Proof that the instance is quiet: both `db-state` and `scm-state` were `DRAINED` (or, in
/// zero-downtime mode, that the strategies promise atomic snapshots). Only
/// [`MaintenanceClient::wait_drained`] and the orchestrator make one, so a consistent step cannot
/// be called too early.
#[derive(Debug, Clone)]
pub struct Drained {
    at: Instant,
    waited: Duration,
    zero_downtime: bool,
}

impl Drained {
    pub(crate) fn after_wait(waited: Duration) -> Self {
        Self { at: Instant::now(), waited, zero_downtime: false }
    }

    pub(crate) fn zero_downtime() -> Self {
        Self { at: Instant::now(), waited: Duration::ZERO, zero_downtime: true }
    }

    /// A proof for tests of strategies outside the orchestrator.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_testing() -> Self {
        Self::after_wait(Duration::ZERO)
    }

    /// When the drain was observed.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// How long Bitbucket took to drain.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// True when no lock was taken (zero-downtime mode).
    pub fn is_zero_downtime(&self) -> bool {
        self.zero_downtime
    }

    /// The drain states this proof stands for.
    pub fn states(&self) -> (DrainState, DrainState) {
        (DrainState::Drained, DrainState::Drained)
    }
}

/// The instance is locked for maintenance until [`MaintenanceLock::release`] is awaited.
///
/// `Drop` cannot await, so dropping a lock unreleased (a panic, a forgotten release) logs an error
/// and makes one best-effort unlock attempt on the current runtime; callers release explicitly on
/// every path.
#[must_use = "Bitbucket stays locked until `release().await`"]
#[derive(Debug)]
pub struct MaintenanceLock {
    client: MaintenanceClient,
    token: Option<UnlockToken>,
    owner: LockOwner,
    locked_at: Instant,
}

impl MaintenanceLock {
    pub(crate) fn new(client: MaintenanceClient, token: UnlockToken, owner: LockOwner, locked_at: Instant) -> Self {
        Self { client, token: Some(token), owner, locked_at }
    }

    /// The unlock token (also authorises progress reports).
    pub fn token(&self) -> &UnlockToken {
        // Present until release or into_token consume self.
        self.token.as_ref().unwrap_or_else(|| unreachable!("token taken from a live lock"))
    }

    /// Who Bitbucket says holds the lock.
    pub fn owner(&self) -> &LockOwner {
        &self.owner
    }

    /// When the lock was requested (the lock window starts here).
    pub fn locked_at(&self) -> Instant {
        self.locked_at
    }

    /// The command a human runs to unlock by hand.
    pub fn unlock_command(&self) -> ManualCommand {
        self.client.unlock_command(self.token())
    }

    /// Unlock (one attempt). On failure the lock is handed back so the caller can retry or report.
    pub async fn release(mut self) -> Result<Duration, (Self, ClientError)> {
        let Some(token) = self.token.take() else { return Ok(self.locked_at.elapsed()) };
        match self.client.unlock(&token).await {
            Ok(()) => Ok(self.locked_at.elapsed()),
            Err(e) => {
                self.token = Some(token);
                Err((self, e))
            }
        }
    }

    /// Stop guarding: the caller takes responsibility for the token (e.g. `--keep-locked` tools).
    pub fn into_token(mut self) -> UnlockToken {
        self.token.take().unwrap_or_else(|| unreachable!("token taken from a live lock"))
    }
}

impl Drop for MaintenanceLock {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else { return };
        tracing::error!("maintenance lock dropped without release; trying one best-effort unlock");
        let client = self.client.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = client.unlock(&token).await {
                        // The one place a token reaches a log: without it nobody can unlock.
                        tracing::error!(
                            "BITBUCKET IS STILL LOCKED ({e}); unlock it with: {}",
                            client.unlock_command(&token).expose()
                        );
                    }
                });
            }
            Err(_) => tracing::error!(
                "BITBUCKET IS STILL LOCKED (no runtime to unlock from); unlock it with: {}",
                client.unlock_command(&token).expose()
            ),
        }
    }
}
