"""Fixtures shared by every test suite: real servers, isolated per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from orchestrator import config
from orchestrator.backends.sqs import OPS_LOG_ENV, Sqs
from orchestrator.backends.store import Store
from orchestrator.cli.main import cli
from orchestrator.config import Endpoints, Settings
from orchestrator.embedded import servers as embedded
from tests import iam

REPO = Path(__file__).resolve().parent.parent
ENV_DIR = REPO / "env"
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
OPS_DIR = pytest.StashKey[Path]()
IAM_REPORT = pytest.StashKey[list[str]]()
IAM_FAILED = pytest.StashKey[bool]()


# --- IAM: every SQS operation of the session against docs/iam/ (tests/iam.py) ----------


def pytest_configure(config: pytest.Config) -> None:
    """On the controller, before any worker or daemon starts: every process of the
    session (xdist workers, daemons, their children) inherits the ops log's path."""
    if hasattr(config, "workerinput"):
        return
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-sqs-ops-"))
    config.stash[OPS_DIR] = folder
    os.environ[OPS_LOG_ENV] = str(folder / "ops.jsonl")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On the controller: fail the run when a caller made an operation its policy lacks."""
    if hasattr(session.config, "workerinput"):
        return
    records = iam.read_records(session.config.stash[OPS_DIR] / "ops.jsonl")
    policies = iam.load_policies()
    problems = iam.missing(records, policies)
    report = [f"SQS operations seen by role: {iam.summary(records)}"]
    if records:
        report.append(f"allowed by docs/iam but not seen: {iam.unused(records, policies)}")
    report += [f"IAM POLICY CHECK FAILED: {problem}" for problem in problems]
    session.config.stash[IAM_REPORT] = report
    session.config.stash[IAM_FAILED] = bool(problems)
    if problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # scripts/test.sh's exit code


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    report = config.stash.get(IAM_REPORT, [])
    if report:
        terminalreporter.section("SQS operations against docs/iam")
        for line in report:
            terminalreporter.write_line(line, red=line.startswith("IAM POLICY CHECK FAILED"))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the ops log, unless the check failed (its path is then printed)."""
    folder = config.stash.get(OPS_DIR, None)
    if folder is None:
        return
    if config.stash.get(IAM_FAILED, False):
        print(f"SQS operations recorded: {folder / 'ops.jsonl'}", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def base_environ(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for the test settings: test env file, own DATA_DIR, ports picked at start."""
    keep = {k: v for k, v in os.environ.items() if k not in config.setting_keys()}
    return {
        **keep,
        "ORCHESTRATOR_CONFIG_DIR": str(ENV_DIR),
        "ORCHESTRATOR_ENV": "test",
        "DATA_DIR": str(data_dir),
        **extra,
    }


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A DATA_DIR whose embedded MongoDB and SQS servers run for the whole session."""
    data_dir = tmp_path_factory.mktemp("services")
    settings = config.load(environ=base_environ(data_dir))
    embedded.ensure(settings)
    yield data_dir
    embedded.stop(settings)


@pytest.fixture(scope="session")
def endpoints(services_dir: Path) -> Endpoints:
    return embedded.endpoints(config.load(environ=base_environ(services_dir)))


@pytest.fixture
def environ(services_dir: Path, endpoints: Endpoints) -> dict[str, str]:
    """This test's environment: the session's servers, its own database, a clean SQS."""
    assert endpoints.sqs_endpoint
    request = urllib.request.Request(f"{endpoints.sqs_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=5).close()
    return base_environ(services_dir, MONGODB_NAME=f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def settings(environ: Mapping[str, str]) -> Settings:
    return config.load(environ=environ)


@pytest.fixture
def store(settings: Settings, endpoints: Endpoints) -> Iterator[Store]:
    store = Store(endpoints.mongodb_uri, settings.mongodb_name, job_ttl_days=settings.job_ttl_days)
    store.ensure_indexes()
    yield store
    store.close()


@pytest.fixture
def sqs(settings: Settings, endpoints: Endpoints) -> Sqs:
    """The tests' own client: its calls are not the product's (not checked against docs/iam)."""
    return Sqs(endpoints.sqs_endpoint, settings.aws_region, "test", "test")


@pytest.fixture
def daemon_sqs(settings: Settings, endpoints: Endpoints) -> Sqs:
    """A client as a master or consumer makes it: its calls are checked against
    docs/iam/daemon.json at the end of the session."""
    return Sqs.connect(settings, endpoints.sqs_endpoint, caller="daemon")


@pytest.fixture
def run_cli(environ: dict[str, str]) -> Callable[..., Result]:
    """Run the CLI in-process (the real click app) with this test's environment."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(
            cli, list(args), env={**environ, **(env or {})}, catch_exceptions=False
        )

    return run


@pytest.fixture
def run_console(environ: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed `orchestrator` console script as a real process."""

    def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60,
            cwd: Path | None = None) -> Any:  # fmt: skip
        return subprocess.run(
            [ORCHESTRATOR, *args],
            env={**environ, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
