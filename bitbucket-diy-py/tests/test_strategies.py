"""Strategies written in Python, called by the orchestrator at the right phases."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import bitbucket_diy
from bitbucket_diy import (
    BackupOrchestrator,
    DatabaseTarget,
    HomeTarget,
    RestoreContext,
    Simulator,
    StepContext,
    StepResult,
)

from conftest import tree_files


class SqliteDatabase(bitbucket_diy.DatabaseStrategy):
    """Backs up an SQLite database with Python's online backup API; restores into a new file."""

    name = "sqlite-python"

    def __init__(self, database: Path) -> None:
        self.database = database
        self.calls: list[str] = []

    def prepare(self, ctx: StepContext) -> None:
        self.calls.append(ctx.phase)

    def backup(self, ctx: StepContext) -> StepResult:
        self.calls.append(ctx.phase)
        assert not ctx.is_cancelled()
        ctx.database_dir.mkdir(parents=True, exist_ok=True)
        dump = ctx.database_dir / "bitbucket.sqlite"
        dump.unlink(missing_ok=True)
        with sqlite3.connect(self.database) as source, sqlite3.connect(dump) as copy:
            source.backup(copy)
        ctx.progress(dump.stat().st_size, dump.stat().st_size)
        ctx.warn("sqlite: this is a rehearsal")
        return {"bytes": dump.stat().st_size, "files": 1, "notes": {"format": "sqlite-backup-api"}}

    def check_restore_target(self, target: DatabaseTarget) -> None:
        self.calls.append("check_restore_target")
        if Path(target.database).exists():
            raise bitbucket_diy.RestoreTargetError(f"{target.database} already exists")

    def restore(self, ctx: RestoreContext, target: DatabaseTarget) -> StepResult:
        self.calls.append(ctx.phase)
        assert ctx.metadata["database"]["notes"] == {"format": "sqlite-backup-api"}
        with sqlite3.connect(ctx.database_dir / "bitbucket.sqlite") as dump, sqlite3.connect(target.database) as new:
            dump.backup(new)
        return {"files": 1}


class CopyTreeFilesystem:
    """A filesystem strategy as a plain class (the protocol, not the base class)."""

    name = "copytree"

    def __init__(self, home: Path) -> None:
        self.home = home

    def capabilities(self) -> dict[str, bool]:
        return {"incremental": False}

    def backup(self, ctx: StepContext) -> dict[str, Any]:
        shutil.rmtree(ctx.home_dir, ignore_errors=True)
        shutil.copytree(self.home, ctx.home_dir, symlinks=True)
        return {"files": sum(1 for p in ctx.home_dir.rglob("*") if p.is_file())}

    def restore(self, ctx: RestoreContext, target: HomeTarget) -> None:
        shutil.copytree(ctx.home_dir, target.home, symlinks=True, dirs_exist_ok=True)


def make_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("create table repository (id integer primary key, name text)")
        db.executemany("insert into repository values (?, ?)", [(1, "alpha"), (2, "beta"), (3, "gamma")])


def rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("select id, name from repository order by id"))


def test_python_strategies_back_up_and_restore(config: dict[str, Any], home: Path, tmp_path: Path, sim: Simulator) -> None:
    source = tmp_path / "bitbucket.sqlite"
    make_sqlite(source)
    database = SqliteDatabase(source)
    events: list[dict[str, Any]] = []
    orchestrator = BackupOrchestrator(config, database=database, filesystem=CopyTreeFilesystem(home), on_event=events.append)
    assert (orchestrator.database_strategy, orchestrator.filesystem_strategy) == ("sqlite-python", "copytree")

    report = orchestrator.backup()

    assert database.calls == ["prepare-database", "backup-database"]
    assert report.database.files == 1 and report.database.notes == {"format": "sqlite-backup-api"}
    assert report.filesystem.files > 0
    assert report.warnings == ["sqlite: this is a rehearsal"]
    assert {"event": "warning", "message": "sqlite: this is a rehearsal"} in events
    assert any(e["event"] == "progress" and e["phase"] == "backup-database" for e in events)
    assert not sim.is_locked
    [listed] = orchestrator.list_backups()
    assert (listed.database_strategy, listed.filesystem_strategy) == ("sqlite-python", "copytree")

    target_db = tmp_path / "restored.sqlite"
    restored = orchestrator.restore(report.id, tmp_path / "restored-home", str(target_db))
    assert database.calls[-2:] == ["check_restore_target", "restore-database"]
    assert rows(target_db) == rows(source) == [(1, "alpha"), (2, "beta"), (3, "gamma")]
    assert restored.database == str(target_db) and restored.database_step.files == 1
    original = tree_files(home / "shared" / "config")
    assert original and tree_files(tmp_path / "restored-home" / "shared" / "config") == original

    # The same target again: refused by the Python check before anything is extracted.
    with pytest.raises(bitbucket_diy.RestoreTargetError, match="already exists"):
        orchestrator.restore(report.id, tmp_path / "another-home", str(target_db))
    assert not (tmp_path / "another-home").exists()
    # A restore needs the database name: the strategy keeps its database outside the home.
    with pytest.raises(bitbucket_diy.ConfigError, match="restore database"):
        orchestrator.restore(report.id, tmp_path / "third-home")


