//! How a simulated instance is set up.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::simulator::Fault;

/// A user the simulator knows. Passwords are fake but still kept out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SimUser {
    /// User name (basic auth).
    pub name: String,
    /// Password (basic auth).
    pub password: String,
}

impl SimUser {
    /// A user with this name and password.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Self { name: name.into(), password: password.into() }
    }
}

impl fmt::Debug for SimUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUser").field("name", &self.name).field("password", &"[REDACTED]").finish()
    }
}

/// Settings of a [`Simulator`](crate::simulator::Simulator).
///
/// ```
/// use std::time::Duration;
/// use bitbucket_diy_core::simulator::{Fault, SimulatorConfig};
///
/// let config = SimulatorConfig::default()
///     .with_context_path("/bitbucket")
///     .with_drain_delay(Duration::from_millis(20))
///     .with_non_admin_user("alice", "alice-password")
///     .with_fault(Fault::OnlyDatabaseDrains);
/// assert_eq!(config.context_path, "/bitbucket");
/// ```
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The system administrator every `/mvc` call must authenticate as.
    pub admin: SimUser,
    /// The administrator's display name (shown as the lock owner).
    pub admin_display_name: String,
    /// Users that authenticate but lack permission: their `/mvc` calls get 403.
    pub non_admin_users: Vec<SimUser>,
    /// Context path, e.g. `/bitbucket`; empty for none.
    pub context_path: String,
    /// What `application-properties` reports as `.version`.
    pub version: String,
    /// How long the database and the filesystem take to drain once the backup starts.
    pub drain_delay: Duration,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            admin: SimUser::new("admin", "admin"),
            admin_display_name: "Administrator".to_owned(),
            non_admin_users: Vec::new(),
            context_path: String::new(),
            version: "8.19.0".to_owned(),
            drain_delay: Duration::from_millis(200),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            faults: Vec::new(),
        }
    }
}

impl SimulatorConfig {
    /// The administrator's user name and password.
    pub fn with_admin(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.admin = SimUser::new(user, password);
        self
    }

    /// Add a user without system-admin permission (its `/mvc` calls get 403).
    pub fn with_non_admin_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.non_admin_users.push(SimUser::new(user, password));
        self
    }

    /// Serve under this context path (`/bitbucket`, `bitbucket/` and `/bitbucket/` are the same).
    pub fn with_context_path(mut self, context_path: impl Into<String>) -> Self {
        self.context_path = context_path.into();
        self
    }

    /// Report this version from `application-properties`.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// How long draining takes after the backup starts.
    pub fn with_drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Listen on this address (port 0: any free port).
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// Start with this fault active.
    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// The context path as served: empty, or `/segment(/segment)*` without a trailing slash.
    pub(crate) fn normalized_context_path(&self) -> std::io::Result<String> {
        let trimmed = self.context_path.trim_matches('/');
        if trimmed.chars().any(|c| matches!(c, '?' | '#' | ' ' | '\\')) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("context path {:?} may not contain '?', '#', '\\' or spaces", self.context_path),
            ));
        }
        Ok(if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_path_is_normalized() {
        let norm = |p: &str| SimulatorConfig::default().with_context_path(p).normalized_context_path().unwrap();
        assert_eq!(norm(""), "");
        assert_eq!(norm("/"), "");
        assert_eq!(norm("bitbucket/"), "/bitbucket");
        assert_eq!(norm("/a/b/"), "/a/b");
        assert!(SimulatorConfig::default().with_context_path("/a?b").normalized_context_path().is_err());
    }

    #[test]
    fn debug_hides_passwords() {
        let config = SimulatorConfig::default().with_admin("root", "s3cr3t-pw").with_non_admin_user("bob", "b0b-pw");
        let shown = format!("{config:?}");
        assert!(shown.contains("root"));
        assert!(!shown.contains("s3cr3t-pw") && !shown.contains("b0b-pw"), "{shown}");
    }
}
