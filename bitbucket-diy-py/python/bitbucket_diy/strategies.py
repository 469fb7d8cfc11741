"""Base classes for database and filesystem strategies written in Python.

Subclass :class:`DatabaseStrategy` or :class:`FilesystemStrategy` (or write a class with the same
methods: the orchestrator only needs the attributes it calls) and hand an instance to
:class:`bitbucket_diy.BackupOrchestrator`::

    orchestrator = BackupOrchestrator(config, database=MyDatabase(...))

The orchestrator calls, from a worker thread:

========================  ============================================  =====================
method                    when                                          instance
========================  ============================================  =====================
``check()``               ``orchestrator.check()``                      running
``prepare(ctx)``          before the lock, in parallel with the other   running
``backup(ctx)``           while Bitbucket is locked and drained         **locked**
``check_restore_target``  before a restore extracts anything            —
``restore(ctx, target)``  restoring into a new database / home          —
========================  ============================================  =====================

``backup`` and ``restore`` may return ``None`` or a dict with ``bytes``, ``files``,
``unchanged``, ``removed`` (ints) and ``notes`` (str to str; stored in the backup's metadata,
where ``restore`` finds them again as ``ctx.metadata["database"]["notes"]``).

An exception fails the step: the run stops, Bitbucket is unlocked, and the call that started the
run raises :class:`bitbucket_diy.StrategyError` whose message holds the traceback. Long steps
should check ``ctx.is_cancelled()`` (or call ``ctx.raise_if_cancelled()``) now and then: Python
code cannot be stopped from outside, and the orchestrator unlocks anyway 30 s after a
cancellation.

The ``name`` is recorded in every backup: a backup can only be restored by a database strategy
of the same name.
"""

from __future__ import annotations

import abc
from typing import Mapping, TypedDict

from bitbucket_diy._core import (
    DatabaseTarget,
    HomeTarget,
    RestoreContext,
    StepContext,
    ensure_empty_target,
)

__all__ = [
    "DatabaseStrategy",
    "FilesystemStrategy",
    "StepResult",
    "DatabaseCapabilities",
    "FilesystemCapabilities",
]


class StepResult(TypedDict, total=False):
    """What ``backup`` and ``restore`` may return; every key is optional."""

    bytes: int
    files: int
    unchanged: int
    removed: int
    notes: Mapping[str, str]


class DatabaseCapabilities(TypedDict, total=False):
    """What a database strategy promises; every flag defaults to ``False``."""

    #: ``prepare`` does useful work before the lock that ``backup`` builds on.
    incremental_prepare: bool
    #: The database lives in the home or on the snapshotted volume: the filesystem step captures it.
    covered_by_filesystem: bool
    #: ``backup`` takes a point-in-time snapshot at the same instant as the filesystem's.
    atomic_snapshot: bool


class FilesystemCapabilities(TypedDict, total=False):
    """What a filesystem strategy promises; every flag defaults to ``False``."""

    #: ``prepare`` makes a copy so ``backup`` only copies the change.
    incremental: bool
    #: ``backup`` takes an atomic, point-in-time snapshot (required for zero-downtime backups).
    atomic_snapshot: bool


class DatabaseStrategy(abc.ABC):
    """Backs up Bitbucket's database into ``ctx.database_dir`` and restores it into a new database.

    Subclasses set :attr:`name` and implement :meth:`backup` and :meth:`restore`; they should
    also implement :meth:`check_restore_target`, which by default accepts any target.
    """

    #: The strategy's name, recorded in every backup it makes.
    name: str

    def capabilities(self) -> DatabaseCapabilities:
        """What this strategy promises (all ``False`` by default)."""
        return {}

    def check(self) -> None:
        """Probe tools and connections without changing anything; raise if something is wrong."""

    def prepare(self, ctx: StepContext) -> None:
        """Work before the lock (optional). Must leave the previous complete dump usable."""

    @abc.abstractmethod
    def backup(self, ctx: StepContext) -> StepResult | None:
        """Write a consistent dump into ``ctx.database_dir`` while Bitbucket is drained."""

    def check_restore_target(self, target: DatabaseTarget) -> None:
        """Raise if ``target.database`` exists and holds data (called before anything is
        extracted). The default accepts every target."""

    @abc.abstractmethod
    def restore(self, ctx: RestoreContext, target: DatabaseTarget) -> StepResult | None:
        """Restore the dump in ``ctx.database_dir`` into the new database ``target.database``."""


class FilesystemStrategy(abc.ABC):
    """Copies Bitbucket's home into ``ctx.home_dir`` (and data stores into
    ``ctx.data_store_dir(path)``) and restores them into a new home.

    Subclasses set :attr:`name` and implement :meth:`backup` and :meth:`restore`.
    """

    #: The strategy's name, recorded in every backup it makes.
    name: str

    def capabilities(self) -> FilesystemCapabilities:
        """What this strategy promises (all ``False`` by default)."""
        return {}

    def check(self) -> None:
        """Probe tools and folders without changing anything; raise if something is wrong."""

    def prepare(self, ctx: StepContext) -> None:
        """The initial copy while Bitbucket runs (optional; need not be consistent)."""

    @abc.abstractmethod
    def backup(self, ctx: StepContext) -> StepResult | None:
        """The consistent copy of the home into ``ctx.home_dir``, while Bitbucket is drained."""

    def check_restore_target(self, target: HomeTarget) -> None:
        """Raise unless the new home and every remapped data store are absent or empty folders
        (the built-in strategies' rule; dotfiles count)."""
        ensure_empty_target(target.home)
        for folder in target.data_stores.values():
            ensure_empty_target(folder)

    @abc.abstractmethod
    def restore(self, ctx: RestoreContext, target: HomeTarget) -> StepResult | None:
        """Restore ``ctx.home_dir`` (and data stores) into ``target.home``."""
