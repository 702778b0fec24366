#!/usr/bin/env python3
"""Benchmarks with in-run baselines; results go to docs/benchmarks.json and docs/benchmarks.md.

    .venv/bin/python scripts/bench.py [--only NAME ...] [--repeat N]

NAME: throughput, concurrency, slow, cpu, async, latency, failover, cost, scale, memory,
api, rate, priority, adaptive, shards, efficiency, idle (the execution-model ones are in
benchexec.py, the flow-control ones in benchflow.py, the process tree's cost in
benchtree.py). SQS is
LocalStack when installed (`orchestrator services install-localstack`), else
moto with smaller loads (moto slows down badly past a few hundred messages).
Exits non-zero only when a benchmark cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import benchexec
import benchflow
import benchtree
import psutil
from benchlib import (
    ORCHESTRATOR,
    Bench,
    kill_session,
    median,
    percentile,
    process_kind,
    save,
    sqs_kind,
    wait_for,
)

from orchestrator.models import QueueDepth, WorkerRecord, utcnow
from orchestrator.roles.master.master import Master

NOOP = "orchestrator.handlers:noop"
STAMP = "benchhandlers:stamp"


def _start_time(bench: Bench) -> float:
    """When processing began: the first job's start (wall clock, seconds)."""
    started = wait_for(lambda: [j.started_at for j in bench.store.jobs(limit=100) if j.started_at],
                       120, "a job to start")  # fmt: skip
    return min(started).timestamp()


# --- 1. throughput -------------------------------------------------------------------


def _baseline(bench: Bench, urls: list[str], threads_per_queue: int) -> float:
    """A minimal boto3 loop: receive 10, (no-op), delete the batch; same concurrency."""
    client = bench.sqs.client

    def loop(url: str) -> None:
        empty = 0
        while empty < 2:
            got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            messages = got.get("Messages", [])
            if not messages:
                empty += 1
                continue
            empty = 0
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ])  # fmt: skip

    threads = [
        threading.Thread(target=loop, args=(u,)) for u in urls for _ in range(threads_per_queue)
    ]
    start = time.time()
    for t in threads:
        t.start()
    done_at = wait_for(lambda: bench.depth(urls) == 0 and time.time(), 600, "baseline drain", 0.25)
    for t in threads:
        t.join()
    return float(done_at - start)


