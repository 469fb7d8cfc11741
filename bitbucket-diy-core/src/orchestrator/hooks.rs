//! User commands run at named points of a backup.

use std::fmt;

use serde::Serialize;

/// Where a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    /// After prepare, before the lock.
    BeforeLock,
    /// Right after a successful unlock.
    AfterUnlock,
    /// After the archive is written and retention ran.
    AfterArchive,
    /// When the run failed.
    OnFailure,
    /// At the end, whatever happened.
    Finally,
}

impl HookPoint {
    /// The configuration key.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeLock => "before_lock",
            HookPoint::AfterUnlock => "after_unlock",
            HookPoint::AfterArchive => "after_archive",
            HookPoint::OnFailure => "on_failure",
            HookPoint::Finally => "finally",
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
