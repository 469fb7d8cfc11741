"""BackupOrchestrator against the simulator and a sample home: backup, list, verify, restore,
progress events, interrupts, and configuration errors."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import bitbucket_diy
from bitbucket_diy import BackupOrchestrator, Simulator, StepContext

from conftest import make_config, tree_files


def test_backup_list_verify_restore_round_trip(config: dict[str, Any], home: Path, tmp_path: Path, sim: Simulator) -> None:
    events: list[dict[str, Any]] = []
    orchestrator = BackupOrchestrator(config, on_event=events.append)
    assert (orchestrator.database_strategy, orchestrator.filesystem_strategy, orchestrator.archive_strategy) == (
        "none",
        "native",
        "tar-zstd",
    )

    report = orchestrator.backup()

    assert report.archive.is_file() and report.archive.stat().st_size == report.archive_bytes
    assert report.archive.name == f"{report.id}.tar.zst"
    assert report.lock_window is not None and report.lock_window > timedelta(0)
    assert report.drain_wait is not None and report.lock_window >= report.drain_wait
    assert report.started_at.tzinfo is not None and report.finished_at >= report.started_at
    phases = [phase for phase, _ in report.phases]
    assert phases.index("lock") < phases.index("drain") < phases.index("unlock") < phases.index("archive")
    # The prepare pass copied the home; the locked pass found it unchanged.
    assert report.filesystem.unchanged > 0
    as_dict = report.to_dict()
    assert as_dict["id"] == report.id and as_dict["archive_bytes"] == report.archive_bytes
    assert not sim.is_locked

    kinds = [e["event"] for e in events]
    assert {"phase-started", "phase-finished", "locked", "drained", "unlocked", "archive-written"} <= set(kinds)
    assert kinds.index("locked") < kinds.index("drained") < kinds.index("unlocked") < kinds.index("archive-written")
    unlocked = next(e for e in events if e["event"] == "unlocked")
    assert unlocked["lock_window"] == pytest.approx(report.lock_window.total_seconds(), abs=0.05)

    [listed] = orchestrator.list_backups()
    assert (listed.id, listed.path, listed.bytes) == (report.id, report.archive, report.archive_bytes)
    assert isinstance(listed.created_at, datetime) and listed.bitbucket_version == "8.19.0"

    verified = orchestrator.verify(listed, deep=True)
    assert verified.entries > 0 and verified.repositories >= 3 and verified.deep

    restored_home = tmp_path / "restored"
    restore = orchestrator.restore(report.id, restored_home)
    assert restore.home == restored_home and restore.database is None
    repositories = Path("shared") / "data" / "repositories"
    original = tree_files(home / repositories)
    copy = tree_files(restored_home / repositories)
    # Stale git lock files are removed on restore; a fork's alternates point into the new home.
    removed = {str(p.relative_to(restored_home / repositories)) for p in restore.git_locks_removed}
    assert removed and removed <= set(original)
    [alternates] = [k for k in copy if k.endswith("objects/info/alternates")]
    assert copy.pop(alternates).decode().startswith(str(restored_home))
    del original[alternates]
    assert {k: v for k, v in original.items() if k not in removed} == copy


def test_backup_from_a_toml_file_like_the_cli(sim: Simulator, home: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "bitbucket-diy.toml"
    config_file.write_text(
        f"""
[bitbucket]
url = "{sim.url}"
user = "{sim.user}"
password_env = "BB_DIY_TEST_PASSWORD_{os.getpid()}"

[filesystem]
home = "{home}"

[archive]
type = "tar-gz"
folder = "{tmp_path / 'archives'}"
keep = 1