def throughput(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    queues, per_queue, conc = (4, 2000, 10) if kind == "localstack" else (4, 150, 10)
    total = queues * per_queue
    runs = []
    for r in range(repeat):
        bench = Bench(root / f"throughput{r}", kind)
        try:
            urls = [bench.admin.create(f"t{i}", handler=NOOP, concurrency=conc).queue_url
                    for i in range(queues)]  # fmt: skip
            for url in urls:
                bench.fill(url, per_queue, lambda i: json.dumps({"i": i}))
            base_seconds = _baseline(bench, urls, conc)
            for url in urls:
                bench.fill(url, per_queue, lambda i: json.dumps({"i": i}))
            before, polls = sum(bench.requests().values()), 0
            with bench.daemon("--mode", "MW", "--workers", "2") as proc:
                start = _start_time(bench)
                while bench.depth(urls) > 0:
                    polls += len(urls)
                    time.sleep(0.25)
                end = time.time()
                rss = _rss(proc.pid)
            requests = sum(bench.requests().values()) - before - polls - len(urls)
            runs.append({
                "orchestrator_msgs_per_s": total / (end - start),
                "baseline_msgs_per_s": total / base_seconds,
                "sqs_requests_per_message": requests / total,
                "rss_mb": rss,
            })  # fmt: skip
        finally:
            bench.close()
    orch = median([r["orchestrator_msgs_per_s"] for r in runs])
    base = median([r["baseline_msgs_per_s"] for r in runs])
    return {
        "load": f"{queues} queues x {per_queue} messages, noop handler, concurrency {conc}, 2 workers",
        "baseline": f"boto3 loop (receive 10, delete batch), {conc} threads per queue",
        "orchestrator_msgs_per_s": round(orch, 1),
        "baseline_msgs_per_s": round(base, 1),
        "ratio": round(orch / base, 3),
        "sqs_requests_per_message": round(median([r["sqs_requests_per_message"] for r in runs]), 3),
        "rss_mb": runs[-1]["rss_mb"],
        "runs": runs,
    }


def _rss(supervisor_pid: int) -> dict[str, float]:
    """RSS (MB) of the master, the workers and the consumers under a supervisor."""
    out: dict[str, list[float]] = {"supervisor": [], "master": [], "worker": [], "consumer": []}
    sup = psutil.Process(supervisor_pid)
    out["supervisor"].append(sup.memory_info().rss / 2**20)
    for child in sup.children(recursive=True):
        try:
            role = process_kind(child)
            if role in out:
                out[role].append(child.memory_info().rss / 2**20)
        except psutil.Error:
            continue
    return {role: round(max(values), 1) for role, values in out.items() if values}


# --- 3. pickup latency ----------------------------------------------------------------------


def latency(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    assigned: list[float] = []
    idle: list[float] = []
    idle_after = (5, 15, 25, 35, 45, 55)
    for r in range(repeat):
        bench = Bench(root / f"latency{r}", kind)
        try:
            assigned += _assigned_latency(bench)
            idle += _idle_latency(bench, idle_after)
        finally:
            bench.close()
    return {
        "assigned_p50_ms": round(percentile(assigned, 50) * 1000, 1),
        "assigned_p95_ms": round(percentile(assigned, 95) * 1000, 1),
        "idle_p50_s": round(percentile(idle, 50), 2),
        "idle_p95_s": round(percentile(idle, 95), 2),
        "samples": {"assigned": len(assigned), "idle": len(idle)},
        "idle_seconds": list(idle_after),
    }


def _delays(bench: Bench, queue_prefix: str) -> list[float]:
    return [
        rec["start"] - json.loads(rec["body"])["sent"]
        for rec in bench.records()
        if rec["queue"].startswith(queue_prefix) and json.loads(rec["body"])["sent"] > 0
    ]


def _assigned_latency(bench: Bench) -> list[float]:
    """A queue kept assigned by a steady trickle (one message every 250 ms)."""
    hot = bench.admin.create("hot", handler=STAMP).queue_url
    with bench.daemon("--mode", "MW"):
        bench.sqs.send_batch(hot, ['{"sent": 0}'])  # warm-up: get it assigned first
        wait_for(lambda: bench.records(), 60, "the warm-up message")
        for _ in range(40):
            bench.sqs.send_batch(hot, [json.dumps({"sent": time.time()})])
            time.sleep(0.25)
        wait_for(lambda: len(_delays(bench, "hot")) >= 40, 60, "40 handled")
    return _delays(bench, "hot")


def _idle_latency(bench: Bench, idle_after: tuple[int, ...]) -> list[float]:
    """Queues that had work, went idle, and get a message after t seconds of idleness."""
    urls = {t: bench.admin.create(f"idle{t:02d}", handler=STAMP).queue_url for t in idle_after}
    with bench.daemon("--mode", "MW"):
        for url in urls.values():
            bench.sqs.send_batch(url, ['{"sent": 0}'])
        wait_for(lambda: len([r for r in bench.records() if r["queue"].startswith("idle")])
                 >= len(urls) and not bench.store.assignments(), 90, "idle queues drained")  # fmt: skip
        idle_since = time.time()
        for t, url in sorted(urls.items()):
            time.sleep(max(0.0, idle_since + t - time.time()))
            bench.sqs.send_batch(url, [json.dumps({"sent": time.time()})])
        wait_for(lambda: len(_delays(bench, "idle")) >= len(urls), 120, "idle queues handled")
    return _delays(bench, "idle")


# --- 4. failover ------------------------------------------------------------------------------


def failover(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    worker_s: list[float] = []
    master_s: list[float] = []
    for r in range(repeat):
        bench = Bench(root / f"failover{r}", kind)
        try:
            worker_s.append(_worker_failover(bench))
            master_s.append(_master_failover(bench))
        finally:
            bench.close()
    return {
        "settings": "defaults: WORKER_TIMEOUT 10 s, LEASE_TTL 10 s, MASTER_INTERVAL 1 s",
        "worker_kill_to_processed_elsewhere_s": round(median(worker_s), 2),
        "master_kill_to_new_assignment_s": round(median(master_s), 2),
        "runs": {
            "worker": [round(x, 2) for x in worker_s],
            "master": [round(x, 2) for x in master_s],
        },
    }


def _worker_failover(bench: Bench) -> float:
    url = bench.admin.create("fw", handler=STAMP).queue_url
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            bench.sqs.send_batch(url, [json.dumps({"sent": time.time()})])
            time.sleep(0.1)

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        with bench.daemon("--mode", "M"), bench.daemon("--mode", "W") as w1, \
                bench.daemon("--mode", "W") as w2:  # fmt: skip
            [a] = wait_for(lambda: bench.store.assignments(), 60, "an assignment")
            wait_for(lambda: bench.records(), 30, "messages flowing")
            victim = {w.id: w.pid for w in bench.store.workers()}[a.worker]
            daemon = w1 if os.getsid(victim) == w1.pid else w2
            killed = {p.pid for p in psutil.Process(daemon.pid).children(recursive=True)}
            kill_session(daemon.pid)
            killed_at = time.time()
            later = wait_for(lambda: [r["start"] for r in bench.records()
                                      if r["start"] > killed_at and r["pid"] not in killed],
                             60, "the queue processed elsewhere")  # fmt: skip
            return float(min(later) - killed_at)
    finally:
        stop.set()
        sender.join()


def _master_failover(bench: Bench) -> float:
    with bench.daemon("--mode", "M") as m1, bench.daemon("--mode", "M") as m2, \
            bench.daemon("--mode", "W"):  # fmt: skip
        lease = wait_for(lambda: bench.store.lease(), 30, "a leader")
        wait_for(lambda: bench.store.workers(), 30, "a worker")
        leader_pid = int(lease.holder.split(":")[1])
        daemon = m1 if os.getsid(leader_pid) == m1.pid else m2
        kill_session(daemon.pid)
        killed_at = utcnow()
        url = bench.admin.create(f"fm{time.monotonic_ns()}", handler=STAMP).queue_url
        bench.sqs.send_batch(url, ['{"sent": 0}'])
        job = wait_for(
            lambda: bench.store.jobs(queue=url.rsplit("/", 1)[1]), 60, "new work assigned"
        )
        return (job[0].created_at - killed_at).total_seconds()


# --- 5. cost ---------------------------------------------------------------------------------


def cost(
    kind: str, repeat: int, root: Path, warm: float = 100, window: float = 180
) -> dict[str, Any]:
    queues = 20
    bench = Bench(root / "cost", kind)
    try:
        for i in range(queues):
            bench.admin.create(f"idle{i}", handler=NOOP)
        with bench.daemon("--mode", "MW"):
            time.sleep(warm)  # past the first minute: the steady idle schedule
            before = bench.requests()
            time.sleep(window)
            after = bench.requests()
        spent = sum((after - before).values())
        return {
            "idle_queues": queues,
            "window_s": window,
            "requests_in_window": spent,
            "requests_per_idle_queue_per_hour": round(spent / queues * 3600 / window, 1),
            "by_operation": dict(after - before),
        }
    finally:
        bench.close()


# --- 6. scale --------------------------------------------------------------------------------


def scale(
    kind: str, repeat: int, root: Path, sizes: tuple[int, ...] = (10_000, 100_000)
) -> dict[str, Any]:
    """Master.tick in-process over `sizes` queue documents (each a real, empty SQS queue)
    and 100 workers, one MASTER_INTERVAL apart in real time: cycle times, MongoDB
    commands, and how often each queue's depth gets checked at that size."""
    from pymongo import monitoring

    class Count(monitoring.CommandListener):
        n = 0

        def started(self, event: Any) -> None:
            Count.n += 1

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    monitoring.register(Count())
    out: dict[str, Any] = {"workers": 100}
    for size in sizes:
        bench = Bench(root / f"scale{size}", kind)
        try:
            _populate(bench, size)
            master = Master(bench.settings, bench.store, bench.sqs)
            cycles = []
            whole_after = None  # seconds until the master knew every queue
            checks_before = sum(bench.requests().values())
            started = time.monotonic()
            for _i in range(60):
                now = utcnow()
                _beat(bench, now)
                ops_before = Count.n
                t0 = time.perf_counter()
                master.tick(now)
                cycles.append({"seconds": time.perf_counter() - t0,
                               "mongodb_ops": Count.n - ops_before})  # fmt: skip
                if whole_after is None and master.placement.cache.whole:
                    whole_after = time.monotonic() - started
                time.sleep(max(0.0, bench.settings.master_interval - (time.perf_counter() - t0)))
            checks = sum(bench.requests().values()) - checks_before
            per_second = checks / (time.monotonic() - started)
            steady = [c["seconds"] for c in cycles[1:]]
            out[str(size)] = {
                "first_cycle_s": round(cycles[0]["seconds"], 3),
                "queues_known_after_s": None if whole_after is None else round(whole_after, 1),
                "cycle_s_median": round(median(steady), 3),
                "cycle_s_p95": round(percentile(steady, 95), 3),
                "cycle_s_max": round(max(steady), 3),
                "mongodb_ops_per_cycle": median([c["mongodb_ops"] for c in cycles[1:]]),
                "depth_checks_per_s": round(per_second, 1),
                # Each queue is looked at once per this many seconds, at most (the idle
                # schedule asks for IDLE_CHECK_MAX; the checks a cycle can make bound it).
                "check_interval_s": round(max(size / per_second,
                                              bench.settings.idle_check_max), 1),
            }  # fmt: skip
        finally:
            bench.close()
    return out


def _populate(bench: Bench, size: int, sqs_queues: bool = True) -> None:
    """`size` queue documents, each with a real SQS queue (or a made-up URL)."""
    from concurrent.futures import ThreadPoolExecutor

    names = [f"s{i:06d}" for i in range(size)]
    if sqs_queues:
        with ThreadPoolExecutor(16) as pool:
            urls = list(pool.map(lambda n: bench.sqs.create_queue(n, visibility_timeout=30)[0],
                                 names))  # fmt: skip
    else:
        urls = [f"http://sqs/{n}" for n in names]
    now = utcnow() - timedelta(minutes=10)  # queues that exist, not a burst of new ones
    docs = [{"name": n, "queueUrl": u, "concurrency": 5, "handler": NOOP, "paused": False,
             "visibilityTimeout": 30, "dlqName": None, "dlqUrl": None, "maxReceiveCount": None,
             "createdAt": now, "updatedAt": now, "syncedAt": now}
            for n, u in zip(names, urls, strict=True)]  # fmt: skip
    for start in range(0, size, 1000):
        bench.store._db["queues"].insert_many(docs[start : start + 1000])


def _beat(bench: Bench, now: datetime) -> None:
    for i in range(100):
        bench.store.register_worker(WorkerRecord(f"bench:{i}", "bench", i, now, now, 5))


# --- 7. api: what the dashboard and /metrics cost at scale --------------------------------------


def api(kind: str, repeat: int, root: Path, size: int = 10_000) -> dict[str, Any]:
    """GET /api/queues (the dashboard's page of 100 and the default page of 1,000) and
    /metrics through the Api (no sockets) with `size` queues whose depths the master
    checked."""
    from orchestrator.http import exposition
    from orchestrator.http.api import Api, Request
    from orchestrator.http.fleet import Fleet

    bench = Bench(root / "api", kind)
    try:
        _populate(bench, size, sqs_queues=False)
        bench.store.save_depths({f"http://sqs/s{i:06d}": (QueueDepth(i % 7, 0, 0), utcnow())
                                 for i in range(size)})  # fmt: skip
        fleet = Fleet(bench.settings, bench.store, bench.sqs)
        registry = exposition.fleet_registry(fleet)
        app = Api(bench.settings, fleet, registry, lambda: {"status": "ok"})

        def timed(path: str, query: dict[str, list[str]]) -> float:
            t0 = time.perf_counter()
            response = app.dispatch(Request("GET", path, query, {}))
            assert response.status == 200, response.body[:200]
            return time.perf_counter() - t0

        out: dict[str, Any] = {"queues": size}
        pages = {"page_100": ("/api/queues", {"limit": ["100"], "after": ["s005000"]}),
                 "page_1000": ("/api/queues", {}), "metrics": ("/metrics", {})}  # fmt: skip
        for key, (path, query) in pages.items():
            out[f"{key}_s"] = round(median([timed(path, query)
                                            for _ in range(max(repeat, 3))]), 3)
        out["metrics_bytes"] = len(app.dispatch(Request("GET", "/metrics", {}, {})).body)
        fleet.close()
        return out
    finally:
        bench.close()


# --- cli: how long a command takes a person ------------------------------------------------


def cli(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    """`orchestrator --help` and `orchestrator queue list` (3 queues) as a person runs them,
    against running embedded servers: wall time of the whole process, median of 7."""
    import subprocess

    bench = Bench(root / "cli", "embedded")
    try:
        for name in ("alpha", "beta", "gamma"):
            bench.admin.create(name)

        def timed(*args: str) -> float:
            t0 = time.perf_counter()
            done = subprocess.run([ORCHESTRATOR, *args], env=bench.environ, capture_output=True,
                                  check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr[-500:]
            return time.perf_counter() - t0

        timed("queue", "list")  # a first run fills the OS's caches, as a person's earlier one
        runs = max(repeat, 7)
        return {"help_s": round(median([timed("--help") for _ in range(runs)]), 3),
                "queue_list_s": round(median([timed("queue", "list") for _ in range(runs)]), 3),
                "queues": 3}  # fmt: skip
    finally:
        bench.close()


# --- install: what a production worker's image carries ---------------------------------------


def install(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    """The wheel installed into fresh venvs: the base install (a production worker) and,
    as the baseline, with the embedded servers' extra; site-packages size and packages."""
    import subprocess
    import venv

    repo = Path(__file__).resolve().parent.parent
    dist = root / "install" / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(repo)],
                   check=True, capture_output=True)  # fmt: skip
    [wheel] = dist.glob("*.whl")
    out: dict[str, Any] = {}
    for label, requirement in (("base", str(wheel)), ("embedded", f"{wheel}[embedded]")):
        env_dir = root / "install" / label
        venv.create(env_dir, with_pip=True)
        python = str(env_dir / "bin" / "python")
        before = _site_packages(python)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        requirement], check=True)  # fmt: skip
        after = _site_packages(python)
        out[label] = {"site_packages_mb": round(after["mb"] - before["mb"], 1),
                      "packages": len(after["names"] - before["names"]),
                      "names": sorted(after["names"] - before["names"])}  # fmt: skip
    return out


def _site_packages(python: str) -> dict[str, Any]:
    """Size in MB of a venv's site-packages, and the distributions installed in it."""
    import subprocess

    code = ("import json, os, sysconfig, importlib.metadata as m; p = sysconfig.get_paths()"
            "['purelib']; print(json.dumps({'mb': sum(os.path.getsize(os.path.join(d, f)) "
            "for d, _, fs in os.walk(p) for f in fs) / 1e6, 'names': sorted({d.metadata['Name']"
            ".lower() for d in m.distributions()})}))")
    found = json.loads(subprocess.run([python, "-I", "-c", code], check=True, capture_output=True,
                                      text=True).stdout)  # fmt: skip
    return {"mb": found["mb"], "names": set(found["names"])}


# --- memory (from a loaded daemon) ------------------------------------------------------------


def memory(kind: str, repeat: int, root: Path) -> dict[str, Any]:
    result = json.loads(Path(__file__).resolve().parent.parent.joinpath("docs", "benchmarks.json")
                        .read_text()).get("throughput", {})  # fmt: skip
    return {"rss_mb_under_load": result.get("rss_mb"), "source": "throughput run"}


BENCHMARKS: dict[str, Callable[[str, int, Path], dict[str, Any]]] = {
    "throughput": throughput,
    "concurrency": benchexec.concurrency,
    "slow": benchexec.slow,
    "cpu": benchexec.cpu,
    "async": benchexec.async_,
    "latency": latency,
    "failover": failover,
    "cost": cost,
    "scale": scale,
    "memory": memory,
    "api": api,
    "cli": cli,
    "install": install,
    "rate": benchflow.rate,
    "priority": benchflow.priority,
    "adaptive": benchflow.adaptive,
    "shards": benchflow.shards,
    "efficiency": benchtree.efficiency,
    "idle": benchtree.idle,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    kind = sqs_kind()
    command = "python scripts/bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"SQS: {'LocalStack' if kind == 'localstack' else 'moto'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as tmp:
        for name in args.only:
            t0 = time.monotonic()
            result = BENCHMARKS[name](kind, args.repeat, Path(tmp))
            result["sqs"] = "LocalStack" if kind == "localstack" else "moto"
            result["repeat"] = args.repeat
            save(name, result, command)
            shown = {k: v for k, v in result.items() if k not in ("runs",)}
            print(f"{name} ({time.monotonic() - t0:.0f} s): {json.dumps(shown)}", flush=True)
    from benchreport import render

    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
