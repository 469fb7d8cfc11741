"""Type stubs of the extension module ``bitbucket_diy._core``; import from ``bitbucket_diy``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, final

from bitbucket_diy.strategies import DatabaseStrategy, FilesystemStrategy

__version__: Final[str]

StrPath = str | os.PathLike[str]
Seconds = float | timedelta
Event = dict[str, Any]

# --- the maintenance API ---------------------------------------------------------------------

@final
class MaintenanceClient:
    """A client of Bitbucket's maintenance and backup REST API (blocking, GIL released)."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        connect_timeout: Seconds | None = None,
        request_timeout: Seconds | None = None,
        ca_cert: StrPath | None = None,
        insecure_skip_tls_verify: bool = False,
        retries: int = 4,
    ) -> None: ...
    @property
    def url(self) -> str:
        """The base URL, context path included."""
    @property
    def user(self) -> str:
        """The user the client authenticates as."""
    def application_properties(self) -> ApplicationProperties:
        """``GET /rest/api/1.0/application-properties``."""
    def status(self) -> InstanceStatus:
        """``GET /status``."""
    def lock(self) -> MaintenanceLock:
        """``POST /mvc/maintenance/lock``; use the result in a ``with`` block."""
    def start_backup(self, lock: MaintenanceLock) -> BackupTask:
        """``POST /mvc/admin/backups?external=true``."""
    def maintenance_state(self, lock: MaintenanceLock) -> MaintenanceState:
        """``GET /mvc/maintenance``."""
    def wait_drained(
        self,
        lock: MaintenanceLock,
        *,
        poll_interval: Seconds | None = None,
        timeout: Seconds | None = None,
        on_poll: Callable[[MaintenanceState], object] | None = None,
    ) -> timedelta:
        """Poll until both drain states are ``DRAINED``; returns how long it took."""
    def report_progress(self, lock: MaintenanceLock, percentage: int) -> None:
        """Report progress (0-100) to Bitbucket; 100 means finished."""
    def cancel_backup(self, task: BackupTask) -> None:
        """End Bitbucket's backup task; the instance stays locked."""
    def unlock(self, lock: MaintenanceLock | str) -> None:
        """Leave maintenance mode, with a lock or an unlock token."""

@final
class MaintenanceLock:
    """The maintenance lock; a context manager that always unlocks."""

    @property
    def owner(self) -> str:
        """Who Bitbucket says holds the lock."""
    @property
    def is_held(self) -> bool:
        """Whether the instance is still locked by this lock."""
    @property
    def lock_window(self) -> timedelta | None:
        """Lock request to unlock, once released."""
    def unlock_command(self) -> str:
        """The shell command that unlocks by hand (holds the token)."""
    def release(self) -> timedelta:
        """Unlock (one attempt); returns the lock window."""
    def __enter__(self) -> MaintenanceLock: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]: ...

@final
class BackupTask:
    """Bitbucket's backup task (its cancel token stays hidden)."""

    @property
    def id(self) -> str | None: ...
    @property
    def progress_message(self) -> str | None: ...
    @property
    def progress_percentage(self) -> int | None: ...

@final
class ApplicationProperties:
    """What ``application-properties`` says."""

    @property
    def version(self) -> str: ...
    @property
    def build_number(self) -> str | None: ...
    @property
    def build_date(self) -> str | None: ...
    @property
    def display_name(self) -> str | None: ...

@final
class InstanceStatus:
    """What ``/status`` says."""

    @property
    def state(self) -> str: ...
    @property
    def is_running(self) -> bool: ...

@final
class MaintenanceState:
    """What ``GET /mvc/maintenance`` says."""

    @property
    def task_state(self) -> str: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def db_state(self) -> str: ...
    @property
    def scm_state(self) -> str: ...
    @property
    def progress_message(self) -> str | None: ...
    @property
    def progress_percentage(self) -> int | None: ...
    @property
    def is_drained(self) -> bool: ...

# --- the simulator ---------------------------------------------------------------------------

@final
class Simulator:
    """A simulated Bitbucket on 127.0.0.1, with fault injection."""

    def __init__(
        self,
        *,
        user: str = "admin",
        password: str = "admin",
        context_path: str = "",
        version: str = "8.19.0",
        drain_delay: Seconds | None = None,
        faults: Iterable[str] = (),
        non_admin_users: Mapping[str, str] | None = None,
    ) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def is_locked(self) -> bool: ...
    @property
    def lock_window(self) -> timedelta | None: ...
    def events(self) -> list[dict[str, Any]]:
        """Everything the simulator saw, in order."""
    def state(self) -> dict[str, Any]:
        """The state right now."""
    def add_fault(self, spec: str) -> None:
        """Activate a fault (``"never-drain"``, ``"reject-unlock:3"``...)."""
    def clear_faults(self) -> None:
        """Remove every fault."""
    def client(self) -> MaintenanceClient:
        """A client logged in as the administrator."""
    def bitbucket_config(self) -> dict[str, str]:
        """The ``[bitbucket]`` section for this simulator."""
    def close(self) -> None:
        """Stop serving."""
    def __enter__(self) -> Simulator: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]: ...

def sample_home(path: StrPath, preset: Literal["tiny", "demo"] = "tiny", *, total_bytes: int | None = None) -> Path:
    """Generate a sample Bitbucket home of real git repositories."""

# --- the orchestrator ------------------------------------------------------------------------

