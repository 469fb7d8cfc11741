//! The public error type and the error policy.
//!
//! Policy:
//! - Every `pub` function of the core returns [`Error`] or one of the per-layer enums it wraps
//!   ([`ClientError`], [`StrategyError`], [`ArchiveError`], [`ConfigError`]). No `String` or
//!   `Box<dyn Error>` crosses the public API.
//! - Callers act on [`Error::kind`] (exit codes, Python exception classes, retries), never on
//!   message text.
//! - A message names the thing that is wrong (the file, the key, the URL, the command) and, where
//!   there is one, what to do about it.
//! - Secrets never reach a message, with one deliberate exception: [`Error::LeftLocked`] prints the
//!   command that unlocks the instance, token included, because a human must be able to recover.

use std::fmt;
use std::path::PathBuf;

use crate::client::ClientError;
use crate::config::ConfigError;
use crate::orchestrator::HookPoint;
use crate::strategy::{ArchiveError, StrategyError};

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure happened: the stable thing to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Configuration or argument is invalid.
    Config,
    /// Bitbucket rejected the credentials (401).
    Unauthorized,
    /// The user is not a system administrator (403).
    Forbidden,
    /// The instance is already locked for maintenance by someone else.
    AlreadyLocked,
    /// An unlock or cancel token was rejected.
    InvalidToken,
    /// The URL or context path does not lead to Bitbucket's API.
    NotFound,
    /// Bitbucket answered with a server error.
    Server,
    /// Bitbucket answered with something we cannot read.
    InvalidResponse,
    /// The network failed (connection refused, reset, TLS).
    Transport,
    /// A request or a wait took longer than allowed.
    Timeout,
    /// The server-side backup task ended before both states drained.
    DrainFailed,
    /// The operation was cancelled (Ctrl-C, SIGTERM, a cancellation handle).
    Cancelled,
    /// A database or filesystem step failed.
    Strategy,
    /// A required external tool is missing.
    ToolMissing,
    /// An archive is missing, corrupt, unsafe or fails verification.
    Archive,
    /// A restore target is not new and empty.
    RestoreTarget,
    /// Another backup holds the run lock of this working folder.
    Busy,
    /// A user hook failed.
    Hook,
    /// The instance could not be unlocked: a human must act.
    LeftLocked,
    /// Local I/O failed.
    Io,
}

