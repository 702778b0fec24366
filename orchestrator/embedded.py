"""Start, reuse and stop the local servers behind `embedded` and `localstack` settings.

Everything lives in DATA_DIR: `services.json` records each server this
DATA_DIR started (pid, process start time, port), the servers' logs and pid
files, and `services.lock`, held while servers are started or stopped so that
processes racing to start them end up sharing one of each.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from orchestrator.config import Settings, redact_uri
from orchestrator.errors import EmbeddedServerError

LOCALSTACK_PINS = ["cbor2==5.6.5", "cryptography==45.0.7", "pyopenssl==25.1.0", "service_identity"]
LOCALSTACK_PACKAGE = "localstack-core[runtime]"


@dataclass(frozen=True)
class Endpoints:
    """Where the servers are: a MongoDB URI and an SQS endpoint URL (None means AWS)."""

    mongodb_uri: str
    sqs_endpoint: str | None


@dataclass(frozen=True)
class _Server:
    """How to run one kind of local server."""

    role: str  # key in services.json: "mongodb" or "sqs"
    kind: str  # "nx-27017", "moto" or "localstack"
    argv: list[str]
    env: dict[str, str]
    ready_timeout: float


def ensure(settings: Settings) -> Endpoints:
    """Endpoints for these settings, starting the local servers they call for if needed."""
    wanted = _wanted(settings)
    if wanted:
        with _locked(settings.data_path):
            records = _read_records(settings.data_path)
            for role in wanted:
                if not _alive(records.get(role)):
                    records[role] = _start(settings, role)
                    _write_records(settings.data_path, records)
    return endpoints(settings)


def endpoints(settings: Settings) -> Endpoints:
    """Endpoints for these settings, using the ports recorded for local servers."""
    records = _read_records(settings.data_path)
    uri = settings.mongodb_uri
    if settings.mongodb_embedded:
        uri = _url("mongodb", _port(records, "mongodb", settings), "mongodb") + "/"
    sqs: str | None = settings.aws_sqs_endpoint or None
    if settings.sqs_kind in ("embedded", "localstack"):
        sqs = _url("http", _port(records, "sqs", settings), "sqs")
    return Endpoints(uri, sqs)


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
    """The §8 status document: each server's address, pid (ours only) and whether it answers."""
    records = _read_records(settings.data_path)
    wanted = _wanted(settings)
    aws = f"https://sqs.{settings.aws_region}.amazonaws.com"
    addresses = {
        "mongodb": ("uri", settings.mongodb_uri, "mongodb"),
        "sqs": ("endpoint", settings.aws_sqs_endpoint or aws, "http"),
    }
    out: dict[str, dict[str, Any]] = {}
    for role, (key, address, scheme) in addresses.items():
        ours = role in wanted and _alive(records.get(role))
        port = _port(records, role, settings) if role in wanted else None
        if role in wanted:
            address = f"{scheme}://127.0.0.1:{port}" if port else "(port chosen at start)"
        out[role] = {
            key: redact_uri(address),
            "pid": records[role]["pid"] if ours else None,
            "running": _answers_url(address),
        }
    return out


def _wanted(settings: Settings) -> list[str]:
    roles = ["mongodb"] if settings.mongodb_embedded else []
    if settings.sqs_kind in ("embedded", "localstack"):
        roles.append("sqs")
    return roles


def _port(records: dict[str, Any], role: str, settings: Settings) -> int | None:
    """The recorded port of a live server, else the configured one (None for "pick one")."""
    record = records.get(role)
    if record and _alive(record):
        return int(record["port"])
    configured = settings.embedded_mongodb_port if role == "mongodb" else settings.embedded_sqs_port
    return configured or None


def _url(scheme: str, port: int | None, role: str) -> str:
    if port is None:
        raise EmbeddedServerError(
            f"the embedded {role} server is not running (run `orchestrator services start`)"
        )
    return f"{scheme}://127.0.0.1:{port}"


# --- starting ---------------------------------------------------------------


def _start(settings: Settings, role: str) -> dict[str, Any]:
    configured = settings.embedded_mongodb_port if role == "mongodb" else settings.embedded_sqs_port
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
        except EmbeddedServerError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _server(settings: Settings, role: str, port: int) -> _Server:
    data = settings.data_path
    if role == "mongodb":
        argv = [
            sys.executable, "-m", "orchestrator.nxserver", str(data / "mongodb"),
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
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / f"{server.role}-{server.kind}.out"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            server.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **server.env},
            start_new_session=True,  # outlives the command; stop() signals the whole group
        )
    deadline = time.monotonic() + server.ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServerError(
                f"embedded {server.kind} server exited with code {proc.returncode} on port "
                f"{port}; see {log_path}"
            )
        if _ready(server, port):
            # Readiness is the port answering *and* our child still alive: a server that
            # lost the race for the port exits, and we must not talk to somebody else's.
            time.sleep(0.05)
            if proc.poll() is None:
                break
        time.sleep(0.05)
    else:
        _terminate(proc.pid)
        raise EmbeddedServerError(
            f"embedded {server.kind} server did not answer on port {port} within "
            f"{server.ready_timeout:.0f} s; see {log_path}"
        )
    if server.role == "sqs":
        (data / "sqs.pid").write_text(f"{proc.pid}\n")
    created = psutil.Process(proc.pid).create_time()
    return {"pid": proc.pid, "created": created, "port": port, "kind": server.kind}


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
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "services.lock", "w") as lock:
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

    parts = urlsplit(address)
    if not parts.hostname:
        return False
    default = {"https": 443, "http": 80}.get(parts.scheme, 27017)
    try:
        return _answers(parts.port or default, parts.hostname)
    except ValueError:
        return False


# --- LocalStack ------------------------------------------------------------------


def localstack_python(data: Path) -> Path:
    return data / "localstack" / "venv" / "bin" / "python"


def find_python313() -> Path | None:
    """Python 3.13 from pyenv, which LocalStack needs (shared/emulators.md)."""
    roots = []
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        roots.append(Path(out.stdout.strip()))
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        for candidate in sorted(root.glob("versions/3.13*/bin/python"), reverse=True):
            return candidate
    found = shutil.which("python3.13")
    return Path(found) if found else None


def install_localstack(settings: Settings, python: Path | None = None) -> Path:
    """Create DATA_DIR/localstack/venv and install LocalStack with the pins it misses."""
    python = python or find_python313()
    if python is None or not python.exists():
        raise EmbeddedServerError(
            "LocalStack needs Python 3.13 and none was found (looked in pyenv and PATH); "
            "pass --python PATH"
        )
    venv = settings.data_path / "localstack" / "venv"
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [str(python), "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         LOCALSTACK_PACKAGE, *LOCALSTACK_PINS],
    ]  # fmt: skip
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise EmbeddedServerError(
                f"installing LocalStack failed ({' '.join(step[:3])}…):\n" + "\n".join(tail)
            )
    return venv