@final
class BackupOrchestrator:
    """Runs backups, restores, listings and verifications."""

    def __init__(
        self,
        config: Mapping[str, Any] | StrPath,
        *,
        on_event: Callable[[Event], object] | None = None,
        database: DatabaseStrategy | None = None,
        filesystem: FilesystemStrategy | None = None,
        password: str | None = None,
    ) -> None: ...
    def backup(self) -> BackupReport:
        """Take one backup; Bitbucket is unlocked whatever happens."""
    def restore(
        self,
        archive: str | os.PathLike[str] | ArchiveInfo,
        home: StrPath,
        database: str | None = None,
        *,
        data_stores: Mapping[StrPath, StrPath] | None = None,
    ) -> RestoreReport:
        """Restore a backup into a new home and a new database."""
    def list_backups(self) -> list[ArchiveInfo]:
        """Every complete backup, newest first."""
    def verify(self, archive: str | os.PathLike[str] | ArchiveInfo, *, deep: bool = False) -> VerifyReport:
        """Check an archive against its manifest (and with ``deep``, ``git fsck``)."""
    def check(self) -> list[str]:
        """Probe tools, folders and Bitbucket without locking."""
    def cancel(self) -> None:
        """Cancel the runs in progress."""
    @property
    def working_folder(self) -> Path: ...
    @property
    def archive_folder(self) -> Path: ...
    @property
    def database_strategy(self) -> str: ...
    @property
    def filesystem_strategy(self) -> str: ...
    @property
    def archive_strategy(self) -> str: ...
    @property
    def on_event(self) -> Callable[[Event], object] | None: ...

@final
class StepReport:
    """What one database or filesystem step did."""

    @property
    def bytes(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def removed(self) -> int: ...
    @property
    def elapsed(self) -> timedelta: ...
    @property
    def notes(self) -> dict[str, str]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class BackupReport:
    """The outcome of a successful backup."""

    @property
    def id(self) -> str: ...
    @property
    def archive(self) -> Path: ...
    @property
    def archive_bytes(self) -> int: ...
    @property
    def lock_window(self) -> timedelta | None: ...
    @property
    def drain_wait(self) -> timedelta | None: ...
    @property
    def total(self) -> timedelta: ...
    @property
    def phases(self) -> list[tuple[str, timedelta]]: ...
    @property
    def database(self) -> StepReport: ...
    @property
    def filesystem(self) -> StepReport: ...
    @property
    def zero_downtime(self) -> bool: ...
    @property
    def pruned(self) -> list[Path]: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class RestoreReport:
    """The outcome of a successful restore."""

    @property
    def id(self) -> str: ...
    @property
    def archive(self) -> Path: ...
    @property
    def home(self) -> Path: ...
    @property
    def database(self) -> str | None: ...
    @property
    def database_step(self) -> StepReport: ...
    @property
    def filesystem_step(self) -> StepReport: ...
    @property
    def git_locks_removed(self) -> list[Path]: ...
    @property
    def phases(self) -> list[tuple[str, timedelta]]: ...
    @property
    def total(self) -> timedelta: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class ArchiveInfo:
    """One stored backup."""

    @property
    def id(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def bytes(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def lock_window(self) -> timedelta | None: ...
    @property
    def bitbucket_version(self) -> str | None: ...
    @property
    def database_strategy(self) -> str: ...
    @property
    def filesystem_strategy(self) -> str: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class VerifyReport:
    """What verifying an archive found."""

    @property
    def path(self) -> Path: ...
    @property
    def entries(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def deep(self) -> bool: ...
    @property
    def repositories(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

# --- what Python strategies receive ----------------------------------------------------------

@final
class StepContext:
    """Handed to a strategy's ``prepare`` and ``backup``."""

    @property
    def backup_id(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def working_folder(self) -> Path: ...
    @property
    def database_dir(self) -> Path: ...
    @property
    def home_dir(self) -> Path: ...
    @property
    def data_stores_dir(self) -> Path: ...
    def data_store_dir(self, source: StrPath) -> Path: ...
    def is_cancelled(self) -> bool: ...
    def raise_if_cancelled(self) -> None: ...
    def progress(self, done: int, total: int | None = None, unit: Literal["bytes", "files"] = "bytes") -> None: ...
    def warn(self, message: str) -> None: ...

@final
class RestoreContext:
    """Handed to a strategy's ``restore``."""

    @property
    def backup_id(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def source_folder(self) -> Path: ...
    @property
    def database_dir(self) -> Path: ...
    @property
    def home_dir(self) -> Path: ...
    @property
    def data_stores_dir(self) -> Path: ...
    def data_store_dir(self, source: StrPath) -> Path: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    def is_cancelled(self) -> bool: ...
    def raise_if_cancelled(self) -> None: ...
    def progress(self, done: int, total: int | None = None, unit: Literal["bytes", "files"] = "bytes") -> None: ...
    def warn(self, message: str) -> None: ...

@final
class DatabaseTarget:
    """Where a database is restored."""

    @property
    def database(self) -> str: ...

@final
class HomeTarget:
    """Where a home is restored."""

    @property
    def home(self) -> Path: ...
    @property
    def data_stores(self) -> dict[Path, Path]: ...

def ensure_empty_target(folder: StrPath) -> None:
    """Raise ``RestoreTargetError`` unless ``folder`` is absent or an empty folder."""