impl ErrorKind {
    /// The process exit code the CLI uses for this kind (documented in docs/cli.md):
    /// 2 configuration, 3 Bitbucket (auth, network, server, drain), 4 a backup step,
    /// 5 archive, 6 another run holds the lock, 7 restore target not empty, 10 instance left
    /// locked, 130 cancelled.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::Unauthorized
            | ErrorKind::Forbidden
            | ErrorKind::AlreadyLocked
            | ErrorKind::InvalidToken
            | ErrorKind::NotFound
            | ErrorKind::Server
            | ErrorKind::InvalidResponse
            | ErrorKind::Transport
            | ErrorKind::Timeout
            | ErrorKind::DrainFailed => 3,
            ErrorKind::Strategy | ErrorKind::ToolMissing | ErrorKind::Hook | ErrorKind::Io => 4,
            ErrorKind::Archive => 5,
            ErrorKind::Busy => 6,
            ErrorKind::RestoreTarget => 7,
            ErrorKind::LeftLocked => 10,
            ErrorKind::Cancelled => 130,
        }
    }

    /// A stable kebab-case name (`left-locked`), for JSON output and hooks.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::AlreadyLocked => "already-locked",
            ErrorKind::InvalidToken => "invalid-token",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Server => "server",
            ErrorKind::InvalidResponse => "invalid-response",
            ErrorKind::Transport => "transport",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DrainFailed => "drain-failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Strategy => "strategy",
            ErrorKind::ToolMissing => "tool-missing",
            ErrorKind::Archive => "archive",
            ErrorKind::RestoreTarget => "restore-target",
            ErrorKind::Busy => "busy",
            ErrorKind::Hook => "hook",
            ErrorKind::LeftLocked => "left-locked",
            ErrorKind::Io => "io",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The core's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Talking to Bitbucket failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The database step failed.
    #[error("database step failed: {0}")]
    Database(#[source] StrategyError),
    /// The filesystem step failed.
    #[error("filesystem step failed: {0}")]
    Filesystem(#[source] StrategyError),
    /// The archive step failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A user hook exited unsuccessfully.
    #[error("hook `{point}` failed: `{command}` {status}")]
    Hook {
        /// Where the hook ran.
        point: HookPoint,
        /// The command as configured (hooks get secrets only through their environment).
        command: String,
        /// How it ended.
        status: String,
    },
    /// Another run holds the working folder.
    #[error(
        "another backup is already running on {folder}: pid {pid} since {since}; wait for it to \
         finish (its lock, {lock_file}, is released when that process ends, however it ends)"
    )]
    Busy {
        /// The working folder.
        folder: PathBuf,
        /// The lock file.
        lock_file: PathBuf,
        /// Holder's pid.
        pid: u32,
        /// When the holder started (RFC 3339).
        since: String,
    },
    /// Zero-downtime mode was requested but the strategies cannot make it consistent.
    #[error("zero-downtime backup refused: {reason}")]
    ZeroDowntimeRefused {
        /// Which strategy lacks what.
        reason: String,
    },
    /// The operation was cancelled; the instance was unlocked.
    #[error("cancelled{}", match .during { Some(p) => format!(" during {p}"), None => String::new() })]
    Cancelled {
        /// The phase that was running.
        during: Option<crate::events::Phase>,
    },
    /// The locked phase ran longer than allowed; the work was stopped and the instance unlocked.
    #[error(
        "the locked phase exceeded backup.locked_timeout ({limit:?}); the backup was stopped and Bitbucket unlocked"
    )]
    LockedTimeout {
        /// The limit.
        limit: std::time::Duration,
    },
    /// Unlocking failed: the instance is still in maintenance mode.
    #[error(
        "BITBUCKET IS STILL LOCKED: unlocking failed ({unlock_error}){}. \
         Unlock it now with:\n    {}",
        match .cause { Some(c) => format!(" after the backup failed: {c}"), None => String::new() },
        .unlock_command.expose()
    )]
    LeftLocked {
        /// Why the unlock failed.
        unlock_error: Box<ClientError>,
        /// The failure that made us unlock early, if any.
        cause: Option<Box<Error>>,
        /// The exact command that unlocks the instance.
        unlock_command: ManualCommand,
    },
    /// The lock request's answer was lost or unreadable, yet Bitbucket reports maintenance mode:
    /// the request most likely locked it, and its unlock token never reached us.
    #[error(
        "BITBUCKET IS PROBABLY LOCKED: the lock request failed ({cause}), yet Bitbucket now reports \
         maintenance mode: the request most likely locked it, and its unlock token never reached \
         bitbucket-diy, which therefore cannot unlock it. A Bitbucket administrator must end \
         maintenance mode (without the token, by restarting Bitbucket)"
    )]
    LockTokenLost {
        /// How the lock request failed.
        cause: Box<ClientError>,
    },
    /// Local I/O failed outside a strategy.
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
}

impl Error {
    /// The kind of failure, for exit codes, exception classes and retries.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Client(e) => e.kind(),
            Error::Database(e) | Error::Filesystem(e) => e.kind(),
            Error::Archive(e) => e.kind(),
            Error::Hook { .. } => ErrorKind::Hook,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::ZeroDowntimeRefused { .. } => ErrorKind::Config,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::LockedTimeout { .. } => ErrorKind::Timeout,
            Error::LeftLocked { .. } | Error::LockTokenLost { .. } => ErrorKind::LeftLocked,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// Whether trying the same thing again may succeed without a change by a human.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Client(e) => e.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

/// A shell command that contains a secret (an unlock token): shown in [`Error::LeftLocked`]'s
/// message on purpose, redacted in `Debug`.
#[derive(Clone)]
pub struct ManualCommand(secrecy::SecretString);

impl ManualCommand {
    pub(crate) fn new(command: String) -> Self {
        Self(secrecy::SecretString::from(command))
    }

    /// The command, token included.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl fmt::Debug for ManualCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ManualCommand([REDACTED])")
    }
}
