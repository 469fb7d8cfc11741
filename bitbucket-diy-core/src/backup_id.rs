//! Backup identifiers: `<prefix><UTC timestamp>`, safe as file names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Identifies one backup: names its archive (`<id>.tar.zst`) and appears in its manifest.
///
/// Made of ASCII letters, digits, `.`, `_` and `-`, not starting with `.` or `-`, at most 100
/// characters, so it is safe as a file name on every system and in a shell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    /// `<prefix><YYYYMMDD-HHMMSS>` in UTC. UTC rather than the reference scripts' local time:
    /// names then sort by age and never repeat an hour at a daylight-saving change.
    pub fn generate(prefix: &str, at: jiff::Timestamp) -> Result<Self, ConfigError> {
        let stamp = at.strftime("%Y%m%d-%H%M%S").to_string();
        format!("{prefix}{stamp}").parse()
    }

    /// The same id with a `-N` suffix, for two runs within one second.
    pub fn with_suffix(&self, n: u32) -> Self {
        Self(format!("{}-{n}", self.0))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackupId {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 100
            && !s.starts_with(['.', '-'])
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(ConfigError::invalid(
                "backup id",
                format!("`{s}` must be 1-100 ASCII letters, digits, '.', '_' or '-', not starting with '.' or '-'"),
            ))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_utc_and_valid() {
        let at: jiff::Timestamp = "2026-12-04T18:51:23Z".parse().unwrap();
        let id = BackupId::generate("bitbucket-", at).unwrap();
        assert_eq!(id.as_str(), "bitbucket-20261204-185123");
        assert_eq!(id.with_suffix(2).as_str(), "bitbucket-20261204-185123-2");
    }

    #[test]
    fn unsafe_ids_are_refused() {
        for bad in ["", "../x", "a/b", "-rf", ".hidden", "a b", "x;rm"] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad:?} accepted");
        }
    }
}
