"""The wheel, installed anywhere: built from this checkout, installed into a fresh venv,
and run from an empty folder with no env/ anywhere, on the built-in development defaults.
(Ports are the only settings given: the fixed defaults may be taken on a shared machine.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from orchestrator.backends.sqs import OPS_LOG_ENV
from tests.conftest import REPO
from tests.process.conftest import kill_session, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the wheel (and what it depends on) installed; its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--sdist",
                            "--outdir", str(root / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (root / "dist").glob("*.whl")
    assert list((root / "dist").glob("*.tar.gz")), "no sdist"
    venv.create(root / "venv", with_pip=True)
    pip = subprocess.run([str(root / "venv" / "bin" / "python"), "-m", "pip", "install",
                          "--quiet", "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    return root / "venv" / "bin"


def env_for(folder: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()  # the ops log: tests/iam.py
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", OPS_LOG_ENV)}  # fmt: skip
    return {**keep, "EMBEDDED_MONGODB_PORT": "0", "EMBEDDED_SQS_PORT": "0", "PORT": "0",
            "LOG_FORMAT": "json"}  # fmt: skip


def test_the_wheel_runs_from_an_empty_folder_on_its_defaults(
    installed: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "anywhere"
    folder.mkdir()
    env = env_for(folder)
    orchestrator = str(installed / "orchestrator")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([orchestrator, *args], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    try:
        started = cli("services", "start")
        assert started.returncode == 0, started.stderr
        shown = cli("config", "show")
        assert "built-in defaults" in shown.stdout, shown.stdout
        assert cli("queue", "create", "demo").returncode == 0
        assert cli("queue", "send", "demo", "20").returncode == 0
        log = folder / "run.log"
        with open(log, "wb") as out:
            daemon = subprocess.Popen([orchestrator, "run"], cwd=folder, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            wait_for(lambda: log.read_text().count("handler.message") >= 20, 120,
                     "the 20 messages handled by the built-in log handler")  # fmt: skip
            daemon.send_signal(signal.SIGINT)
            assert daemon.wait(timeout=60) == 0
        finally:
            kill_session(daemon)
        production = cli("--env", "production", "queue", "list")
        assert production.returncode == 2
        assert "environment 'production' not found; looked for" in production.stderr
        assert str(folder / "env" / "production.json") in production.stderr
        assert not (folder / "env").exists() and (folder / ".orchestrator").is_dir()
    finally:
        cli("services", "stop")
