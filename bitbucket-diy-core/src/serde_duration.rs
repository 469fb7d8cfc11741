//! `Duration` as fractional seconds in JSON and as friendly strings ("30s", "10m") in TOML.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serialize as seconds (f64).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Deserialize from seconds (a number).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// Friendly durations for configuration files: `"90s"`, `"10m"`, `"1h 30m"`, or a number of seconds.
pub mod friendly {
    use super::*;

    /// Serialize as a friendly string such as `"1m 30s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        match jiff::SignedDuration::try_from(*d) {
            Ok(sd) => s.serialize_str(&format!("{sd:#}")),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }

    /// Deserialize from a friendly string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    /// Parse `"30s"`, `"10m"`, `"1h 30m"`, `"250ms"`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let sd: jiff::SignedDuration =
            text.trim().parse().map_err(|e| format!("`{text}` is not a duration such as \"30s\" or \"10m\": {e}"))?;
        Duration::try_from(sd).map_err(|_| format!("`{text}` must not be negative"))
    }
}
