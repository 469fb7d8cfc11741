//! What the simulator saw and did, for assertions and demos.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One entry of the simulator's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimEvent {
    /// Since the simulator started (monotonic).
    pub at: Duration,
    /// Wall-clock time.
    pub wall: SystemTime,
    /// What happened.
    pub kind: SimEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SimEventKind {
    /// A request was answered.
    Request {
        /// HTTP method.
        method: String,
        /// Request path, context path included, query string never.
        path: String,
        /// Status sent.
        status: u16,
    },
    /// A connection was closed instead of answering (a fault).
    ConnectionDropped {
        /// HTTP method.
        method: String,
        /// Request path, without the query string.
        path: String,
    },
    /// A fault changed an answer.
    FaultTriggered {
        /// The fault, in its spec syntax (`server-error:lock:1`).
        fault: String,
    },
    /// The instance was locked for maintenance.
    Locked {
        /// The user who locked it.
        owner: String,
    },
    /// A lock attempt was refused because the instance is already locked.
    LockRefused,
    /// The backup task started; draining begins.
    BackupStarted,
    /// Both `db-state` and `scm-state` reached `DRAINED`.
    Drained,
    /// The client reported its progress.
    ProgressReported {
        /// 0–100.
        percentage: u8,
    },
    /// The backup task was cancelled (cancel token, or unlock while it ran).
    BackupCancelled,
    /// The backup task ended.
    TaskFinished {
        /// `SUCCESSFUL`, `CANCELED` or `FAILED`.
        state: String,
    },
    /// The maintenance lock was released.
    Unlocked,
}

/// The simulator's state at one moment. States are the strings Bitbucket sends (`RUNNING`,
/// `DRAINED`…). `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SimState {
    /// Whether the instance is locked for maintenance (by the client or a foreign holder).
    pub locked: bool,
    /// The lock holder's user name.
    pub owner: Option<String>,
    /// The unlock token of the current lock (the simulator knows it; tests check that a recovery
    /// message carries it). `None` when unlocked or locked by a foreign holder.
    pub unlock_token: Option<String>,
    /// The cancel token of the current (or last) backup task.
    pub cancel_token: Option<String>,
    /// The current backup task's state, or the last one's after unlock; `None` if no backup ran
    /// since the last lock.
    pub task_state: Option<String>,
    /// `db-state` as `GET /mvc/maintenance` reports it.
    pub db_state: String,
    /// `scm-state` as `GET /mvc/maintenance` reports it.
    pub scm_state: String,
    /// Percentages the client reported for the current (or last) backup, in order.
    pub progress: Vec<u8>,
    /// Requests received so far, all endpoints and faults included.
    pub request_count: u64,
    /// Simulated writes still in flight (see [`Simulator::begin_write`](crate::simulator::Simulator::begin_write)).
    pub writes_in_flight: usize,
}

impl fmt::Debug for SimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |token: &Option<String>| token.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("SimState")
            .field("locked", &self.locked)
            .field("owner", &self.owner)
            .field("unlock_token", &redacted(&self.unlock_token))
            .field("cancel_token", &redacted(&self.cancel_token))
            .field("task_state", &self.task_state)
            .field("db_state", &self.db_state)
            .field("scm_state", &self.scm_state)
            .field("progress", &self.progress)
            .field("request_count", &self.request_count)
            .field("writes_in_flight", &self.writes_in_flight)
            .finish()
    }
}
