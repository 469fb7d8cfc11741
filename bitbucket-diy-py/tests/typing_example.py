"""A typed script using the public API, checked by `mypy --strict` (run-tests.sh) so the stubs
stay usable, and run by test_api.py so it stays true."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import bitbucket_diy
from bitbucket_diy import (
    BackupOrchestrator,
    BackupReport,
    DatabaseTarget,
    MaintenanceClient,
    RestoreContext,
    StepContext,
    StepResult,
)


class MarkerDatabase(bitbucket_diy.DatabaseStrategy):
    name = "marker"

    def capabilities(self) -> bitbucket_diy.DatabaseCapabilities:
        return {"incremental_prepare": False}

    def backup(self, ctx: StepContext) -> StepResult:
        ctx.database_dir.mkdir(parents=True, exist_ok=True)
        (ctx.database_dir / "marker").write_text(ctx.backup_id)
        ctx.progress(1, 1, unit="files")
        return {"files": 1, "notes": {"id": ctx.backup_id}}

    def restore(self, ctx: RestoreContext, target: DatabaseTarget) -> StepResult | None:
        Path(target.database).write_text((ctx.database_dir / "marker").read_text())
        return None


def drive_the_client(client: MaintenanceClient) -> timedelta:
    with client.lock() as lock:
        client.start_backup(lock)
        waited: timedelta = client.wait_drained(lock, poll_interval=0.01, timeout=timedelta(minutes=1))
        client.report_progress(lock, 100)
    assert lock.lock_window is not None
    return waited


def main() -> BackupReport:
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name, bitbucket_diy.Simulator(drain_delay=0.02) as sim:
        tmp = Path(tmp_name)
        drive_the_client(MaintenanceClient(sim.url, sim.user, sim.password, request_timeout=10.0))
        config: dict[str, Any] = {
            "bitbucket": sim.bitbucket_config(),
            "filesystem": {"home": bitbucket_diy.sample_home(tmp / "home")},
            "archive": {"folder": tmp / "archives"},
            "backup": {"working_folder": tmp / "work", "poll_interval": timedelta(milliseconds=10)},
        }
        orchestrator = BackupOrchestrator(config, database=MarkerDatabase(), on_event=events.append)
        report = orchestrator.backup()
        archives: list[bitbucket_diy.ArchiveInfo] = orchestrator.list_backups()
        verified: bitbucket_diy.VerifyReport = orchestrator.verify(archives[0])
        restored: bitbucket_diy.RestoreReport = orchestrator.restore(report.id, tmp / "restored", str(tmp / "db"))
        assert verified.entries > 0 and restored.database == str(tmp / "db")
        assert (tmp / "db").read_text() == report.id
        try:
            orchestrator.restore("missing", tmp / "elsewhere", "x")
        except bitbucket_diy.ArchiveError as error:
            assert error.exit_code == 5 and isinstance(error.kind, str)
        return report


if __name__ == "__main__":
    print(main())
