"""Exceptions raised by :mod:`bitbucket_diy`.

Every exception the module raises for a failed operation derives from
:class:`BitbucketDiyError`. The class is chosen from the core's error *kind* (never from the
message), and every instance carries:

- ``kind``: the stable kebab-case name of the failure (``"already-locked"``, ``"strategy"``…),
  the same string the CLI prints with ``--json`` and hooks get as ``BITBUCKET_DIY_ERROR_KIND``;
- ``exit_code``: the code the ``bitbucket-diy`` CLI exits with for this kind;
- ``is_retryable``: whether trying the same thing again may succeed without a human's change.

``str(error)`` is the core's message, Bitbucket's own message included where it sent one.

Hierarchy::

    BitbucketDiyError
    ├── ConfigError (also ValueError)
    ├── BitbucketError                 talking to Bitbucket failed (exit code 3)
    │   ├── AuthError                  401 wrong credentials, 403 not a system admin
    │   ├── AlreadyLockedError         someone else holds the maintenance lock
    │   ├── InvalidTokenError          an unlock or cancel token was rejected
    │   ├── NotFoundError              wrong URL or context path
    │   ├── ServerError                5xx or an unexpected status
    │   │   └── InvalidResponseError   an answer that cannot be read
    │   ├── TransportError (also ConnectionError)
    │   ├── BitbucketTimeoutError (also TimeoutError)
    │   │   └── DrainTimeoutError      Bitbucket did not drain within drain_timeout
    │   └── DrainFailedError           the backup task ended before draining
    ├── LockedTimeoutError (also TimeoutError)   the locked phase exceeded locked_timeout
    ├── StrategyError                  a database or filesystem step failed
    │   └── ToolMissingError           an external tool is not installed
    ├── RestoreTargetError             a restore target is not new and empty
    ├── ArchiveError                   an archive is missing, corrupt or fails verification
    ├── BusyError                      another backup holds the working folder
    ├── HookError                      a user hook failed
    ├── LocalIOError (also OSError)    local I/O failed outside a step
    ├── CancelledError                 the operation was cancelled
    └── LeftLockedError                unlocking failed: Bitbucket is STILL LOCKED

A Ctrl-C during a long call is not turned into :class:`CancelledError`: the run is cancelled,
the instance unlocked, and the original :class:`KeyboardInterrupt` is raised again.
"""

from __future__ import annotations

__all__ = [
    "BitbucketDiyError",
    "ConfigError",
    "BitbucketError",
    "AuthError",
    "AlreadyLockedError",
    "InvalidTokenError",
    "NotFoundError",
    "ServerError",
    "InvalidResponseError",
    "TransportError",
    "BitbucketTimeoutError",
    "DrainTimeoutError",
    "DrainFailedError",
    "LockedTimeoutError",
    "StrategyError",
    "ToolMissingError",
    "RestoreTargetError",
    "ArchiveError",
    "BusyError",
    "HookError",
    "LocalIOError",
    "CancelledError",
    "LeftLockedError",
]


class BitbucketDiyError(Exception):
    """Base class of every bitbucket-diy failure.

    Attributes:
        kind: The stable kebab-case name of the failure, e.g. ``"unauthorized"``.
        exit_code: The exit code of the ``bitbucket-diy`` CLI for this kind.
        is_retryable: Whether the same call may succeed if simply tried again.
    """

    kind: str
    exit_code: int
    is_retryable: bool

    def __init__(
        self,
        message: str,
        *,
        kind: str = "unknown",
        exit_code: int = 1,
        is_retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code
        self.is_retryable = is_retryable

    @property
    def message(self) -> str:
        """The message, as ``str(error)`` shows it."""
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, kind={self.kind!r})"


class ConfigError(BitbucketDiyError, ValueError):
    """The configuration or an argument is invalid; the message names the key or argument."""


class BitbucketError(BitbucketDiyError):
    """Talking to Bitbucket failed (the CLI's exit code 3)."""


class AuthError(BitbucketError):
    """Bitbucket rejected the credentials (``kind == "unauthorized"``, HTTP 401) or the user lacks
    system-admin permission (``kind == "forbidden"``, HTTP 403)."""


class AlreadyLockedError(BitbucketError):
    """The instance is already locked for maintenance by someone else."""


class InvalidTokenError(BitbucketError):
    """Bitbucket rejected an unlock or cancel token (wrong, or already used)."""


class NotFoundError(BitbucketError):
    """The URL or its context path does not lead to Bitbucket's API."""


class ServerError(BitbucketError):
    """Bitbucket answered with a server error or an unexpected status."""


class InvalidResponseError(ServerError):
    """Bitbucket answered with something that cannot be read (``kind == "invalid-response"``)."""


class TransportError(BitbucketError, ConnectionError):
    """The network failed: connection refused or reset, TLS failure."""


class BitbucketTimeoutError(BitbucketError, TimeoutError):
    """A request or a wait on Bitbucket took longer than allowed."""


class DrainTimeoutError(BitbucketTimeoutError):
    """Bitbucket did not drain within ``backup.drain_timeout``; the instance was unlocked."""


class DrainFailedError(BitbucketError):
    """Bitbucket's backup task ended before both ``db-state`` and ``scm-state`` drained."""


class LockedTimeoutError(BitbucketDiyError, TimeoutError):
    """The locked phase ran longer than ``backup.locked_timeout``; the work was stopped and the
    instance unlocked."""


class StrategyError(BitbucketDiyError):
    """A database or filesystem step failed. For a strategy written in Python, the message holds
    the Python exception's traceback."""


class ToolMissingError(StrategyError):
    """An external tool a strategy needs (``pg_dump``, ``rsync``…) is not installed."""


class RestoreTargetError(BitbucketDiyError):
    """A restore target (home folder or database) is not new and empty."""


class ArchiveError(BitbucketDiyError):
    """An archive is missing, corrupt, unsafe, or does not match its manifest."""


class BusyError(BitbucketDiyError):
    """Another backup holds the run lock of this working folder."""


class HookError(BitbucketDiyError):
    """A user hook (``[backup.hooks]``) exited unsuccessfully."""


class LocalIOError(BitbucketDiyError, OSError):
    """Local I/O failed outside a strategy (creating the working folder, a restore folder…)."""


class CancelledError(BitbucketDiyError):
    """The operation was cancelled (by :meth:`BackupOrchestrator.cancel` or a failing progress
    callback). A Python strategy may raise it to stop once its context reports cancellation."""

    def __init__(
        self,
        message: str = "cancelled",
        *,
        kind: str = "cancelled",
        exit_code: int = 130,
        is_retryable: bool = False,
    ) -> None:
        super().__init__(message, kind=kind, exit_code=exit_code, is_retryable=is_retryable)


class LeftLockedError(BitbucketDiyError):
    """Unlocking failed: **Bitbucket is still in maintenance mode** and a human must act.

    The message and :attr:`unlock_command` hold the exact command that unlocks the instance,
    unlock token included (the one place a token is ever shown). ``__cause__`` is the failure
    that made the run unlock early, if any.
    """

    unlock_command: str

    def __init__(
        self,
        message: str,
        *,
        unlock_command: str = "",
        kind: str = "left-locked",
        exit_code: int = 10,
        is_retryable: bool = False,
    ) -> None:
        super().__init__(message, kind=kind, exit_code=exit_code, is_retryable=is_retryable)
        self.unlock_command = unlock_command

    def __repr__(self) -> str:
        # The token stays out of reprs (logs, tracebacks of callers); str() shows it on purpose.
        return f"LeftLockedError(kind={self.kind!r}, unlock_command='[REDACTED]')"
