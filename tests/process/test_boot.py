"""A role that cannot start is not restarted for ever."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import Daemon, wait_for

pytestmark = pytest.mark.timeout(120)

# Runs first in every Python process on PYTHONPATH: makes worker processes die at start
# (as a broken install or a role crashing before its loop would), the rest start as usual.
CRASH_WORKERS = """
import os, sys
if sys.orig_argv[-2:] == ["orchestrator.roles.child", "worker"]:
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
