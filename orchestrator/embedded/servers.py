"""Start, reuse and stop the local servers behind `embedded` and `localstack` settings.

Everything lives in DATA_DIR: `services.json` records each server this
DATA_DIR started (pid, process start time, port), the servers' logs and pid
files, and `services.lock`, held while servers are started or stopped so that
processes racing to start them end up sharing one of each.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from orchestrator.config import Endpoints, Settings, redact_uri
from orchestrator.embedded.localstack import localstack_python
from orchestrator.embedded.nxserver import LOCKED_EXIT
from orchestrator.errors import ConfigError, EmbeddedServerError


@dataclass(frozen=True)
class _Server:
    """How to run one kind of local server."""

    role: str  # key in services.json: "mongodb" or "sqs"
    kind: str  # "nx-27017", "moto" or "localstack"
    argv: list[str]
    env: dict[str, str]
    ready_timeout: float


# The Python package each embedded server needs, and the setting that asks for it.
_PACKAGES = {"nx-27017": ("nx_27017", "MONGODB_URI"), "moto": ("moto", "AWS_SQS_ENDPOINT")}
EXTRA_HINT = "pip install 'orchestrator[embedded]'"


def ensure(settings: Settings) -> Endpoints:
    """Endpoints for these settings, starting the local servers they call for if needed."""
    wanted = _wanted(settings)
    if not wanted:
        return _endpoints(settings, {})
    check_installed(wanted.values())
    with _locked(settings.data_path):
        records = _read_records(settings.data_path)
        for role, kind in wanted.items():
            record = records.get(role)
            if _alive(record):
                assert record is not None
                if record.get("kind") != kind:
                    raise EmbeddedServerError(
                        f"this DATA_DIR runs a {record.get('kind')} {role} server but the "
                        f"settings want {kind}; run `orchestrator services stop` first"
                    )
                continue
            records[role] = _start(settings, role)
            _write_records(settings.data_path, records)
        return _endpoints(settings, records)


def check_installed(kinds: Iterable[str]) -> None:
    """The embedded servers are an extra: a production install has none of their code.
    Asking for one without it is a setting that cannot work here (exit 2)."""
    for kind in kinds:
        module, key = _PACKAGES.get(kind, ("", ""))
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"{key}=embedded needs the embedded servers, which this installation lacks: "
                f"{EXTRA_HINT} (or point {key} at a real server)"
            )


def endpoints(settings: Settings) -> Endpoints:
    """Endpoints for these settings, using the ports recorded for local servers."""
    return _endpoints(settings, _read_records(settings.data_path))


def stop(settings: Settings) -> list[str]:
    """Stop the servers this DATA_DIR started; return the roles stopped."""
    stopped = []
    with _locked(settings.data_path):
        records = _read_records(settings.data_path)
        for role, record in sorted(records.items()):
            if _alive(record):
                _terminate(record["pid"])
                stopped.append(role)
            (settings.data_path / f"{role}.pid").unlink(missing_ok=True)
        _write_records(settings.data_path, {})
    return stopped


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    """The status document of docs/design.md §8: each server's address, pid (ours only) and
    whether it answers."""
    records = _read_records(settings.data_path)
    wanted = _wanted(settings)
    aws = f"https://sqs.{settings.aws_region}.amazonaws.com"
    out: dict[str, dict[str, Any]] = {}
    for role, key in (("mongodb", "uri"), ("sqs", "endpoint")):
        address = _address(settings, records, role) or ("" if role in wanted else aws)
        ours = role in wanted and _alive(records.get(role))
        out[role] = {
            key: redact_uri(address) if address else "(not started; port chosen at start)",
            "pid": records[role]["pid"] if ours else None,
            "running": bool(address) and _answers_url(address),
        }
    return out


def _wanted(settings: Settings) -> dict[str, str]:
    """role → kind of each local server these settings call for."""
    wanted = {"mongodb": "nx-27017"} if settings.mongodb_embedded else {}
    if settings.sqs_kind == "embedded":
        wanted["sqs"] = "moto"
    elif settings.sqs_kind == "localstack":
        wanted["sqs"] = "localstack"
    return wanted


def _configured_port(settings: Settings, role: str) -> int:
    return settings.embedded_mongodb_port if role == "mongodb" else settings.embedded_sqs_port


def _address(settings: Settings, records: dict[str, Any], role: str) -> str | None:
    """A role's address: a local server's (None while port 0 is not started) or the setting."""
    if role in _wanted(settings):
        record = records.get(role)
        port = (
            int(record["port"]) if record and _alive(record) else _configured_port(settings, role)
        )
        if not port:
            return None
        return f"mongodb://127.0.0.1:{port}/" if role == "mongodb" else f"http://127.0.0.1:{port}"
    return settings.mongodb_uri if role == "mongodb" else (settings.aws_sqs_endpoint or None)


def _endpoints(settings: Settings, records: dict[str, Any]) -> Endpoints:
    mongodb, sqs = (_address(settings, records, role) for role in ("mongodb", "sqs"))
    for role in _wanted(settings):
        if (mongodb if role == "mongodb" else sqs) is None:
            raise EmbeddedServerError(
                f"the embedded {role} server is not running (run `orchestrator services start`)"
            )
    return Endpoints(mongodb or "", sqs)


# --- starting ---------------------------------------------------------------


class _DataDirLocked(EmbeddedServerError):
    """Another nx-27017 server holds this DATA_DIR's database files."""


