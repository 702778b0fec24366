"""A role that cannot start is not restarted for ever; a newer schema stops the daemon (exit 2)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backends.store import Store
from tests.process.conftest import Daemon, wait_for

pytestmark = pytest.mark.timeout(120)

# Runs first in every Python process on PYTHONPATH: makes worker processes die at start
# (as a broken install or a role crashing before its loop would), the rest start as usual.
CRASH_WORKERS = """
import os, sys
if sys.orig_argv[-2:] == ["orchestrator.roles.process.child", "worker"]:
    os._exit(70)
"""


def test_a_role_that_keeps_failing_to_boot_stops_the_daemon_with_exit_1(
    start_daemon: Callable[..., Daemon], daemon_env: dict[str, str], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASH_WORKERS)
    env = {"PYTHONPATH": f"{site}:{daemon_env['PYTHONPATH']}"}
    started = time.monotonic()
    daemon = start_daemon("--mode", "MW", env=env)

    assert daemon.proc.wait(timeout=60) == 1
    assert time.monotonic() - started < 30  # not one restart every 30 s for ever
    [gave_up] = wait_for(lambda: daemon.events("supervisor.giving_up"), 5, "the reason")
    assert gave_up["child"] == "worker" and "failed to start 3 times in a row" in gave_up["reason"]
    assert len(daemon.events("child.died")) == 2  # restarted twice with backoff, then gave up
    assert daemon.events("supervisor.stopped")  # the master was stopped in order


def set_schema(store: Store, version: int) -> None:
    store._db["meta"].update_one({"_id": "schema"}, {"$set": {"version": version}})


@pytest.mark.parametrize("mode", ["M", "W", "MW"])
def test_run_refuses_a_database_of_a_newer_schema_with_exit_2(
    start_daemon: Callable[..., Daemon], store: Store, mode: str
) -> None:
    set_schema(store, 99)
    daemon = start_daemon("--mode", mode)

    assert daemon.proc.wait(timeout=30) == 2
    out = daemon.log()
    assert "has schema version 99" in out and "understands up to 1" in out, out
    assert not daemon.events("supervisor.started")  # refused before any role started
    assert store.schema_version() == 99


def test_a_role_that_meets_a_newer_schema_later_stops_the_daemon_with_exit_2(
    start_daemon: Callable[..., Daemon], store: Store
) -> None:
    """The database was upgraded under a running daemon: a role restarted since refuses
    it, and the supervisor stops instead of restarting it again and again."""
    daemon = start_daemon("--mode", "W", "--workers", "1")
    [started] = wait_for(lambda: daemon.events("child.started"), 30, "the worker to start")
    wait_for(store.workers, 30, "the worker to register")
    set_schema(store, 99)
    os.kill(started["child_pid"], signal.SIGKILL)

    assert daemon.proc.wait(timeout=60) == 2
    [refused] = daemon.events("process.refused")
    assert "has schema version 99" in refused["error"]
    [gave_up] = daemon.events("supervisor.giving_up")
    assert gave_up["exit"] == "exit code 2" and "refused the database" in gave_up["reason"]
    assert len(daemon.events("child.died")) == 1  # the SIGKILL; the refusal is not restarted
    assert not daemon.events("process.crashed")  # said in one line, not as a crash
