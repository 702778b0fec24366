"""/livez and /readyz of every `orchestrator run` (M, W, MW) on HEALTH_PORT, and a fenced
worker's /readyz 503 (its own MongoDB server frozen with SIGSTOP, then thawed)."""

from __future__ import annotations

import os
import signal
import socket
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.embedded import servers as embedded
from tests.conftest import base_environ
from tests.http import call
from tests.process.conftest import Daemon, wait_for

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, Any]:
    """(status, JSON) of a probe; (0, None) while nothing listens yet."""
    try:
        return call("GET", f"http://127.0.0.1:{port}{path}")
    except urllib.error.URLError:
        return 0, None


@pytest.mark.parametrize(("mode", "roles"), [("M", ["master"]), ("W", ["worker"]),
                                             ("MW", ["master", "worker"])])
def test_every_mode_serves_its_probes(
    start_daemon: Callable[..., Daemon], mode: str, roles: list[str]
) -> None:
    port = free_port()
    daemon = start_daemon("--mode", mode, env={"HEALTH_PORT": str(port)})
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, f"{mode} ready")
    status, live = probe(port, "/livez")
    assert status == 200 and live["status"] == "ok"
    assert [r["role"] for r in live["roles"]] == roles
    _, ready = probe(port, "/readyz")
    assert all(r["ready"] and r["pid"] for r in ready["roles"])
    assert probe(port, "/nope")[0] == 404
    assert daemon.stop() == 0


@pytest.fixture
def own_mongodb(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """A MongoDB server of this test's alone (the environment to reach it, its pid)."""
    environ = base_environ(tmp_path / "own", EMBEDDED_MONGODB_PORT="0", EMBEDDED_SQS_PORT="0")
    settings = config.load(environ=environ)
    embedded.ensure(settings)
    pid = int(embedded.status(settings)["mongodb"]["pid"])
    yield {"DATA_DIR": environ["DATA_DIR"]}, pid
    os.kill(pid, signal.SIGCONT)
    embedded.stop(settings)


def test_a_fenced_worker_is_not_ready_and_comes_back(
    start_daemon: Callable[..., Daemon], own_mongodb: tuple[dict[str, str], int]
) -> None:
    env, mongodb_pid = own_mongodb
    port = free_port()
    daemon = start_daemon("--mode", "W", env={**env, "HEALTH_PORT": str(port)})
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "the worker ready")
    os.kill(mongodb_pid, signal.SIGSTOP)  # heartbeats now fail: the worker fences itself
    # Not ready once its heartbeat is WORKER_TIMEOUT/2 old; fenced at 0.7 x WORKER_TIMEOUT.
    wait_for(lambda: (a := probe(port, "/readyz"))[0] == 503 and a[1]["roles"][0]["fenced"],
             30, "/readyz 503, fenced")  # fmt: skip
    assert probe(port, "/livez")[0] == 200  # alive all the same: not to be restarted
    os.kill(mongodb_pid, signal.SIGCONT)
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "ready again after the thaw")
    assert daemon.stop() == 0
