//! Errors of database, filesystem and archive strategies.

use std::path::PathBuf;

use crate::error::ErrorKind;

/// A database or filesystem step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// An external tool is not installed or not on `PATH`.
    #[error("`{tool}` was not found on PATH: {hint}")]
    ToolMissing {
        /// The program name.
        tool: String,
        /// How to get it (e.g. the Debian package).
        hint: String,
    },
    /// An external command exited unsuccessfully.
    #[error("`{program}` failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    CommandFailed {
        /// The program (never its arguments: they may name hosts and users, never secrets, but we keep it short).
        program: String,
        /// Exit status or signal.
        status: String,
        /// The last lines of its standard error.
        stderr: String,
    },
    /// Local I/O failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing ("copying", "reading").
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A restore target already holds data.
    #[error("restore target {target} is not empty: {detail}")]
    TargetNotEmpty {
        /// The home folder or database name.
        target: String,
        /// What was found there.
        detail: String,
    },
    /// A setting of the strategy is invalid.
    #[error("{strategy}: setting `{setting}` is invalid: {reason}")]
    InvalidSetting {
        /// The strategy name.
        strategy: String,
        /// The setting.
        setting: String,
        /// Why.
        reason: String,
    },
    /// The backup being restored was not made by a compatible strategy.
    #[error("{strategy} cannot restore this backup: {reason}")]
    Incompatible {
        /// The strategy asked to restore.
        strategy: String,
        /// Why it cannot.
        reason: String,
    },
    /// The step was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A user-defined strategy failed (Rust or Python).
    #[error("{strategy}: {message}")]
    Custom {
        /// The strategy's name.
        strategy: String,
        /// Its message.
        message: String,
    },
}

impl StrategyError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StrategyError::ToolMissing { .. } => ErrorKind::ToolMissing,
            StrategyError::TargetNotEmpty { .. } => ErrorKind::RestoreTarget,
            StrategyError::InvalidSetting { .. } => ErrorKind::Config,
            StrategyError::Cancelled => ErrorKind::Cancelled,
            StrategyError::Io { .. } => ErrorKind::Io,
            _ => ErrorKind::Strategy,
        }
    }

    /// Shorthand for [`StrategyError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StrategyError::Io { action, path: path.into(), source }
    }
}

/// An archive is missing, unreadable, unsafe or does not match its manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Local I/O failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No archive matches the name.
    #[error("no backup named `{name}` in {}{}", folder.display(), if .available.is_empty() { String::new() } else { format!(" (available: {})", .available.join(", ")) })]
    NotFound {
        /// What was asked for.
        name: String,
        /// Where we looked.
        folder: PathBuf,
        /// What is there.
        available: Vec<String>,
    },
    /// The archive cannot be read (truncated, bad compression, bad tar).
    #[error("archive {} is corrupt: {reason}", archive.display())]
    Corrupt {
        /// Which archive.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An entry would write outside the target or is of a forbidden type.
    #[error("archive {} holds an unsafe entry `{entry}`: {reason}; nothing was written outside the target", archive.display())]
    UnsafeEntry {
        /// Which archive.
        archive: PathBuf,
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file's content does not match the manifest.
    #[error("archive {} fails verification: {entry}: {reason}", archive.display())]
    Mismatch {
        /// Which archive.
        archive: PathBuf,
        /// The entry.
        entry: String,
        /// Expected vs found.
        reason: String,
    },
    /// The archive has no manifest (not made by bitbucket-diy, or cut short).
    #[error("archive {} has no bitbucket-diy manifest (truncated, or not made by bitbucket-diy)", archive.display())]
    MissingManifest {
        /// Which archive.
        archive: PathBuf,
    },
    /// The manifest is of a format this version cannot read.
    #[error("archive {} uses manifest format {found}; this version reads up to {supported}", archive.display())]
    UnsupportedFormat {
        /// Which archive.
        archive: PathBuf,
        /// Found version.
        found: u32,
        /// Highest supported version.
        supported: u32,
    },
    /// The destination holds an archive of that name already.
    #[error("archive {} already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The final path.
        path: PathBuf,
    },
    /// The step was cancelled; no archive was left under its final name.
    #[error("cancelled")]
    Cancelled,
    /// A user-defined archive strategy failed.
    #[error("{strategy}: {message}")]
    Custom {
        /// The strategy's name.
        strategy: String,
        /// Its message.
        message: String,
    },
    /// An encrypted archive could not be decrypted: the identity holds none of its recipients'
    /// keys, or the encrypted stream is damaged.
    #[error("archive {} cannot be decrypted: {reason}", archive.display())]
    Decryption {
        /// Which archive.
        archive: PathBuf,
        /// Why (`no matching key`, a damaged header…).
        reason: String,
    },
    /// A key needed for this archive was not given: an identity to read an encrypted archive, or
    /// recipients to write one.
    #[error("archive {}: {reason}", archive.display())]
    KeyMissing {
        /// Which archive.
        archive: PathBuf,
        /// What is missing and how to give it.
        reason: String,
    },
    /// The object store failed (after its retries) or refused the request.
    #[error("{action} {location}: {source}")]
    Remote {
        /// What we were doing ("uploading", "listing").
        action: &'static str,
        /// The object or prefix, as a URL (never credentials).
        location: String,
        /// What the store said.
        #[source]
        source: RemoteError,
    },
}

impl ArchiveError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::Io { .. } => ErrorKind::Io,
            ArchiveError::Cancelled => ErrorKind::Cancelled,
            ArchiveError::KeyMissing { .. } => ErrorKind::Config,
            _ => ErrorKind::Archive,
        }
    }

    /// Shorthand for [`ArchiveError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArchiveError::Io { action, path: path.into(), source }
    }
}

/// What an object store said when a request failed: its message, and whether it means the object
/// is absent. Opaque so that the store client's own error type stays out of the public API.
#[derive(Debug)]
pub struct RemoteError {
    not_found: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl RemoteError {
    /// Whether the store said there is no such object.
    pub fn is_not_found(&self) -> bool {
        self.not_found
    }

    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) fn new(not_found: bool, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { not_found, source: source.into() }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for RemoteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}