def _start(settings: Settings, role: str) -> dict[str, Any]:
    configured = _configured_port(settings, role)
    if configured and _answers(configured):
        raise EmbeddedServerError(
            f"port {configured} (EMBEDDED_{'MONGODB' if role == 'mongodb' else 'SQS'}_PORT) "
            "is in use by a process this DATA_DIR did not start; stop it or choose another "
            "port (0 picks a free one)"
        )
    attempts = 1 if configured else 3  # a free port can be taken between pick and bind
    for attempt in range(attempts):
        port = configured or _free_port()
        server = _server(settings, role, port)
        try:
            return _launch(settings.data_path, server, port)
        except _DataDirLocked:
            raise
        except EmbeddedServerError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _server(settings: Settings, role: str, port: int) -> _Server:
    data = settings.data_path
    if role == "mongodb":
        argv = [
            sys.executable, "-m", "orchestrator.embedded.nxserver", str(data / "mongodb"),
            "--host", "127.0.0.1", "--port", str(port),
            "--pid-file", str(data / "mongodb.pid"), "--log-file", str(data / "mongodb.log"),
        ]  # fmt: skip
        return _Server(role, "nx-27017", argv, {}, 15.0)
    if settings.sqs_kind == "localstack":
        python = localstack_python(data)
        if not python.exists():
            raise EmbeddedServerError(
                "AWS_SQS_ENDPOINT=localstack but LocalStack is not installed in "
                f"{data / 'localstack'}; run `orchestrator services install-localstack`"
            )
        env = {
            "SERVICES": "sqs",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "SQS_ENDPOINT_STRATEGY": "path",
            "PERSISTENCE": "0",
            "LOCALSTACK_VOLUME_DIR": str(data / "localstack" / "volume"),
        }
        return _Server(role, "localstack", [str(python), "-m", "localstack.runtime.main"], env, 120)
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return _Server(role, "moto", argv, {}, 20.0)


def _launch(data: Path, server: _Server, port: int) -> dict[str, Any]:
    """Spawn the server in its own session and wait until it answers as our own child."""
    log_path = data / f"{server.role}-{server.kind}.out"
    # nx-27017 refuses to start while its pid file names any live process, and after a
    # crash that pid may belong to a stranger; our flock (nxserver.py) is the real guard.
    (data / f"{server.role}.pid").unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            server.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **server.env},
            start_new_session=True,  # outlives the command; stop() signals the whole group
        )
    try:
        _wait_ready(proc, server, port, log_path)
    except BaseException:
        _terminate(proc.pid)  # interrupted or failed: leave no unrecorded server behind
        raise
    if server.role == "sqs":
        (data / "sqs.pid").write_text(f"{proc.pid}\n")
    created = psutil.Process(proc.pid).create_time()
    return {"pid": proc.pid, "created": created, "port": port, "kind": server.kind}


def _wait_ready(proc: subprocess.Popen[bytes], server: _Server, port: int, log_path: Path) -> None:
    """Ready means our own child (or its descendant) listens on the port and answers;
    a server that lost the race for the port must not pass for ours."""
    deadline = time.monotonic() + server.ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if proc.returncode == LOCKED_EXIT:
                raise _DataDirLocked(
                    f"another nx-27017 server already serves {server.argv[3]} "
                    f"(pid {_lock_holder(Path(server.argv[3]))}); stop it first"
                )
            raise EmbeddedServerError(
                f"embedded {server.kind} server exited with code {proc.returncode} on port "
                f"{port}; see {log_path}"
            )
        if _listens(proc.pid, port) and _ready(server, port):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(
        f"embedded {server.kind} server did not answer on port {port} within "
        f"{server.ready_timeout:.0f} s; see {log_path}"
    )


def _listens(pid: int, port: int) -> bool:
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in family:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    return True
    return False


def _lock_holder(folder: Path) -> str:
    try:
        return (folder / ".lock").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _ready(server: _Server, port: int) -> bool:
    if server.kind != "localstack":
        return _answers(port)
    try:
        url = f"http://127.0.0.1:{port}/_localstack/health"
        with urllib.request.urlopen(url, timeout=1) as resp:
            health = json.load(resp)
    except (OSError, ValueError):
        return False
    return health.get("services", {}).get("sqs") in ("available", "running")


# --- records, liveness, signals ----------------------------------------------


@contextlib.contextmanager
def _locked(data: Path) -> Iterator[None]:
    try:
        data.mkdir(parents=True, exist_ok=True)
        lock = open(data / "services.lock", "w")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"setting DATA_DIR: cannot use {data}: {exc.strerror}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_records(data: Path) -> dict[str, Any]:
    try:
        records = json.loads((data / "services.json").read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _write_records(data: Path, records: dict[str, Any]) -> None:
    tmp = data / "services.json.tmp"
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    tmp.replace(data / "services.json")


def _alive(record: dict[str, Any] | None) -> bool:
    """True if the recorded process still runs (same pid *and* same start time)."""
    if not record:
        return False
    try:
        proc = psutil.Process(record["pid"])
        return (
            abs(proc.create_time() - record["created"]) < 1.0
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError):
        return False


def _terminate(pid: int, grace: float = 5.0) -> None:
    """TERM the server's process group, wait up to `grace` for it, then KILL the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(grace)  # also reaps it when it is our own child
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # whatever of the group is left


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _answers_url(address: str) -> bool:
    from urllib.parse import urlsplit

    try:  # a malformed address (mongodb://u:p@[::1) does not answer
        parts = urlsplit(address)
        if not parts.hostname:
            return False
        default = {"https": 443, "http": 80}.get(parts.scheme, 27017)
        return _answers(parts.port or default, parts.hostname)
    except ValueError:
        return False
