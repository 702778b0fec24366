"""The wheel, installed anywhere: built from this checkout, installed into a fresh venv
(first the base install a production worker gets, then with the embedded extra), and run
from an empty folder with no env/ anywhere, on the built-in development defaults. (Ports
and the per-user data folder are the only settings given: the fixed defaults may be taken
on a shared machine.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from orchestrator.backends.sqs import OPS_LOG_ENV
from tests.conftest import REPO
from tests.process.conftest import kill_session, wait_for

# One xdist worker builds the wheel for all: two builds of one checkout at once trip over
# each other's setuptools scratch folders.
pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("wheel")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout (an sdist is built beside it)."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--sdist",
                            "--outdir", str(root / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [found] = (root / "dist").glob("*.whl")
    assert list((root / "dist").glob("*.tar.gz")), "no sdist"
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """A venv with only the wheel and its base dependencies; its bin folder."""
    root = wheel.parent.parent
    venv.create(root / "venv", with_pip=True)
    pip(root / "venv" / "bin", str(wheel))
    return root / "venv" / "bin"


def pip(bin_dir: Path, requirement: str) -> None:
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", requirement],
                          capture_output=True, text=True, timeout=400, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_wheel_holds_one_import_package_and_the_servers_are_an_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    tops = {n.split("/")[0] for n in names} - {info}
    assert tops == {"orchestrator"}, tops
    assert "orchestrator = orchestrator.cli.main:main" in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for server in ("nx-27017", "moto"):
        [line] = [r for r in requires if server in r]
        assert 'extra == "embedded"' in line, line
    assert "Provides-Extra: embedded" in metadata


def test_a_base_install_names_the_extra_the_embedded_servers_need(
    installed: Path, tmp_path: Path
) -> None:
    env = env_for(tmp_path)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(installed / "orchestrator"), *args], cwd=tmp_path,
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip

    for args, extra, key in [(("services", "start"), {}, "MONGODB_URI"),
                             (("queue", "list"), {}, "MONGODB_URI"),
                             (("queue", "list"), {"MONGODB_URI": "mongodb://127.0.0.1:9"},
                              "AWS_SQS_ENDPOINT")]:  # fmt: skip
        done = cli(*args, **extra)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"{key}=embedded needs the embedded servers" in done.stderr
        assert "pip install 'orchestrator[embedded]'" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "xdg").exists()  # nothing was started or written
    assert cli("--help").returncode == 0


def env_for(folder: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()  # the ops log: tests/iam.py
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", OPS_LOG_ENV)}  # fmt: skip
    return {**keep, "EMBEDDED_MONGODB_PORT": "0", "EMBEDDED_SQS_PORT": "0", "PORT": "0",
            "LOG_FORMAT": "json", "XDG_DATA_HOME": str(folder / "xdg")}  # fmt: skip


def test_with_the_extra_the_wheel_runs_from_an_empty_folder_on_its_defaults(
    installed: Path, wheel: Path, tmp_path: Path
) -> None:
    pip(installed, f"{wheel}[embedded]")
    folder = tmp_path / "anywhere"
    folder.mkdir()
    env = env_for(tmp_path)
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
        assert not (folder / "env").exists() and not (folder / ".orchestrator").exists()
        assert (tmp_path / "xdg" / "orchestrator" / "services.json").is_file()
    finally:
        cli("services", "stop")
