"""Shared by bench.py and chaos.py: isolated servers, daemons, request counts, results."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator import config  # noqa: E402
from orchestrator.backends.queues import QueueAdmin  # noqa: E402
from orchestrator.backends.sqs import Sqs  # noqa: E402
from orchestrator.backends.store import Store  # noqa: E402
from orchestrator.config import Settings  # noqa: E402
from orchestrator.embedded import localstack
from orchestrator.embedded import servers as embedded

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
# Where `orchestrator services install-localstack` puts it with the default settings.
LOCALSTACK_HOME = config.default_data_dir(os.environ)
INSTALLED_LOCALSTACK = LOCALSTACK_HOME / "localstack"
RESULTS = REPO / "docs" / "benchmarks.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Bench:
    """One isolated set of servers (own DATA_DIR, ports, database) for a measurement."""

    root: Path
    sqs_kind: str  # "localstack" or "embedded" (moto)
    overrides: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(init=False)
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        if self.sqs_kind == "localstack" and not (data / "localstack").exists():
            (data / "localstack").symlink_to(INSTALLED_LOCALSTACK)
        keep = {k: v for k, v in os.environ.items() if k not in config.setting_keys()}
        self.environ = {
            **keep,
            "ORCHESTRATOR_CONFIG_DIR": str(REPO / "env"),
            "ORCHESTRATOR_ENV": "development",
            "DATA_DIR": str(data),
            "AWS_SQS_ENDPOINT": self.sqs_kind,
            "EMBEDDED_MONGODB_PORT": str(free_port()),
            "EMBEDDED_SQS_PORT": str(free_port()),
            "MONGODB_NAME": "bench",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": f"{REPO / 'scripts'}:{REPO}",
            "RECORD_DIR": str(self.root / "records"),
            **self.overrides,
        }
        (self.root / "records").mkdir(exist_ok=True)
        self.settings = config.load(environ=self.environ)
        ends = embedded.ensure(self.settings)
        self.store = Store(ends.mongodb_uri, "bench", job_ttl_days=1)
        self.store.ensure_indexes()
        self.sqs = Sqs(ends.sqs_endpoint, "us-east-1", "test", "test")
        self.admin = QueueAdmin(self.settings, lambda: self.store, lambda: self.sqs)
        self.log_path = data / (
            "sqs-localstack.out" if self.sqs_kind == "localstack" else "sqs-moto.out"
        )

    def close(self) -> None:
        embedded.stop(self.settings)

    # --- load ----------------------------------------------------------------------

    def fill(self, url: str, count: int, body: Callable[[int], str]) -> None:
        """Send `count` messages in batches of 10, from a few threads."""
        batches = [range(i, min(i + 10, count)) for i in range(0, count, 10)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda b: self.sqs.send_batch(url, [body(i) for i in b]), batches))

    def depth(self, urls: list[str]) -> int:
        total = 0
        for url in urls:
            d = self.sqs.depth(url)
            total += d.visible + d.in_flight
        return total

    def requests(self) -> Counter[str]:
        """SQS requests the server logged so far, by operation (moto: all as 'request')."""
        text = self.log_path.read_text(errors="replace")
        if self.sqs_kind == "localstack":
            return Counter(re.findall(r"AWS sqs\.(\w+) =>", text))
        return Counter({"request": len(re.findall(r'"POST / HTTP', text))})

    def new_records(self) -> list[dict[str, Any]]:
        """Records written since the previous call (reads only what was appended)."""
        offsets: dict[Path, int] = self.__dict__.setdefault("_offsets", {})
        out = []
        for path in (self.root / "records").glob("*.jsonl"):
            with open(path, "rb") as f:
                f.seek(offsets.get(path, 0))
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            offsets[path] = offsets.get(path, 0) + len(complete)
            out.extend(json.loads(line) for line in complete.decode().splitlines() if line)
        return out

    def handled(self) -> int:
        """Records written so far, counting complete lines only (a handler may be writing)."""
        return sum(p.read_bytes().count(b"\n") for p in (self.root / "records").glob("*.jsonl"))

    def settled(self, total: int) -> bool:
        """`total` records written, and every job closed."""
        jobs = self.store.jobs(limit=100)
        return (self.handled() >= total and bool(jobs)
                and all(j.status not in ("queued", "running") for j in jobs))  # fmt: skip

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in (self.root / "records").glob("*.jsonl"):
            out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
        return out

    # --- daemons -------------------------------------------------------------------

    @contextlib.contextmanager
    def daemon(
        self, *args: str, env: dict[str, str] | None = None
    ) -> Iterator[subprocess.Popen[bytes]]:
        log = open(self.root / f"daemon-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [ORCHESTRATOR, "run", *args], env={**self.environ, **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            stop_tree(proc)
            log.close()


CHILD = "orchestrator.roles.process.child"  # `python -m CHILD ROLE`: a spawned role


def process_kind(p: psutil.Process) -> str:
    """supervisor, master, worker, forkserver, consumer or handler: the role a process was
    started as. A forked consumer keeps its fork server's command line; both are named
    (`orc-consumer`, `orc-forkserver`; multiprocessing's resource tracker counts as the
    fork server's)."""
    name = p.name()
    if name.startswith("orc-"):
        return name.removeprefix("orc-")
    cmd = p.cmdline()
    if CHILD in cmd:
        return cmd[-1]
    return "forkserver" if any("multiprocessing" in part for part in cmd) else "supervisor"


def stop_tree(proc: subprocess.Popen[bytes], grace: float = 40) -> None:
    """SIGTERM the daemon, wait for it, then SIGKILL anything left in its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    kill_session(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def kill_session(sid: int) -> None:
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(p.pid) == sid:
                p.kill()


def sqs_kind() -> str:
    return (
        "localstack"
        if localstack.localstack_python(LOCALSTACK_HOME).exists()
        else "embedded"
    )


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def save(name: str, result: dict[str, Any], command: str) -> None:
    """Merge one benchmark's result into docs/benchmarks.json."""
    RESULTS.parent.mkdir(exist_ok=True)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc[name] = {**result, "command": command, "machine": machine()}
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")
