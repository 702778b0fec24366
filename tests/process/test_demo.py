"""The README's first command, `bash scripts/demo.sh`, run twice with the servers
stopped in between, as a new user would (isolated: own DATA_DIR and ports)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ORCHESTRATOR, REPO, base_environ
from tests.process.conftest import kill_session, wait_for

pytestmark = pytest.mark.timeout(300)


def run_demo(env: dict[str, str], log: Path) -> None:
    """demo.sh until it handled its 100 messages, then Ctrl-C: it must exit 0."""
    with open(log, "wb") as out:
        demo = subprocess.Popen(["bash", str(REPO / "scripts" / "demo.sh")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: log.read_text().count("handler.message") >= 100 or demo.poll() is not None,
                 120, "the demo's 100 messages handled")  # fmt: skip
        assert demo.poll() is None, f"demo.sh exited {demo.returncode}:\n{log.read_text()[-3000:]}"
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        kill_session(demo)


def test_the_demo_works_every_time_it_is_run(tmp_path: Path) -> None:
    env = {
        **base_environ(tmp_path / "data"),
        "ORCHESTRATOR_ENV": "development",
        "EMBEDDED_MONGODB_PORT": "0",
        "EMBEDDED_SQS_PORT": "0",
        "PORT": "0",
        "LOG_FORMAT": "json",
        "ORCHESTRATOR_DEMO_SETUP": "0",  # the test's own .venv is set up
    }
    try:
        run_demo(env, tmp_path / "first.log")
        stopped = subprocess.run([ORCHESTRATOR, "services", "stop"], env=env, timeout=60,
                                 capture_output=True, text=True, check=False)  # fmt: skip
        assert stopped.returncode == 0, stopped.stderr
        run_demo(env, tmp_path / "second.log")  # SQS forgot `demo`; MongoDB did not
    finally:
        subprocess.run([ORCHESTRATOR, "services", "stop"], env=env, timeout=60,
                       capture_output=True, check=False)  # fmt: skip