[backup]
working_folder = "{tmp_path / 'work'}"
poll_interval = "10ms"
"""
    )
    os.environ[f"BB_DIY_TEST_PASSWORD_{os.getpid()}"] = sim.password
    try:
        orchestrator = BackupOrchestrator(config_file)
        first = orchestrator.backup()
        second = orchestrator.backup()
    finally:
        del os.environ[f"BB_DIY_TEST_PASSWORD_{os.getpid()}"]
    assert second.archive.name.endswith(".tar.gz")
    assert second.pruned == [first.archive] and not first.archive.exists()
    assert [a.id for a in orchestrator.list_backups()] == [second.id]


def test_password_argument_completes_a_config_without_one(sim: Simulator, home: Path, tmp_path: Path) -> None:
    config = make_config(sim, home, tmp_path)
    del config["bitbucket"]["password"]
    with pytest.raises(bitbucket_diy.ConfigError, match="bitbucket.password"):
        BackupOrchestrator(config).backup()
    BackupOrchestrator(config, password=sim.password).backup()
    assert not sim.is_locked


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["bitbucket"].update(pasword="x"), "pasword"),
        (lambda c: c["archive"].update(kepp=3), "kepp"),
        (lambda c: c["filesystem"].pop("home"), "home"),
        (lambda c: c["backup"].update(working_folder="relative/work"), "backup.working_folder"),
        (lambda c: c["archive"].update(level=99), "archive.level"),
        (lambda c: c["bitbucket"].update(url="ftp://bitbucket"), "bitbucket.url"),
        (lambda c: c["backup"].update(poll_interval=object()), "object"),
        (lambda c: c.update(databse={"type": "none"}), "databse"),
    ],
)
def test_bad_config_dict_is_a_config_error_naming_the_key(
    config: dict[str, Any], change: Any, named: str
) -> None:
    change(config)
    with pytest.raises(bitbucket_diy.ConfigError) as caught:
        BackupOrchestrator(config)
    assert named in str(caught.value)
    assert caught.value.kind == "config" and caught.value.exit_code == 2


def test_bad_toml_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[bitbucket]\nurl = "http://127.0.0.1:1"\nuser = "a"\nfavourite_colour = "blue"\n')
    with pytest.raises(bitbucket_diy.ConfigError) as caught:
        BackupOrchestrator(bad)
    assert "bad.toml" in str(caught.value) and "favourite_colour" in str(caught.value) and "line 4" in str(caught.value)
    with pytest.raises(bitbucket_diy.ConfigError, match="missing.toml"):
        BackupOrchestrator(tmp_path / "missing.toml")
    with pytest.raises(bitbucket_diy.ConfigError, match="dict or the path"):
        BackupOrchestrator(42)  # type: ignore[arg-type]


def test_timedelta_and_path_values_are_accepted(sim: Simulator, home: Path, tmp_path: Path) -> None:
    config = make_config(sim, home, tmp_path, backup={"drain_timeout": timedelta(minutes=2), "poll_interval": timedelta(milliseconds=10)})
    orchestrator = BackupOrchestrator(config)
    assert orchestrator.working_folder == tmp_path / "work" and orchestrator.archive_folder == tmp_path / "archives"


def test_drain_timeout_unlocks_and_raises_drain_timeout(sim: Simulator, home: Path, tmp_path: Path) -> None:
    sim.add_fault("never-drain")
    config = make_config(sim, home, tmp_path, backup={"drain_timeout": "300ms"})
    with pytest.raises(bitbucket_diy.DrainTimeoutError):
        BackupOrchestrator(config).backup()
    assert not sim.is_locked
    assert sim.state()["task_state"] == "CANCELED"
    assert BackupOrchestrator(config).list_backups() == []


def test_a_failing_progress_callback_cancels_the_run_unlocks_and_is_raised(config: dict[str, Any], sim: Simulator) -> None:
    seen: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event["event"])
        if event["event"] == "drained":
            raise RuntimeError("progress bar broke")

    orchestrator = BackupOrchestrator(config, on_event=on_event)
    with pytest.raises(RuntimeError, match="progress bar broke"):
        orchestrator.backup()
    assert not sim.is_locked
    assert "drained" in seen and "archive-written" not in seen
    assert orchestrator.list_backups() == []


def test_keyboard_interrupt_in_a_progress_callback_unlocks_and_is_raised(config: dict[str, Any], sim: Simulator) -> None:
    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "locked":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BackupOrchestrator(config, on_event=on_event).backup()
    assert not sim.is_locked
    assert any(e["event"] == "unlocked" for e in sim.events())


class SlowDatabase(bitbucket_diy.DatabaseStrategy):
    """Sends Ctrl-C to its own process once locked, then waits to be cancelled."""

    name = "slow"

    def __init__(self, interrupt: bool = True) -> None:
        self.interrupt = interrupt
        self.locked = threading.Event()
        self.saw_cancellation = False

    def backup(self, ctx: StepContext) -> None:
        self.locked.set()
        if self.interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 20
        while not ctx.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.saw_cancellation = ctx.is_cancelled()
        ctx.raise_if_cancelled()

    def restore(self, ctx: bitbucket_diy.RestoreContext, target: bitbucket_diy.DatabaseTarget) -> None:
        raise AssertionError("not restored in these tests")


def test_ctrl_c_during_a_backup_unlocks_before_keyboard_interrupt(config: dict[str, Any], sim: Simulator) -> None:
    database = SlowDatabase()
    orchestrator = BackupOrchestrator(config, database=database)
    with pytest.raises(KeyboardInterrupt):
        orchestrator.backup()
    assert database.saw_cancellation
    assert not sim.is_locked
    assert sim.state()["task_state"] == "CANCELED"
    assert orchestrator.list_backups() == []


def test_cancel_from_another_thread_raises_cancelled(config: dict[str, Any], sim: Simulator) -> None:
    database = SlowDatabase(interrupt=False)
    orchestrator = BackupOrchestrator(config, database=database)
    threading.Thread(target=lambda: (database.locked.wait(10), orchestrator.cancel()), daemon=True).start()
    with pytest.raises(bitbucket_diy.CancelledError) as caught:
        orchestrator.backup()
    assert caught.value.exit_code == 130
    assert not sim.is_locked


def test_a_second_backup_on_the_same_working_folder_is_busy(config: dict[str, Any], sim: Simulator) -> None:
    database = SlowDatabase(interrupt=False)
    first = BackupOrchestrator(config, database=database)
    outcome: list[BaseException] = []

    def run_first() -> None:
        try:
            first.backup()
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
            outcome.append(e)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert database.locked.wait(10)
        with pytest.raises(bitbucket_diy.BusyError, match="already running") as caught:
            BackupOrchestrator(config).backup()
        assert caught.value.exit_code == 6
    finally:
        first.cancel()
        thread.join(30)
    assert isinstance(outcome[0], bitbucket_diy.CancelledError)
    assert not sim.is_locked


def test_restore_refuses_a_non_empty_home(config: dict[str, Any], tmp_path: Path) -> None:
    orchestrator = BackupOrchestrator(config)
    report = orchestrator.backup()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / ".bash_history").write_text("keep me")
    with pytest.raises(bitbucket_diy.RestoreTargetError, match=".bash_history"):
        orchestrator.restore(report.id, occupied)
    assert (occupied / ".bash_history").read_text() == "keep me"
    with pytest.raises(bitbucket_diy.ArchiveError, match="no-such-backup"):
        orchestrator.restore("no-such-backup", tmp_path / "new")


def test_verify_detects_a_corrupt_archive(config: dict[str, Any]) -> None:
    orchestrator = BackupOrchestrator(config)
    report = orchestrator.backup()
    data = bytearray(report.archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    report.archive.write_bytes(bytes(data))
    with pytest.raises(bitbucket_diy.ArchiveError):
        orchestrator.verify(report.archive)


def test_check_probes_without_locking(config: dict[str, Any], sim: Simulator) -> None:
    lines = BackupOrchestrator(config).check()
    assert any("8.19.0" in line for line in lines)
    assert not any(e["event"] == "locked" for e in sim.events())
