//! Waiting until Bitbucket has drained.

use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::client::builder::Inner;
use crate::client::{ClientError, DrainOptions, DrainState, Drained, MaintenanceState, TaskState, UnlockToken};

/// Even a zero poll interval must not turn the wait into a busy loop.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

impl Inner {
    pub(crate) async fn wait_drained(
        &self,
        token: &UnlockToken,
        options: &DrainOptions,
        cancel: &CancellationToken,
        on_poll: impl Fn(&MaintenanceState) + Send,
    ) -> Result<Drained, ClientError> {
        let started = Instant::now();
        let deadline = started + options.timeout;
        let interval = options.poll_interval.max(MIN_POLL_INTERVAL);
        let unknown = || DrainState::Other("UNKNOWN".to_owned());
        let mut last_seen = (unknown(), unknown());
        let timed_out = |(db_state, scm_state): (DrainState, DrainState)| ClientError::DrainTimeout {
            after: options.timeout,
            db_state,
            scm_state,
        };
        loop {
            let state = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(ClientError::Cancelled),
                () = sleep_until(deadline) => return Err(timed_out(last_seen)),
                polled = self.maintenance_state(token) => polled?,
            };
            on_poll(&state);
            let task_state = state.task_state();
            if task_state != TaskState::Running {
                return Err(ClientError::DrainFailed {
                    task_state,
                    db_state: state.db_state,
                    scm_state: state.scm_state,
                });
            }
            // Both fields: a public client once tested db-state twice and copied a live home.
            if state.is_drained() {
                tracing::info!(waited = ?started.elapsed(), "Bitbucket drained");
                return Ok(Drained::after_wait(started.elapsed()));
            }
            tracing::debug!(db_state = %state.db_state, scm_state = %state.scm_state, "waiting for Bitbucket to drain");
            last_seen = (state.db_state, state.scm_state);
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(ClientError::Cancelled),
                () = sleep_until(deadline) => return Err(timed_out(last_seen)),
                () = sleep(interval) => {}
            }
        }
    }
}
