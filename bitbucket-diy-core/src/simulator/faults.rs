//! Fault injection: what can go wrong, and which request it hits.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// One call of the maintenance API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `GET /rest/api/1.0/application-properties`.
    ApplicationProperties,
    /// `GET /status`.
    Status,
    /// `POST /mvc/maintenance/lock`.
    Lock,
    /// `POST /mvc/admin/backups?external=true`.
    StartBackup,
    /// `GET /mvc/maintenance`.
    MaintenanceState,
    /// `POST /mvc/admin/backups/progress/client`.
    Progress,
    /// `POST /mvc/maintenance?token=<cancel token>`.
    CancelBackup,
    /// `DELETE /mvc/maintenance/lock`.
    Unlock,
}

impl Endpoint {
    /// A short kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ApplicationProperties => "application-properties",
            Endpoint::Status => "status",
            Endpoint::Lock => "lock",
            Endpoint::StartBackup => "start-backup",
            Endpoint::MaintenanceState => "maintenance-state",
            Endpoint::Progress => "progress",
            Endpoint::CancelBackup => "cancel-backup",
            Endpoint::Unlock => "unlock",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that goes wrong on purpose. Counted faults (`times`) wear off; the others stay until
/// [`Simulator::clear_faults`](crate::simulator::Simulator::clear_faults). Parses from and displays
/// as a short spec such as `server-error:lock:2` (see [`FaultSpecError`](crate::simulator::FaultSpecError)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `db-state` and `scm-state` stay `DRAINING`.
    NeverDrain,
    /// `db-state` drains, `scm-state` stays `DRAINING` (catches clients that test one field twice).
    OnlyDatabaseDrains,
    /// The Nth request (1-based, counting every request) answers 500 without being processed.
    ServerErrorOnRequest(u64),
    /// The next `times` calls of `endpoint` answer 500 with a JSON error body, unprocessed.
    ServerError {
        /// Which call.
        endpoint: Endpoint,
        /// How many times.
        times: u32,
    },
    /// The next `times` calls of `endpoint` get their connection closed without an answer, before
    /// the simulator processes them (a proxy or network failure).
    DropConnection {
        /// Which call.
        endpoint: Endpoint,
        /// How many times.
        times: u32,
    },
    /// The next `times` calls of `endpoint` are processed, then their connection is closed without
    /// an answer: the change happened but the client never hears of it.
    AnswerLost {
        /// Which call.
        endpoint: Endpoint,
        /// How many times.
        times: u32,
    },
    /// Calls of `endpoint` (all calls when `None`) wait `delay` before being processed.
    Slow {
        /// Which call, or all.
        endpoint: Option<Endpoint>,
        /// The added delay.
        delay: Duration,
    },
    /// Calls of `endpoint` (all when `None`) get a 200 HTML login page, unprocessed (an SSO proxy
    /// or a wrong context path in front of Bitbucket).
    HtmlInsteadOfJson {
        /// Which call, or all.
        endpoint: Option<Endpoint>,
    },
    /// Calls of `endpoint` are processed, but a successful answer's body is truncated JSON.
    MalformedJson {
        /// Which call.
        endpoint: Endpoint,
    },
    /// The backup task goes `FAILED` half-way through the drain (states back to `AVAILABLE`).
    TaskFails,
    /// The next `times` unlock calls answer 500, unprocessed.
    RejectUnlock {
        /// How many times.
        times: u32,
    },
    /// Someone else holds the maintenance lock (with a token we never see): `/status` says
    /// `MAINTENANCE` and lock attempts are refused, until the fault is cleared.
    LockedBy {
        /// The holder's user name.
        owner: String,
    },
}

/// What a fault does instead of processing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intercept {
    /// Answer 500 with a JSON error body.
    ServerError,
    /// Close the connection without an answer.
    Drop,
    /// Answer 200 with an HTML login page.
    Html,
}

/// The faults the drain reads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DrainFaults {
    pub(crate) never_drain: bool,
    pub(crate) only_database_drains: bool,
    pub(crate) task_fails: bool,
}

/// The active faults.
#[derive(Debug, Default)]
pub(crate) struct FaultSet {
    faults: Vec<Fault>,
}

fn matches(filter: Option<Endpoint>, endpoint: Option<Endpoint>) -> bool {
    filter.is_none() || filter == endpoint
}

