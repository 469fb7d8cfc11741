"""MaintenanceClient against the simulator: every call, the lock context manager, errors."""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import pytest

import bitbucket_diy
from bitbucket_diy import MaintenanceClient, Simulator


def test_reads_version_and_status(sim: Simulator) -> None:
    client = sim.client()
    assert client.application_properties().version == "8.19.0"
    status = client.status()
    assert (status.state, status.is_running) == ("RUNNING", True)


def test_full_call_sequence_is_seen_by_bitbucket(sim: Simulator) -> None:
    client = MaintenanceClient(sim.url, sim.user, sim.password, request_timeout=5)
    with client.lock() as lock:
        assert sim.is_locked and lock.is_held
        assert "Administrator" in lock.owner
        assert client.status().state == "MAINTENANCE"
        task = client.start_backup(lock)
        assert task.id
        polls: list[bitbucket_diy.MaintenanceState] = []
        waited = client.wait_drained(lock, poll_interval=0.01, timeout=10, on_poll=polls.append)
        assert isinstance(waited, timedelta)
        assert polls[-1].is_drained and polls[-1].task_state == "RUNNING"
        client.report_progress(lock, 50)
        client.report_progress(lock, 100)
        assert client.maintenance_state(lock).task_state == "SUCCESSFUL"
    assert not sim.is_locked
    assert not lock.is_held and lock.lock_window is not None
    assert sim.state()["progress"] == [50, 100]
    kinds = [e["event"] for e in sim.events() if e["event"] != "request"]
    assert kinds == ["locked", "backup-started", "drained", "progress-reported", "progress-reported", "task-finished", "unlocked"]


def test_lock_context_manager_unlocks_when_the_block_raises(sim: Simulator) -> None:
    client = sim.client()
    with pytest.raises(ZeroDivisionError):
        with client.lock():
            assert sim.is_locked
            1 / 0
    assert not sim.is_locked
    assert any(e["event"] == "unlocked" for e in sim.events())


def test_lock_context_manager_unlocks_on_keyboard_interrupt(sim: Simulator) -> None:
    client = sim.client()
    with pytest.raises(KeyboardInterrupt):
        with client.lock():
            raise KeyboardInterrupt
    assert not sim.is_locked


def test_release_is_idempotent_and_reports_the_window(sim: Simulator) -> None:
    lock = sim.client().lock()
    window = lock.release()
    assert window > timedelta(0)
    assert lock.release() == window
    assert not sim.is_locked
    with pytest.raises(bitbucket_diy.ConfigError, match="released"):
        sim.client().start_backup(lock)


def test_wrong_password_is_an_auth_error_with_kind_and_exit_code(sim: Simulator) -> None:
    client = MaintenanceClient(sim.url, sim.user, "not-the-password")
    with pytest.raises(bitbucket_diy.AuthError) as caught:
        client.lock()
    error = caught.value
    assert error.kind == "unauthorized" and error.exit_code == 3
    assert "401" in str(error) and "not-the-password" not in str(error)
    assert isinstance(error, bitbucket_diy.BitbucketError) and isinstance(error, bitbucket_diy.BitbucketDiyError)
    assert not sim.is_locked


def test_user_without_admin_permission_is_forbidden() -> None:
    with Simulator(non_admin_users={"alice": "alice-pw"}) as sim:
        with pytest.raises(bitbucket_diy.AuthError) as caught:
            MaintenanceClient(sim.url, "alice", "alice-pw").lock()
        assert caught.value.kind == "forbidden"


def test_already_locked_names_the_holder(sim: Simulator) -> None:
    sim.add_fault("locked-by:Jane Admin")
    with pytest.raises(bitbucket_diy.AlreadyLockedError, match="Jane Admin") as caught:
        sim.client().lock()
    assert caught.value.kind == "already-locked"


def test_wrong_context_path_is_not_found() -> None:
    with Simulator(context_path="/bitbucket") as sim:
        wrong = sim.url.replace("/bitbucket", "/bb")
        with pytest.raises(bitbucket_diy.NotFoundError):
            MaintenanceClient(wrong, sim.user, sim.password).lock()
        assert MaintenanceClient(sim.url, sim.user, sim.password).status().is_running


def test_server_errors_carry_the_status_and_are_retryable(sim: Simulator) -> None:
    sim.add_fault("server-error:lock")
    with pytest.raises(bitbucket_diy.ServerError) as caught:
        sim.client().lock()
    assert "500" in str(caught.value) and caught.value.is_retryable


def test_unreachable_instance_is_a_transport_error() -> None:
    with Simulator() as sim:
        url = sim.url
    client = MaintenanceClient(url, "admin", "admin", connect_timeout=2, retries=1)
    with pytest.raises(bitbucket_diy.TransportError) as caught:
        client.status()
    assert isinstance(caught.value, ConnectionError)


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(bitbucket_diy.ConfigError, match="url") as caught:
        MaintenanceClient("ftp://bitbucket.example.com", "admin", "pw")
    assert caught.value.exit_code == 2 and isinstance(caught.value, ValueError)


