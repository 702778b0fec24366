"""The daemon's log on a pipe, as systemd, a container runtime or `| tee` read it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.store import Store
from tests.conftest import ORCHESTRATOR
from tests.process.conftest import kill_session, records, wait_for

pytestmark = pytest.mark.timeout(180)


class PipedDaemon:
    """`orchestrator run` with stdout and stderr on one pipe, read line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [ORCHESTRATOR, "run", *args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.lines: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == name:
                out.append(doc)
        return out

    def kill(self) -> None:
        kill_session(self.proc)


@pytest.fixture
def piped(daemon_env: dict[str, str]) -> Iterator[list[PipedDaemon]]:
    started: list[PipedDaemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def test_every_line_arrives_whole_and_handler_lines_say_where_they_come_from(
    admin: QueueAdmin,
    record_dir: Path,
    daemon_env: dict[str, str],
    piped: list[PipedDaemon],
) -> None:
    for name in ("l1", "l2", "l3"):
        admin.create(name, handler="orchestrator.handlers:log", concurrency=10)
        admin.send(name, 120)
    # Unbuffered, as in most container images: Python passes each part of a print on
    env = {**daemon_env, "PYTHONUNBUFFERED": "1", "WORKER_INSTANCES": "3"}
    daemon = PipedDaemon(env, "--mode", "MW")
    piped.append(daemon)

    wait_for(lambda: len(daemon.events("handler.message")) >= 360, 120, "360 handler lines")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=60) == 0
    daemon.reader.join(timeout=10)
    lines = [line for line in daemon.lines if line.strip()]
    fused = [line for line in lines if line.count(b'"event"') != 1]
    assert not fused, f"{len(fused)} of {len(lines)} lines hold more or less than one event"
    for line in lines:
        json.loads(line)  # each one whole JSON object
    for doc in daemon.events("handler.message"):
        assert doc["role"] == "consumer" and doc["pid"] and doc["queue"] in ("l1", "l2", "l3")
        assert doc["job_id"]


def test_a_closed_stdout_does_not_turn_a_graceful_stop_into_a_crash(
    admin: QueueAdmin,
    store: Store,
    record_dir: Path,
    daemon_env: dict[str, str],
    tmp_path: Path,
) -> None:
    admin.create("teed", handler="tests.handlers:slow_record", concurrency=2)
    admin.send("teed", 200)
    # `demo.sh | tee log`: the daemon writes into a pipe that another process reads
    read_end, write_end = os.pipe()
    with open(tmp_path / "tee.log", "wb") as out:
        tee = subprocess.Popen(["cat"], stdin=read_end, stdout=out)
    os.close(read_end)
    daemon = subprocess.Popen([ORCHESTRATOR, "run", "--mode", "MW"], env=daemon_env,
                              stdout=write_end, stderr=write_end,
                              start_new_session=True)  # fmt: skip
    os.close(write_end)
    try:
        wait_for(lambda: records(record_dir), 60, "messages handled")
        # Ctrl-C: tee dies first, then the daemon gets SIGINT
        tee.kill()
        tee.wait(timeout=10)
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(timeout=60) == 0  # the whole graceful stop ran
        assert store.workers() == []  # deregistered
        assert not [j for j in store.jobs(limit=100) if j.status in ("queued", "running")]
        assert store.assignments() == []
    finally:
        kill_session(daemon)