def test_a_failing_python_step_unlocks_and_raises_strategy_error_with_traceback(
    config: dict[str, Any], sim: Simulator
) -> None:
    class BrokenDatabase(bitbucket_diy.DatabaseStrategy):
        name = "broken"

        def backup(self, ctx: StepContext) -> None:
            run_dump_tool()

        def restore(self, ctx: RestoreContext, target: DatabaseTarget) -> None:
            pass

    def run_dump_tool() -> None:
        raise OSError("dump tool exploded")

    with pytest.raises(bitbucket_diy.StrategyError) as caught:
        BackupOrchestrator(config, database=BrokenDatabase()).backup()
    message = str(caught.value)
    assert "broken" in message and "dump tool exploded" in message
    assert "Traceback" in message and "run_dump_tool" in message
    assert caught.value.kind == "strategy" and caught.value.exit_code == 4
    assert not sim.is_locked
    assert sim.state()["task_state"] == "CANCELED"


def test_a_failing_prepare_stops_before_the_lock(config: dict[str, Any], sim: Simulator, home: Path) -> None:
    class NoSpace(CopyTreeFilesystem):
        def prepare(self, ctx: StepContext) -> None:
            raise RuntimeError("no space left for the initial copy")

    with pytest.raises(bitbucket_diy.StrategyError, match="no space left"):
        BackupOrchestrator(config, filesystem=NoSpace(home)).backup()
    assert not any(e["event"] == "locked" for e in sim.events())


def test_a_step_returning_garbage_is_a_strategy_error(config: dict[str, Any], home: Path, sim: Simulator) -> None:
    class Garbage(CopyTreeFilesystem):
        def backup(self, ctx: StepContext) -> dict[str, Any]:
            return {"bytse": 3}

    with pytest.raises(bitbucket_diy.StrategyError, match="unknown key `bytse`"):
        BackupOrchestrator(config, filesystem=Garbage(home)).backup()
    assert not sim.is_locked


def test_default_filesystem_target_check_refuses_a_non_empty_home(config: dict[str, Any], home: Path, tmp_path: Path) -> None:
    class Minimal(bitbucket_diy.FilesystemStrategy):
        name = "minimal"

        def backup(self, ctx: StepContext) -> None:
            CopyTreeFilesystem(home).backup(ctx)

        def restore(self, ctx: RestoreContext, target: HomeTarget) -> None:
            raise AssertionError("the target check must refuse first")

    orchestrator = BackupOrchestrator(config, filesystem=Minimal())
    report = orchestrator.backup()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "README").write_text("not a Bitbucket home")
    with pytest.raises(bitbucket_diy.RestoreTargetError, match="README"):
        orchestrator.restore(report.id, occupied)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (object(), "needs a `name`"),
        (type("NoBackup", (), {"name": "x", "restore": lambda self, c, t: None})(), "no `backup` method"),
        (type("Caps", (), {"name": "x", "backup": None, "restore": None})(), "no `backup` method"),
    ],
)
def test_strategy_objects_are_checked_when_the_orchestrator_is_built(
    config: dict[str, Any], strategy: Any, message: str
) -> None:
    with pytest.raises(bitbucket_diy.ConfigError, match=message):
        BackupOrchestrator(config, database=strategy)


def test_unknown_capability_is_a_config_error(config: dict[str, Any], home: Path) -> None:
    class Snapshotty(CopyTreeFilesystem):
        def capabilities(self) -> dict[str, bool]:
            return {"atomic_snapshots": True}

    with pytest.raises(bitbucket_diy.ConfigError, match="atomic_snapshots"):
        BackupOrchestrator(config, filesystem=Snapshotty(home))


def test_zero_downtime_is_refused_without_snapshot_capabilities(
    sim: Simulator, home: Path, tmp_path: Path
) -> None:
    from conftest import make_config

    config = make_config(sim, home, tmp_path, backup={"zero_downtime": True})
    with pytest.raises(bitbucket_diy.ConfigError, match="zero-downtime"):
        BackupOrchestrator(config, filesystem=CopyTreeFilesystem(home)).backup()

    class Snapshot(CopyTreeFilesystem):
        def capabilities(self) -> dict[str, bool]:
            return {"atomic_snapshot": True}

    report = BackupOrchestrator(config, filesystem=Snapshot(home)).backup()
    assert report.zero_downtime and report.lock_window is None
    assert not any(e["event"] == "locked" for e in sim.events())
