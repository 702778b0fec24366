#!/usr/bin/env python3
"""Chaos: faults of every kind under load; count what was lost.

    .venv/bin/python scripts/chaos.py [--minutes 10] [--kill-every 20] [--queues 6]

Two daemons run (MW with 2 workers, and W with 2 workers), so there are two
masters (one leading) and four workers. Every --kill-every seconds one fault:
SIGKILL of a consumer, a worker or a master (restarted by their worker or
supervisor), MongoDB or SQS stopped for 8 s (SIGSTOP, then SIGCONT), and, as
root, a partition: a daemon's host cut from MongoDB or from SQS for 10 s. As
root every server and daemon runs on a host of its own (network namespaces,
tests/faults/net.py); otherwise locally, without partitions. Senders keep every
queue busy. At the end the senders stop, the daemons drain the queues, and the
script reports messages sent, distinct handled, lost, duplicates, the longest
time any non-empty queue went unserved and the faults by kind. Exit status 1 if
any message was lost (2 if the run could not be made).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from benchlib import (
    ORCHESTRATOR,
    REPO,
    Bench,
    process_kind,
    save,
    sqs_kind,
    stop_tree,
    wait_for,
)

from orchestrator import config
from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.embedded import localstack

STAMP = "benchhandlers:stamp"
FREEZE_SECONDS = 8.0  # a server stopped (SIGSTOP) this long
PARTITION_SECONDS = 10.0  # a link cut this long


@dataclasses.dataclass
class HostsBench(Bench):
    """A Bench whose servers and daemons each run on a host of their own (network
    namespaces, as root), so that links between them can be cut."""

    def __post_init__(self) -> None:
        from tests.faults.net import Net, serve

        self.net = Net()
        self.net.build()
        # LocalStack when installed: 30 minutes of load make moto's queues too slow.
        python = localstack.localstack_python(config.default_data_dir(os.environ))
        self.servers = serve(self.net, self.root / "data", self.root,
                             python if self.sqs_kind == "localstack" else None)  # fmt: skip
        keep = {k: v for k, v in os.environ.items() if k not in config.setting_keys()}
        self.environ = {
            **keep, "ORCHESTRATOR_CONFIG_DIR": str(REPO / "env"),
            "ORCHESTRATOR_ENV": "development", "DATA_DIR": str(self.root / "daemon"),
            "MONGODB_URI": self.servers.mongodb_uri,
            "AWS_SQS_ENDPOINT": self.servers.sqs_endpoint, "MONGODB_NAME": "bench",
            "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
            "PYTHONPATH": f"{REPO / 'scripts'}:{REPO}", "RECORD_DIR": str(self.root / "records"),
            **self.overrides,
        }  # fmt: skip
        (self.root / "records").mkdir(exist_ok=True)
        self.settings = config.load(environ=self.environ)
        self.store = Store(self.servers.mongodb_uri, "bench", job_ttl_days=1)
        self.store.ensure_indexes()
        # Short timeouts: this script's own calls must not hang while SQS is stopped.
        self.sqs = Sqs(self.servers.sqs_endpoint, "us-east-1", "test", "test",
                       read_timeout=5, attempts=2)  # fmt: skip
        self.admin = QueueAdmin(self.settings, lambda: self.store, lambda: self.sqs)
        self.hosts: list[str] = []

    def close(self) -> None:
        self.net.destroy()

    @contextlib.contextmanager
    def daemon(
        self, *args: str, env: dict[str, str] | None = None
    ) -> Iterator[subprocess.Popen[bytes]]:
        host = f"d{len(self.hosts)}"
        self.net.add(host)
        self.hosts.append(host)
        log = self.root / f"{host}.log"
        proc = self.net.popen(host, [ORCHESTRATOR, "run", *args],
                              {**self.environ, **(env or {})}, log)  # fmt: skip
        try:
            yield proc
        finally:
            stop_tree(proc)

    def server_pids(self) -> dict[str, int]:
        return {"mongodb": self.servers.mongodb_pid, "sqs": self.servers.sqs_pid}


def local_server_pids(bench: Bench) -> dict[str, int]:
    records = json.loads((bench.settings.data_path / "services.json").read_text())
    return {role: int(records[role]["pid"]) for role in ("mongodb", "sqs")}


def roles(daemon_pid: int) -> dict[str, list[int]]:
    """pids under a daemon by role (benchlib.process_kind)."""
    out: dict[str, list[int]] = defaultdict(list)
    for child in psutil.Process(daemon_pid).children(recursive=True):
        try:
            out[process_kind(child)].append(child.pid)
        except psutil.Error:
            continue
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--kill-every", type=float, default=20, help="seconds between kills")
    parser.add_argument("--queues", type=int, default=6)
    parser.add_argument("--rate", type=float, default=20, help="messages/s per queue")
    args = parser.parse_args()
    kind = sqs_kind()
    rng = random.Random(7)
    command = "python scripts/chaos.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="orchestrator-chaos-") as tmp:
        # Short failure timers so that kills are noticed within the run, not the defaults.
        overrides = {"WORKER_TIMEOUT": "5", "LEASE_TTL": "5", "HEARTBEAT_INTERVAL": "1",
                     "SHUTDOWN_GRACE": "10"}  # fmt: skip
        from tests.faults.net import why_not_available

        hosts = why_not_available() is None
        bench: Bench = (HostsBench(Path(tmp), kind, overrides) if hosts
                        else Bench(Path(tmp), kind, overrides))  # fmt: skip
        try:
            return run(bench, args, rng, command, kind)
        finally:
            bench.close()


def run(bench: Bench, args: argparse.Namespace, rng: random.Random, command: str, kind: str) -> int:
    urls = {f"chaos{i}": bench.admin.create(f"chaos{i}", handler=STAMP, concurrency=5).queue_url
            for i in range(args.queues)}  # fmt: skip
    sent: dict[str, int] = defaultdict(int)
    stop = threading.Event()

    def sender(name: str, url: str) -> None:
        seq = 0
        while not stop.is_set():
            batch = [json.dumps({"q": name, "seq": seq + i}) for i in range(10)]
            try:
                bench.sqs.send_batch(url, batch)
            except Exception as exc:  # keep sending; unsent ones are not counted
                print(f"send failed: {exc}", file=sys.stderr)
                time.sleep(1)
                continue
            seq += 10
            sent[name] = seq
            stop.wait(10 / args.rate)

    senders = [threading.Thread(target=sender, args=item) for item in urls.items()]
    kills: list[dict[str, Any]] = []
    longest = 0.0
    with (
        bench.daemon("--mode", "MW", "--workers", "2") as a,
        bench.daemon("--mode", "W", "--workers", "2") as b,
    ):
        for t in senders:
            t.start()
        started = time.monotonic()
        next_kill = started + args.kill_every
        last_seen: dict[str, float] = {}
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(1)
            # Longest time a non-empty queue went without a handler starting.
            now = time.time()
            for rec in bench.new_records():
                last_seen[rec["queue"]] = max(last_seen.get(rec["queue"], 0), rec["start"])
            for name, url in urls.items():
                try:
                    d = bench.sqs.depth(url)
                except Exception:  # SQS stopped or cut: this is what is being tested
                    continue
                if d.visible > 0:
                    longest = max(longest, now - last_seen.get(name, now))
            if time.monotonic() >= next_kill:
                next_kill += args.kill_every
                kills.append(inject(rng, bench, a.pid, b.pid))
                print(f"fault {len(kills)}: {kills[-1]}", flush=True)
        stop.set()
        for t in senders:
            t.join()
        total_sent = sum(sent.values())
        print(f"senders stopped after {total_sent} messages; draining", flush=True)
        wait_for(lambda: drained(bench, list(urls.values())), 600, "queues drained", 1)
    handled: dict[tuple[str, int], int] = defaultdict(int)
    for rec in bench.records():
        body = json.loads(rec["body"])
        handled[(body["q"], body["seq"])] += 1
    expected = {(q, s) for q, n in sent.items() for s in range(n)}
    lost = expected - set(handled)
    result = {
        "minutes": args.minutes,
        "queues": args.queues,
        "faults": len(kills),
        "faults_by_kind": {kind_: sum(1 for k in kills if k["role"] == kind_) for kind_ in FAULTS},
        "hosts": "network namespaces" if isinstance(bench, HostsBench) else "one host",
        "sent": len(expected),
        "distinct_handled": len(set(handled) & expected),
        "lost": len(lost),
        "duplicates": sum(n - 1 for n in handled.values() if n > 1),
        "longest_unserved_s": round(longest, 1),
        "sqs": "LocalStack" if kind == "localstack" else "moto",
    }
    print(json.dumps(result), flush=True)
    save("chaos", result, command)
    from benchreport import render

    render()
    return 1 if lost else 0


def drained(bench: Bench, urls: list[str]) -> bool:
    """Every queue empty; False while SQS does not answer (a fault may have just hit it)."""
    try:
        return bench.depth(urls) == 0
    except Exception:
        return False


FAULTS = ("consumer", "worker", "master", "mongodb-stop", "sqs-stop", "partition")


def inject(rng: random.Random, bench: Bench, *daemons: int) -> dict[str, Any]:
    """One fault: a kill (half the time), a server stopped, or (on hosts) a partition."""
    kinds = ["kill", "kill", "kill", "mongodb-stop", "sqs-stop"]
    if isinstance(bench, HostsBench):
        kinds += ["partition", "partition"]
    kind = rng.choice(kinds)
    if kind == "kill":
        return kill_one(rng, *daemons)
    if kind == "partition":
        assert isinstance(bench, HostsBench)
        host, server = rng.choice(bench.hosts), rng.choice(["mongo", "sqs"])
        bench.net.cut(host, server)
        threading.Timer(PARTITION_SECONDS, bench.net.heal, (host, server)).start()
        return {"role": "partition", "cut": f"{host}-{server}", "at": round(time.time(), 1)}
    pids = bench.server_pids() if isinstance(bench, HostsBench) else local_server_pids(bench)
    pid = pids[kind.split("-")[0]]
    os.kill(pid, signal.SIGSTOP)
    threading.Timer(FREEZE_SECONDS, os.kill, (pid, signal.SIGCONT)).start()
    return {"role": kind, "pid": pid, "at": round(time.time(), 1)}


def kill_one(rng: random.Random, *daemons: int) -> dict[str, Any]:
    """SIGKILL a random consumer, worker or master (never a supervisor)."""
    role = rng.choice(["consumer", "consumer", "worker", "master"])
    candidates = [pid for d in daemons for pid in roles(d).get(role, [])]
    if not candidates:
        role, candidates = (
            "consumer",
            [pid for d in daemons for pid in roles(d).get("consumer", [])],
        )
    if not candidates:
        return {"role": "none", "pid": None, "at": time.time()}
    pid = rng.choice(candidates)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).kill()
    return {"role": role, "pid": pid, "at": round(time.time(), 1)}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(2)
