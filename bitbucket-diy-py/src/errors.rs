//! Core errors as Python exceptions of `bitbucket_diy.errors`, chosen by [`ErrorKind`] (and, for
//! the two timeouts a script handles differently, by variant), never by message.

use bitbucket_diy_core::client::ClientError;
use bitbucket_diy_core::{Error, ErrorKind};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

/// The Python module holding the exception classes.
const ERRORS_MODULE: &str = "bitbucket_diy.errors";

/// The exception class for an error kind.
fn class_for(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "ConfigError",
        ErrorKind::Unauthorized | ErrorKind::Forbidden => "AuthError",
        ErrorKind::AlreadyLocked => "AlreadyLockedError",
        ErrorKind::InvalidToken => "InvalidTokenError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::Server => "ServerError",
        ErrorKind::InvalidResponse => "InvalidResponseError",
        ErrorKind::Transport => "TransportError",
        ErrorKind::Timeout => "BitbucketTimeoutError",
        ErrorKind::DrainFailed => "DrainFailedError",
        ErrorKind::Cancelled => "CancelledError",
        ErrorKind::Strategy => "StrategyError",
        ErrorKind::ToolMissing => "ToolMissingError",
        ErrorKind::Archive => "ArchiveError",
        ErrorKind::RestoreTarget => "RestoreTargetError",
        ErrorKind::Busy => "BusyError",
        ErrorKind::Hook => "HookError",
        ErrorKind::LeftLocked => "LeftLockedError",
        ErrorKind::Io => "LocalIOError",
        _ => "BitbucketDiyError",
    }
}

/// The class for this error: its kind's, refined for the timeouts.
fn class_of(error: &Error) -> &'static str {
    match error {
        Error::Client(ClientError::DrainTimeout { .. }) => "DrainTimeoutError",
        Error::LockedTimeout { .. } => "LockedTimeoutError",
        other => class_for(other.kind()),
    }
}

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE.get_or_try_init(py, || py.import(ERRORS_MODULE).map(Bound::unbind)).map(|m| m.bind(py))
}

/// Build an exception of `bitbucket_diy.errors`.
fn build(
    py: Python<'_>,
    class: &str,
    message: &str,
    kind: ErrorKind,
    is_retryable: bool,
    extra: Option<(&str, &str)>,
) -> PyResult<PyErr> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("kind", kind.as_str())?;
    kwargs.set_item("exit_code", kind.exit_code())?;
    kwargs.set_item("is_retryable", is_retryable)?;
    if let Some((key, value)) = extra {
        kwargs.set_item(key, value)?;
    }
    let exception = errors_module(py)?.getattr(class)?.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(exception))
}

/// The Python exception for a core error. A left-locked error keeps the failure that caused the
/// early unlock as its `__cause__`.
pub(crate) fn to_py_err(py: Python<'_>, error: &Error) -> PyErr {
    let converted = match error {
        Error::LeftLocked { unlock_command, cause, .. } => build(
            py,
            "LeftLockedError",
            &error.to_string(),
            error.kind(),
            false,
            Some(("unlock_command", unlock_command.expose())),
        )
        .inspect(|left_locked| {
            if let Some(cause) = cause {
                left_locked.set_cause(py, Some(to_py_err(py, cause)));
            }
        }),
        other => build(py, class_of(other), &other.to_string(), other.kind(), other.is_retryable(), None),
    };
    // Failing to build the exception (the errors module cannot be imported) is itself the error.
    converted.unwrap_or_else(|build_failed| build_failed)
}

/// A client error as a Python exception.
pub(crate) fn client_err(py: Python<'_>, error: ClientError) -> PyErr {
    to_py_err(py, &Error::Client(error))
}

/// A `ConfigError` raised by the bindings themselves (a bad argument type, a bad strategy object).
pub(crate) fn config_err(py: Python<'_>, message: impl AsRef<str>) -> PyErr {
    build(py, "ConfigError", message.as_ref(), ErrorKind::Config, false, None).unwrap_or_else(|e| e)
}

/// An exception of the class for `kind`, raised by the bindings themselves.
pub(crate) fn error_of_kind(py: Python<'_>, kind: ErrorKind, message: &str) -> PyErr {
    build(py, class_for(kind), message, kind, false, None).unwrap_or_else(|e| e)
}

/// A class of `bitbucket_diy.errors`, e.g. `CancelledError` for strategies stopped by their
/// context.
pub(crate) fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    errors_module(py)?.getattr(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_class_except_the_two_auth_failures() {
        let kinds = [
            ErrorKind::Config,
            ErrorKind::Unauthorized,
            ErrorKind::AlreadyLocked,
            ErrorKind::InvalidToken,
            ErrorKind::NotFound,
            ErrorKind::Server,
            ErrorKind::InvalidResponse,
            ErrorKind::Transport,
            ErrorKind::Timeout,
            ErrorKind::DrainFailed,
            ErrorKind::Cancelled,
            ErrorKind::Strategy,
            ErrorKind::ToolMissing,
            ErrorKind::Archive,
            ErrorKind::RestoreTarget,
            ErrorKind::Busy,
            ErrorKind::Hook,
            ErrorKind::LeftLocked,
            ErrorKind::Io,
        ];
        let mut classes: Vec<&str> = kinds.iter().map(|k| class_for(*k)).collect();
        assert!(!classes.contains(&"BitbucketDiyError"));
        assert_eq!(class_for(ErrorKind::Forbidden), "AuthError");
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes.len(), kinds.len());
    }

    #[test]
    fn timeouts_are_refined_by_variant() {
        let limit = std::time::Duration::from_secs(1);
        assert_eq!(class_of(&Error::LockedTimeout { limit }), "LockedTimeoutError");
        let cancelled = Error::Cancelled { during: None };
        assert_eq!(class_of(&cancelled), "CancelledError");
    }
}