def test_drain_failure_and_timeout_are_distinct(sim: Simulator) -> None:
    client = sim.client()
    sim.add_fault("task-fails")
    with client.lock() as lock:
        client.start_backup(lock)
        with pytest.raises(bitbucket_diy.DrainFailedError):
            client.wait_drained(lock, poll_interval=0.01, timeout=10)
    sim.clear_faults()
    sim.add_fault("only-database-drains")
    with client.lock() as lock:
        task = client.start_backup(lock)
        with pytest.raises(bitbucket_diy.DrainTimeoutError) as caught:
            client.wait_drained(lock, poll_interval=0.01, timeout=0.3)
        assert isinstance(caught.value, TimeoutError) and caught.value.kind == "timeout"
        client.cancel_backup(task)
    assert not sim.is_locked


def test_cancel_backup_ends_the_task_but_keeps_the_lock(sim: Simulator) -> None:
    client = sim.client()
    with client.lock() as lock:
        task = client.start_backup(lock)
        client.cancel_backup(task)
        assert client.maintenance_state(lock).task_state == "CANCELED"
        assert sim.is_locked
    assert not sim.is_locked


def test_unlock_by_token_string_recovers_and_a_wrong_token_is_refused(sim: Simulator) -> None:
    client = sim.client()
    lock = client.lock()
    token = sim.state()["unlock_token"]
    with pytest.raises(bitbucket_diy.InvalidTokenError):
        client.unlock("0" * 40)
    assert sim.is_locked
    client.unlock(token)
    assert not sim.is_locked
    # Bitbucket refuses the spent token, but /status shows the instance unlocked: released.
    assert lock.release() > timedelta(0)
    assert not lock.is_held


def test_failed_unlock_raises_left_locked_with_the_manual_command(sim: Simulator) -> None:
    client = sim.client()
    sim.add_fault("reject-unlock:100")
    with pytest.raises(bitbucket_diy.LeftLockedError) as caught:
        with client.lock() as lock:
            token = sim.state()["unlock_token"]
    error = caught.value
    assert sim.is_locked
    assert error.kind == "left-locked" and error.exit_code == 10
    assert token in error.unlock_command and token in str(error)
    assert "STILL LOCKED" in str(error)
    assert token not in repr(error) and token not in repr(lock)
    sim.clear_faults()
    lock.release()
    assert not sim.is_locked


def test_on_poll_exception_stops_the_wait_and_is_raised(sim: Simulator) -> None:
    client = sim.client()
    sim.add_fault("never-drain")

    def explode(state: bitbucket_diy.MaintenanceState) -> None:
        raise LookupError("poll callback failed")

    with client.lock() as lock:
        client.start_backup(lock)
        with pytest.raises(LookupError, match="poll callback failed"):
            client.wait_drained(lock, poll_interval=0.01, timeout=30, on_poll=explode)
    assert not sim.is_locked


def test_ctrl_c_interrupts_a_drain_wait_and_the_with_block_unlocks(sim: Simulator) -> None:
    client = sim.client()
    sim.add_fault("never-drain")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        with client.lock() as lock:
            client.start_backup(lock)
            timer.start()
            client.wait_drained(lock, poll_interval=0.01, timeout=60)
    timer.join()
    assert not sim.is_locked


def test_reprs_never_show_tokens_or_passwords() -> None:
    with Simulator(password="s3cret-pw") as sim:
        _check_reprs(sim)


def _check_reprs(sim: Simulator) -> None:
    client = sim.client()
    with client.lock() as lock:
        task = client.start_backup(lock)
        state = sim.state()
        shown = " ".join(repr(x) for x in (client, lock, task, sim))
        assert state["unlock_token"] not in shown and state["cancel_token"] not in shown
        assert state["unlock_token"] in lock.unlock_command()
        assert sim.password not in repr(client)


def test_a_lock_garbage_collected_unreleased_is_unlocked_best_effort(sim: Simulator) -> None:
    import gc
    import time

    lock = sim.client().lock()
    assert sim.is_locked
    del lock
    gc.collect()
    deadline = time.monotonic() + 10
    while sim.is_locked and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not sim.is_locked


def test_core_logs_reach_python_logging(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="bitbucket_diy"):
        MaintenanceClient(sim.url, sim.user, sim.password, insecure_skip_tls_verify=True)
        with sim.client().lock():
            pass
    messages = [r.getMessage() for r in caplog.records if r.name == "bitbucket_diy"]
    assert any("TLS certificate verification is OFF" in m for m in messages), messages
    assert any("Bitbucket locked for maintenance" in m for m in messages), messages
    assert sim.password not in " ".join(messages)


def test_a_lost_lock_whose_unlock_fails_logs_the_manual_command(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    import gc
    import time

    lock = sim.client().lock()
    token = sim.state()["unlock_token"]
    sim.add_fault("reject-unlock:100")
    with caplog.at_level("ERROR", logger="bitbucket_diy"):
        del lock
        gc.collect()
        deadline = time.monotonic() + 10
        while not any("STILL LOCKED" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)
    [record] = [r for r in caplog.records if "STILL LOCKED" in r.getMessage()]
    assert record.levelname == "ERROR" and token in record.getMessage()
    assert sim.is_locked
    sim.clear_faults()
    sim.client().unlock(token)


def test_ctrl_c_while_locking_gives_the_lock_back(sim: Simulator) -> None:
    sim.add_fault("slow:1s:lock")
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sim.client().lock()
    timer.join()
    kinds = [e["event"] for e in sim.events() if e["event"] != "request"]
    assert kinds == ["locked", "unlocked"]
    assert not sim.is_locked
