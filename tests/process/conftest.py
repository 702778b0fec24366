"""Real daemons as subprocesses, stopped with real signals; everything polled with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from tests.conftest import ORCHESTRATOR, REPO

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def holds_for(
    check: Callable[[], object], seconds: float, what: str, interval: float = 0.2
) -> None:
    """Poll `check` for `seconds`; fail as soon as it stops holding."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what}: stopped holding"
        time.sleep(interval)


@dataclass
class Daemon:
    """An `orchestrator run` process tree in its own session, with its log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Log lines (JSON) whose event is `name`."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == name:
                    out.append(doc)
        return out

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill_tree(self) -> None:
        """Leave nothing behind: SIGKILL the whole session's process groups."""
        if self.proc.poll() is None:
            self.proc.kill()
        kill_session(self.proc)


def kill_session(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL every process of the session `proc` leads (started with
    start_new_session), then reap it: a test leaves nothing running behind."""
    for pid in _session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


def records(record_dir: Path) -> list[dict[str, Any]]:
    """Everything the test handlers recorded so far."""
    out = []
    for path in record_dir.glob("*.jsonl"):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


@pytest.fixture
def daemon_env(environ: dict[str, str], record_dir: Path) -> dict[str, str]:
    """The daemon's environment: test settings, JSON logs, test handlers importable."""
    return {
        **environ,
        "RECORD_DIR": str(record_dir),
        "PYTHONPATH": str(REPO),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def start_daemon(daemon_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Daemon:
        log_path = tmp_path / f"daemon-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [ORCHESTRATOR, "run", *args],
                env={**daemon_env, **(env or {})},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon = Daemon(proc, log_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill_tree()


@pytest.fixture
def admin(settings: Settings, store: Store, sqs: Sqs) -> QueueAdmin:
    return QueueAdmin(settings, lambda: store, lambda: sqs)


def api_url(daemon: Daemon, timeout: float = 30) -> str:
    """The address the daemon's master serves its API on (PORT=0: it logs the one it got)."""
    found = wait_for(lambda: daemon.events("api.listening"), timeout, "the API to listen")
    return str(found[0]["url"]).rstrip("/")
