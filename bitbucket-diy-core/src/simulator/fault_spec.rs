//! Faults as short strings, so the CLI (`simulate --fault …`) and Python share one syntax:
//!
//! | spec | fault |
//! |---|---|
//! | `never-drain`, `only-database-drains`, `task-fails` | the unit faults |
//! | `server-error-on-request:N` | [`Fault::ServerErrorOnRequest`] |
//! | `server-error:ENDPOINT[:TIMES]`, `drop-connection:…`, `answer-lost:…` | counted faults (TIMES 1 by default) |
//! | `slow:DURATION[:ENDPOINT]` | [`Fault::Slow`], e.g. `slow:2s:lock` |
//! | `html[:ENDPOINT]` | [`Fault::HtmlInsteadOfJson`] |
//! | `malformed-json:ENDPOINT` | [`Fault::MalformedJson`] |
//! | `reject-unlock[:TIMES]` | [`Fault::RejectUnlock`] |
//! | `locked-by:OWNER` | [`Fault::LockedBy`] |
//!
//! Endpoints are the kebab-case names of [`Endpoint::as_str`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::serde_duration::friendly;
use crate::simulator::{Endpoint, Fault};

/// A fault or endpoint spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulator fault `{spec}`: {reason}")]
pub struct FaultSpecError {
    /// The text given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

const ENDPOINTS: [Endpoint; 8] = [
    Endpoint::ApplicationProperties,
    Endpoint::Status,
    Endpoint::Lock,
    Endpoint::StartBackup,
    Endpoint::MaintenanceState,
    Endpoint::Progress,
    Endpoint::CancelBackup,
    Endpoint::Unlock,
];

impl FromStr for Endpoint {
    type Err = FaultSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ENDPOINTS.into_iter().find(|e| e.as_str() == text).ok_or_else(|| FaultSpecError {
            spec: text.to_owned(),
            reason: format!(
                "unknown endpoint; one of: {}",
                ENDPOINTS.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// The argument a fault spec needs, or an error naming it.
fn required<'a>(arg: Option<&'a str>, spec: &str, name: &str, what: &str) -> Result<&'a str, FaultSpecError> {
    arg.ok_or_else(|| FaultSpecError { spec: spec.to_owned(), reason: format!("`{name}` needs {what}") })
}

impl FromStr for Fault {
    type Err = FaultSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| FaultSpecError { spec: spec.to_owned(), reason };
        let endpoint = |text: &str| text.parse::<Endpoint>().map_err(|e| fail(e.reason));
        let number = |text: &str| text.parse::<u32>().map_err(|_| fail(format!("`{text}` is not a count")));
        let times = |text: Option<&str>| text.map_or(Ok(1), number);
        let (name, rest) = spec.trim().split_once(':').map_or((spec.trim(), None), |(n, r)| (n, Some(r)));
        let mut args = rest.map(|r| r.splitn(2, ':').collect::<Vec<_>>()).unwrap_or_default().into_iter();
        let (first, second) = (args.next(), args.next());
        let fault = match name {
            "never-drain" => Fault::NeverDrain,
            "only-database-drains" => Fault::OnlyDatabaseDrains,
            "task-fails" => Fault::TaskFails,
            "server-error-on-request" => {
                let n = required(first, spec, name, "a request number")?;
                Fault::ServerErrorOnRequest(n.parse().map_err(|_| fail(format!("`{n}` is not a request number")))?)
            }
            "server-error" => Fault::ServerError {
                endpoint: endpoint(required(first, spec, name, "an endpoint")?)?,
                times: times(second)?,
            },
            "drop-connection" => Fault::DropConnection {
                endpoint: endpoint(required(first, spec, name, "an endpoint")?)?,
                times: times(second)?,
            },
            "answer-lost" => Fault::AnswerLost {
                endpoint: endpoint(required(first, spec, name, "an endpoint")?)?,
                times: times(second)?,
            },
            "slow" => {
                let delay = friendly::parse(required(first, spec, name, "a duration such as 2s")?).map_err(fail)?;
                Fault::Slow { endpoint: second.map(endpoint).transpose()?, delay }
            }
            "html" => Fault::HtmlInsteadOfJson { endpoint: first.map(endpoint).transpose()? },
            "malformed-json" => {
                Fault::MalformedJson { endpoint: endpoint(required(first, spec, name, "an endpoint")?)? }
            }
            "reject-unlock" => Fault::RejectUnlock { times: times(first)? },
            "locked-by" => {
                let owner = rest.filter(|o| !o.is_empty()).ok_or_else(|| fail("`locked-by` needs an owner".into()))?;
                Fault::LockedBy { owner: owner.to_owned() }
            }
            _ => return Err(fail("unknown fault; see the simulator's documentation for the list".into())),
        };
        Ok(fault)
    }
}

fn fmt_delay(delay: Duration) -> String {
    if delay.subsec_nanos() == 0 { format!("{}s", delay.as_secs()) } else { format!("{}ms", delay.as_millis()) }
}

/// The spec syntax of this module, so `fault.to_string().parse()` gives the fault back.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::NeverDrain => f.write_str("never-drain"),
            Fault::OnlyDatabaseDrains => f.write_str("only-database-drains"),
            Fault::TaskFails => f.write_str("task-fails"),
            Fault::ServerErrorOnRequest(n) => write!(f, "server-error-on-request:{n}"),
            Fault::ServerError { endpoint, times } => write!(f, "server-error:{endpoint}:{times}"),
            Fault::DropConnection { endpoint, times } => write!(f, "drop-connection:{endpoint}:{times}"),
            Fault::AnswerLost { endpoint, times } => write!(f, "answer-lost:{endpoint}:{times}"),
            Fault::Slow { endpoint: Some(e), delay } => write!(f, "slow:{}:{e}", fmt_delay(*delay)),
            Fault::Slow { endpoint: None, delay } => write!(f, "slow:{}", fmt_delay(*delay)),
            Fault::HtmlInsteadOfJson { endpoint: Some(e) } => write!(f, "html:{e}"),
            Fault::HtmlInsteadOfJson { endpoint: None } => f.write_str("html"),
            Fault::MalformedJson { endpoint } => write!(f, "malformed-json:{endpoint}"),
            Fault::RejectUnlock { times } => write!(f, "reject-unlock:{times}"),
            Fault::LockedBy { owner } => write!(f, "locked-by:{owner}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_round_trips_through_its_spec() {
        let faults = [
            Fault::NeverDrain,
            Fault::OnlyDatabaseDrains,
            Fault::TaskFails,
            Fault::ServerErrorOnRequest(3),
            Fault::ServerError { endpoint: Endpoint::Status, times: 2 },
            Fault::DropConnection { endpoint: Endpoint::Lock, times: 1 },
            Fault::AnswerLost { endpoint: Endpoint::Unlock, times: 4 },
            Fault::Slow { endpoint: Some(Endpoint::MaintenanceState), delay: Duration::from_millis(250) },
            Fault::Slow { endpoint: None, delay: Duration::from_secs(2) },
            Fault::HtmlInsteadOfJson { endpoint: None },
            Fault::HtmlInsteadOfJson { endpoint: Some(Endpoint::ApplicationProperties) },
            Fault::MalformedJson { endpoint: Endpoint::StartBackup },
            Fault::RejectUnlock { times: 100 },
            Fault::LockedBy { owner: "Jane Admin: ops".into() },
        ];
        for fault in faults {
            let spec = fault.to_string();
            assert_eq!(spec.parse::<Fault>(), Ok(fault), "{spec}");
        }
    }

    #[test]
    fn short_forms_default_to_one_time() {
        assert_eq!("server-error:lock".parse(), Ok(Fault::ServerError { endpoint: Endpoint::Lock, times: 1 }));
        assert_eq!("reject-unlock".parse(), Ok(Fault::RejectUnlock { times: 1 }));
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (spec, expected) in [
            ("never-drains", "unknown fault"),
            ("server-error:locks", "unknown endpoint"),
            ("server-error", "needs an endpoint"),
            ("slow:fast", "not a duration"),
            ("reject-unlock:x", "not a count"),
            ("locked-by:", "needs an owner"),
        ] {
            let err = spec.parse::<Fault>().unwrap_err();
            assert!(err.to_string().contains(expected), "{spec}: {err}");
        }
    }
}