impl FaultSet {
    pub(crate) fn add(&mut self, fault: Fault) {
        // "The next 0 calls" are no calls: such a fault would otherwise fire once.
        let is_spent = matches!(
            fault,
            Fault::ServerError { times: 0, .. }
                | Fault::DropConnection { times: 0, .. }
                | Fault::AnswerLost { times: 0, .. }
                | Fault::RejectUnlock { times: 0 }
        );
        if !is_spent {
            self.faults.push(fault);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.faults.clear();
    }

    /// The longest delay that applies to this call.
    pub(crate) fn slow_delay(&self, endpoint: Option<Endpoint>) -> Option<Duration> {
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Slow { endpoint: filter, delay } if matches(*filter, endpoint) => Some(*delay),
                _ => None,
            })
            .max()
    }

    /// The fault that answers request number `request_no` instead of the simulator, if any.
    /// Counted faults are used up here.
    pub(crate) fn intercept(&mut self, request_no: u64, endpoint: Option<Endpoint>) -> Option<(Intercept, String)> {
        let position = self.faults.iter().position(|f| match f {
            Fault::ServerErrorOnRequest(n) => *n == request_no,
            Fault::DropConnection { endpoint: e, .. } | Fault::ServerError { endpoint: e, .. } => Some(*e) == endpoint,
            Fault::HtmlInsteadOfJson { endpoint: filter } => matches(*filter, endpoint),
            Fault::RejectUnlock { .. } => endpoint == Some(Endpoint::Unlock),
            _ => false,
        })?;
        let fault = &self.faults[position];
        let description = fault.to_string();
        let intercept = match fault {
            Fault::DropConnection { .. } => Intercept::Drop,
            Fault::HtmlInsteadOfJson { .. } => Intercept::Html,
            _ => Intercept::ServerError,
        };
        self.use_up(position);
        Some((intercept, description))
    }

    /// Whether this processed call loses its answer (used up here).
    pub(crate) fn answer_lost(&mut self, endpoint: Option<Endpoint>) -> bool {
        let position =
            self.faults.iter().position(|f| matches!(f, Fault::AnswerLost { endpoint: e, .. } if Some(*e) == endpoint));
        match position {
            Some(position) => {
                self.use_up(position);
                true
            }
            None => false,
        }
    }

    /// Whether a successful answer to this call gets a truncated body.
    pub(crate) fn malformed_json(&self, endpoint: Option<Endpoint>) -> bool {
        self.faults.iter().any(|f| matches!(f, Fault::MalformedJson { endpoint: e } if Some(*e) == endpoint))
    }

    pub(crate) fn drain_faults(&self) -> DrainFaults {
        DrainFaults {
            never_drain: self.faults.contains(&Fault::NeverDrain),
            only_database_drains: self.faults.contains(&Fault::OnlyDatabaseDrains),
            task_fails: self.faults.contains(&Fault::TaskFails),
        }
    }

    /// The foreign lock holder, if a [`Fault::LockedBy`] is active.
    pub(crate) fn locked_by(&self) -> Option<&str> {
        self.faults.iter().find_map(|f| match f {
            Fault::LockedBy { owner } => Some(owner.as_str()),
            _ => None,
        })
    }

    /// Count one use of a counted fault; one-shot and exhausted faults go away.
    fn use_up(&mut self, position: usize) {
        let exhausted = match &mut self.faults[position] {
            Fault::ServerError { times, .. }
            | Fault::DropConnection { times, .. }
            | Fault::AnswerLost { times, .. }
            | Fault::RejectUnlock { times } => {
                *times = times.saturating_sub(1);
                *times == 0
            }
            Fault::ServerErrorOnRequest(_) => true,
            _ => false,
        };
        if exhausted {
            self.faults.remove(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_wear_off() {
        let mut faults = FaultSet::default();
        faults.add(Fault::ServerError { endpoint: Endpoint::Status, times: 2 });
        assert_eq!(faults.intercept(1, Some(Endpoint::Lock)), None);
        assert_eq!(faults.intercept(2, Some(Endpoint::Status)).map(|i| i.0), Some(Intercept::ServerError));
        assert_eq!(faults.intercept(3, Some(Endpoint::Status)).map(|i| i.0), Some(Intercept::ServerError));
        assert_eq!(faults.intercept(4, Some(Endpoint::Status)), None);
    }

    #[test]
    fn nth_request_fault_hits_only_that_request() {
        let mut faults = FaultSet::default();
        faults.add(Fault::ServerErrorOnRequest(3));
        assert!(faults.intercept(2, None).is_none());
        assert!(faults.intercept(3, Some(Endpoint::Lock)).is_some());
        assert!(faults.intercept(3, Some(Endpoint::Lock)).is_none());
    }

    #[test]
    fn zero_times_never_fires() {
        let mut faults = FaultSet::default();
        faults.add(Fault::RejectUnlock { times: 0 });
        assert!(faults.intercept(1, Some(Endpoint::Unlock)).is_none());
    }
}
