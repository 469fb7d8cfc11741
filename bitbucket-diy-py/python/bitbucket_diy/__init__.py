"""bitbucket_diy: consistent, low-downtime backups and restores of Bitbucket Server and Data Center.

The same engine as the ``bitbucket-diy`` CLI, for scripts:

- :class:`BackupOrchestrator` runs backups, restores, listings and verifications from the CLI's
  configuration (a dict or a TOML file), with a progress callback and optional strategies
  written in Python (:class:`DatabaseStrategy`, :class:`FilesystemStrategy`);
- :class:`MaintenanceClient` makes the maintenance API's calls one by one; its
  :meth:`~MaintenanceClient.lock` is a context manager that always unlocks;
- :class:`Simulator` is a fake Bitbucket to rehearse against, and :func:`sample_home` makes a
  test home of real git repositories;
- every failure is a :class:`BitbucketDiyError` subclass (see :mod:`bitbucket_diy.errors`).

Calls block the calling thread but not the interpreter (the GIL is released while waiting).
Ctrl-C during a backup cancels it, waits until Bitbucket is unlocked, then raises
``KeyboardInterrupt``.

Example::

    import bitbucket_diy

    orchestrator = bitbucket_diy.BackupOrchestrator(
        "/etc/bitbucket-diy/config.toml",
        on_event=lambda event: print(event),
    )
    report = orchestrator.backup()
    print(f"{report.id}: {report.archive} ({report.archive_bytes} bytes), "
          f"locked for {report.lock_window}")
"""

from __future__ import annotations

from bitbucket_diy._core import (
    ApplicationProperties,
    ArchiveInfo,
    BackupOrchestrator,
    BackupReport,
    BackupTask,
    DatabaseTarget,
    HomeTarget,
    InstanceStatus,
    MaintenanceClient,
    MaintenanceLock,
    MaintenanceState,
    RestoreContext,
    RestoreReport,
    Simulator,
    StepContext,
    StepReport,
    VerifyReport,
    __version__,
    ensure_empty_target,
    sample_home,
)
from bitbucket_diy.errors import (
    AlreadyLockedError,
    ArchiveError,
    AuthError,
    BitbucketDiyError,
    BitbucketError,
    BitbucketTimeoutError,
    BusyError,
    CancelledError,
    ConfigError,
    DrainFailedError,
    DrainTimeoutError,
    HookError,
    InvalidResponseError,
    InvalidTokenError,
    LeftLockedError,
    LocalIOError,
    LockedTimeoutError,
    NotFoundError,
    RestoreTargetError,
    ServerError,
    StrategyError,
    ToolMissingError,
    TransportError,
)
from bitbucket_diy.strategies import (
    DatabaseCapabilities,
    DatabaseStrategy,
    FilesystemCapabilities,
    FilesystemStrategy,
    StepResult,
)

__all__ = [
    "__version__",
    # Running backups
    "BackupOrchestrator",
    "BackupReport",
    "RestoreReport",
    "ArchiveInfo",
    "VerifyReport",
    "StepReport",
    # Strategies in Python
    "DatabaseStrategy",
    "FilesystemStrategy",
    "StepContext",
    "RestoreContext",
    "DatabaseTarget",
    "HomeTarget",
    "StepResult",
    "DatabaseCapabilities",
    "FilesystemCapabilities",
    "ensure_empty_target",
    # The maintenance API
    "MaintenanceClient",
    "MaintenanceLock",
    "BackupTask",
    "ApplicationProperties",
    "InstanceStatus",
    "MaintenanceState",
    # Rehearsals
    "Simulator",
    "sample_home",
    # Errors
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
