"""A cluster of hosts in network namespaces: MongoDB, SQS, masters and workers, each on
an address of its own, and a ledger of every handler run (tests/handlers.py records
queue, body, host, pid, start and end)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator import config
from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from tests.conftest import ORCHESTRATOR, REPO, base_environ
from tests.faults.net import Net, serve, why_not_available
from tests.process.conftest import Daemon, records, wait_for

_MISSING = why_not_available()
_NO_FAKETIME = None if shutil.which("faketime") else "Debian's faketime is not installed"


@pytest.fixture(autouse=True)
def _tools(request: pytest.FixtureRequest) -> None:
    """Off this machine's reach (not root, no iproute2, no faketime): skip, saying why.
    CI sets ORCHESTRATOR_REQUIRE_FAULTS=1: there a missing tool fails the test."""
    missing = _MISSING or (request.node.get_closest_marker("faketime") and _NO_FAKETIME)
    if missing and os.environ.get("ORCHESTRATOR_REQUIRE_FAULTS") == "1":
        pytest.fail(f"ORCHESTRATOR_REQUIRE_FAULTS=1, but {missing}")
    if missing:
        pytest.skip(str(missing))


@dataclass
class Cluster:
    net: Net
    dir: Path
    env: dict[str, str]
    store: Store
    sqs: Sqs
    admin: QueueAdmin
    record_dir: Path
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def start(self, host: str, mode: str, *, prefix: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> Daemon:  # fmt: skip
        """`orchestrator run --mode MODE` on a new host of its own."""
        self.net.add(host)
        log = self.dir / f"{host}.log"
        proc = self.net.popen(host, [ORCHESTRATOR, "run", "--mode", mode],
                              {**self.env, "FAULT_HOST": host, **(env or {})}, log,
                              prefix=list(prefix))  # fmt: skip
        daemon = Daemon(proc, log)
        self.daemons[host] = daemon
        return daemon

    def ledger(self) -> list[dict[str, Any]]:
        return records(self.record_dir)

    def settled(self) -> bool:
        """No job queued or running, and no assignment to a worker that is gone."""
        workers = {w.id for w in self.store.workers()}
        open_jobs = [j for j in self.store.jobs(limit=1000) if j.status in ("queued", "running")]
        orphans = [a for a in self.store.assignments() if a.worker not in workers]
        return not open_jobs and not orphans


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    net = Net()
    try:
        net.build()
        servers = serve(net, tmp_path / "data", tmp_path)
        record_dir = tmp_path / "records"
        record_dir.mkdir()
        env = base_environ(tmp_path / "daemon", MONGODB_URI=servers.mongodb_uri,
                           AWS_SQS_ENDPOINT=servers.sqs_endpoint, MONGODB_NAME="faults",
                           RECORD_DIR=str(record_dir), PYTHONPATH=str(REPO),
                           LOG_FORMAT="json", LOG_LEVEL="INFO")  # fmt: skip
        settings = config.load(environ=env)
        store = Store(servers.mongodb_uri, "faults", job_ttl_days=1, timeout_ms=2000)
        store.ensure_indexes()
        sqs = Sqs(servers.sqs_endpoint, "us-east-1", "test", "test")
        admin = QueueAdmin(settings, lambda: store, lambda: sqs)
        yield Cluster(net, tmp_path, env, store, sqs, admin, record_dir)
    finally:
        net.destroy()


# --- the ledger's checks ------------------------------------------------------------------


def lost(ledger: list[dict[str, Any]], sent: dict[str, int]) -> dict[str, set[int]]:
    """Per queue, the messages sent that no handler finished."""
    done: dict[str, set[int]] = {}
    for rec in ledger:
        done.setdefault(rec["queue"], set()).add(_seq(rec))
    return {q: missing for q, n in sent.items() if (missing := set(range(n)) - done.get(q, set()))}


def duplicates(ledger: list[dict[str, Any]]) -> list[tuple[str, int]]:
    seen: dict[tuple[str, int], int] = {}
    for rec in ledger:
        key = (rec["queue"], _seq(rec))
        seen[key] = seen.get(key, 0) + 1
    return sorted(k for k, n in seen.items() if n > 1)


def first_runs(ledger: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    starts: dict[tuple[str, int], float] = {}
    for rec in ledger:
        key = (rec["queue"], _seq(rec))
        starts[key] = min(starts.get(key, rec["start"]), rec["start"])
    return starts


def two_hosts_at_once(ledger: list[dict[str, Any]]) -> list[tuple[dict[str, Any], ...]]:
    """Pairs of handler runs of one queue on two hosts whose times overlap."""
    found = []
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for rec in ledger:
        by_queue.setdefault(rec["queue"], []).append(rec)
    for recs in by_queue.values():
        recs.sort(key=lambda r: r["start"])
        for i, one in enumerate(recs):
            for other in recs[i + 1:]:
                if other["start"] >= one["end"]:
                    break
                if other["host"] != one["host"]:
                    found.append((one, other))
    return found


def check_ledger(cluster: Cluster, sent: dict[str, int], fault_start: float,
                 fault_end: float) -> None:  # fmt: skip
    """0 lost; duplicates only of messages in flight at the fault (first run before its
    end); never two hosts running one queue's handlers at once; nothing left open."""
    ledger = wait_for(lambda: (lg := cluster.ledger()) and not lost(lg, sent) and lg, 150,
                      "every message handled")  # fmt: skip
    starts = first_runs(ledger)
    late = [d for d in duplicates(ledger) if starts[d] > fault_end]
    assert not late, f"duplicates of messages first run after the fault: {late[:5]}"
    overlaps = two_hosts_at_once(ledger)
    assert not overlaps, f"two hosts ran one queue at once: {overlaps[:2]}"
    wait_for(cluster.settled, 60, "no open job and no assignment to a gone worker")
    assert fault_start <= fault_end


def _seq(rec: dict[str, Any]) -> int:
    return int(json.loads(rec["body"])["seq"])


def event_time(event: dict[str, Any], offset: float = 0) -> float:
    """When a log event happened, in true time (its host's clock was `offset` s off)."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp() - offset
