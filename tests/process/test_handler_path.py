"""Where handlers import from: HANDLER_PYTHONPATH and installed packages, never the daemon's
working directory (a systemd WorkingDirectory or a container's WORKDIR must not decide)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.store import Store
from tests.process.conftest import Daemon, records, wait_for

pytestmark = pytest.mark.timeout(120)

HANDLER = '''
import json, os

def handle(message):
    path = os.path.join(os.environ["RECORD_DIR"], "app.jsonl")
    with open(path, "a") as out:
        out.write(json.dumps({"queue": message.queue_name, "body": message.body}) + "\\n")
'''


def app_module(folder: Path) -> str:
    """Write a handler module of a unique name into `folder`; its import path."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"app_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(HANDLER)
    return f"{name}:handle"


def test_a_handler_on_handler_pythonpath_runs_from_any_working_directory(
    start_daemon: Callable[..., Daemon], admin: QueueAdmin, record_dir: Path, tmp_path: Path
) -> None:
    handler = app_module(tmp_path / "app")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    admin.create("pathq", handler=handler)
    admin.send("pathq", 3, None, lambda n: None)
    daemon = start_daemon("--mode", "MW", cwd=elsewhere,
                          env={"HANDLER_PYTHONPATH": str(tmp_path / "app")})  # fmt: skip
    wait_for(lambda: len(records(record_dir)) >= 3, 60, "3 messages handled")
    assert daemon.stop() == 0


def test_a_handler_only_in_the_working_directory_does_not_import(
    start_daemon: Callable[..., Daemon], admin: QueueAdmin, store: Store, record_dir: Path,
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "workdir"
    handler = app_module(workdir)
    admin.create("cwdq", handler=handler)
    admin.send("cwdq", 2, None, lambda n: None)
    daemon = start_daemon("--mode", "MW", cwd=workdir)
    failed = wait_for(lambda: [j for j in store.jobs(status="failed") if j.error], 60,
                      "the job to fail at import")  # fmt: skip
    assert f"cannot import handler '{handler}'" in str(failed[0].error)
    assert "ModuleNotFoundError" in str(failed[0].error)
    assert records(record_dir) == []
    assert daemon.stop() == 0
