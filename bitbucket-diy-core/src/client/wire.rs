//! What Bitbucket sends, as typed values. Unknown enum values are kept, never a parse error.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::client::CancelToken;

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// The value as Bitbucket writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from(s.as_str()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

open_enum!(
    /// `.state` of `GET /status`.
    InstanceState {
        /// Serving requests.
        Running = "RUNNING",
        /// Locked for maintenance (a backup is running).
        Maintenance = "MAINTENANCE",
        /// Installed, setup not finished.
        FirstRun = "FIRST_RUN",
        /// Starting up.
        Starting = "STARTING",
        /// Shutting down.
        Stopping = "STOPPING",
        /// Failed to start.
        Error = "ERROR",
    }
);

open_enum!(
    /// `.task.state` of `GET /mvc/maintenance`.
    TaskState {
        /// The backup task is alive (the only value public clients rely on).
        Running = "RUNNING",
        /// Finished after progress 100.
        Successful = "SUCCESSFUL",
        /// Cancelled with the cancel token.
        Canceled = "CANCELED",
        /// The server gave up.
        Failed = "FAILED",
        /// No task (our reading of a state without a `task` object).
        None = "NONE",
    }
);

open_enum!(
    /// `db-state` and `scm-state` of `GET /mvc/maintenance`.
    DrainState {
        /// Connections open as usual.
        Available = "AVAILABLE",
        /// Closing connections.
        Draining = "DRAINING",
        /// Closed and latched: safe to copy.
        Drained = "DRAINED",
    }
);

/// An id Bitbucket may send as a string or a number (undocumented), kept as text.
pub(crate) fn id_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// `GET /rest/api/1.0/application-properties`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationProperties {
    /// e.g. `"8.9.0"`.
    pub version: String,
    /// Build number.
    #[serde(default)]
    pub build_number: Option<String>,
    /// Build date.
    #[serde(default)]
    pub build_date: Option<String>,
    /// Product name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The instance's state; unknown values mean "not running".
    pub state: InstanceState,
}

impl InstanceStatus {
    /// Whether the instance serves users.
    pub fn is_running(&self) -> bool {
        self.state == InstanceState::Running
    }
}

/// Who holds the maintenance lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockOwner {
    /// Human name.
    #[serde(default)]
    pub display_name: String,
    /// User name.
    #[serde(default)]
    pub name: String,
}

impl fmt::Display for LockOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.display_name.is_empty(), self.name.is_empty()) {
            (false, false) => write!(f, "{} ({})", self.display_name, self.name),
            (false, true) => f.write_str(&self.display_name),
            (true, false) => f.write_str(&self.name),
            (true, true) => f.write_str("unknown user"),
        }
    }
}

/// Progress of the server-side task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProgress {
    /// e.g. "Closing connections to the current database".
    #[serde(default)]
    pub message: String,
    /// 0–100.
    #[serde(default)]
    pub percentage: u8,
}

/// `.task` of `GET /mvc/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceTask {
    /// Task id.
    #[serde(default, deserialize_with = "id_string_or_number")]
    pub id: Option<String>,
    /// Task state.
    pub state: TaskState,
    /// Task progress.
    #[serde(default)]
    pub progress: Option<TaskProgress>,
}

/// `GET /mvc/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// The backup task, absent when none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<MaintenanceTask>,
    /// Database drain state.
    #[serde(rename = "db-state")]
    pub db_state: DrainState,
    /// SCM (filesystem) drain state.
    #[serde(rename = "scm-state")]
    pub scm_state: DrainState,
}

impl MaintenanceState {
    /// Both states are `DRAINED`. (A public client once tested `db-state` twice; we test both.)
    pub fn is_drained(&self) -> bool {
        self.db_state == DrainState::Drained && self.scm_state == DrainState::Drained
    }

    /// The task state, [`TaskState::None`] when there is no task.
    pub fn task_state(&self) -> TaskState {
        self.task.as_ref().map_or(TaskState::None, |t| t.state.clone())
    }
}

/// What `POST /mvc/admin/backups?external=true` returns.
#[derive(Debug, Clone)]
pub struct BackupTask {
    /// Cancels the server-side task (does not unlock).
    pub cancel_token: CancelToken,
    /// Task id.
    pub id: Option<String>,
    /// Task progress.
    pub progress: Option<TaskProgress>,
}
