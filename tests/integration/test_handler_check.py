"""Setting a handler that does not import where it is set: a warning, not a refusal (the
admin's host may not carry the application's code; the workers' hosts must)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.http.api import Api
from orchestrator.http.fleet import Fleet
from orchestrator.http.server import ApiServer
from tests.http import call
from tests.process.conftest import wait_for

pytestmark = pytest.mark.timeout(60)
Console = Callable[..., subprocess.CompletedProcess[str]]


def app_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder with a handler module of a unique name; (folder, import path)."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / f"{name}.py").write_text("def handle(message):\n    pass\n")
    return tmp_path / "app", f"{name}:handle"


def test_the_cli_warns_when_a_handler_does_not_import_here(
    run_console: Console, store: Store, tmp_path: Path
) -> None:
    folder, handler = app_folder(tmp_path)
    created = run_console("queue", "create", "q1", "--handler", handler)
    assert created.returncode == 0, created.stderr
    assert f"warning: cannot import handler '{handler}'" in created.stderr
    assert "HANDLER_PYTHONPATH" in created.stderr
    assert store.get_queue("q1").handler == handler  # set all the same
    # The working directory is not on the path, even when the module lies there.
    here = run_console("queue", "set", "q1", "--handler", handler, cwd=folder)
    assert here.returncode == 0 and "ModuleNotFoundError" in here.stderr
    for args in (["queue", "set", "q1", "--handler", handler],
                 ["queue", "set-handler", "q1", handler],
                 ["queue", "create", "q2", "--handler", handler]):  # fmt: skip
        quiet = run_console(*args, env={"HANDLER_PYTHONPATH": str(folder)})
        assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


@pytest.fixture
def admin(settings: Settings, store: Store, sqs: Sqs) -> QueueAdmin:
    return QueueAdmin(settings, lambda: store, lambda: sqs)


@pytest.fixture
def api_address(settings: Settings, store: Store, sqs: Sqs) -> Iterator[str]:
    api = Api(settings, Fleet(settings, store, sqs), CollectorRegistry(), lambda: {"status": "ok"})
    server = ApiServer(settings, api)
    server.start()
    bound = wait_for(lambda: server.server, 10, "the server to bind")
    yield f"http://127.0.0.1:{bound.server_address[1]}"
    server.stop()


def test_the_api_answers_a_patch_with_its_warnings(api_address: str, admin: QueueAdmin) -> None:
    admin.create("q")
    status, doc = call("PATCH", f"{api_address}/api/queues/q", {"handler": "nowhere_x1:fn"})
    assert status == 200 and doc["handler"] == "nowhere_x1:fn"
    [warning] = doc["warnings"]
    assert "cannot import handler 'nowhere_x1:fn'" in warning and "ModuleNotFoundError" in warning
    status, doc = call("PATCH", f"{api_address}/api/queues/q",
                       {"handler": "orchestrator.handlers:noop", "concurrency": 2})  # fmt: skip
    assert (status, doc["warnings"]) == (200, [])
    status, doc = call("PATCH", f"{api_address}/api/queues/q", {"concurrency": 3})
    assert (status, doc["warnings"]) == (200, [])
