"""What the daemon's process tree costs, beside the boto3 loop in the same run.

- efficiency: noop handlers at concurrency 10, 50 ms ones at 5 and 100-500 ms ones at 5,
  on 4 queues: CPU ms per message of the whole tree (supervisor, master, workers,
  consumers, handler processes) while it drains and over its whole run, of the loop
  (this process's CPU while its threads run), and their ratio; PSS, USS and RSS by kind
  of process at mid-drain; and consumer start: from `consumer.spawned` (the worker) to
  the consumer's `consumer.job_started` (just before its first receive), for consumers
  started one at a time in a separate run at LOG_LEVEL INFO (the measured runs log at
  WARNING).
- idle: MW with 2 workers and 100 empty queues: % of one core over a quiet stretch.

CPU is read from /proc (psutil): every process's user + system time plus that of the
children it reaped, sampled every 0.2 s, so that a consumer that exits keeps counting.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from benchexec import baseline, fill_queues, make_queues
from benchlib import Bench, median, wait_for
from benchlib import process_kind as kind

NOOP = "benchhandlers:stamp"
SLEEP = "benchhandlers:sleep_stamp"
Record = dict[str, Any]


# --- reading a process tree ------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds the tree under `pid` has spent, its reaped children's included."""
    return sum(cpu_by_kind(pid).values())


def cpu_by_kind(pid: int) -> dict[str, float]:
    """The same by kind of process (a reaped child's CPU counts for its parent's kind)."""
    out: dict[str, float] = {}
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error, IndexError):
            t, k = p.cpu_times(), kind(p)
            out[k] = out.get(k, 0.0) + t.user + t.system + t.children_user + t.children_system
    return out


def kinds(pid: int) -> dict[int, str]:
    """The kind of every process in the tree under `pid`, by pid."""
    out: dict[int, str] = {}
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error):
            out[p.pid] = kind(p)
    return out


def tree_memory(pid: int) -> dict[str, dict[str, float]]:
    """MB of PSS (shared pages counted once), USS (its own) and RSS, summed by kind, and
    how many processes of each kind there are; "tree" sums them all."""
    out: dict[str, dict[str, float]] = {}
    for p in _tree(pid):
        with contextlib.suppress(psutil.Error, IndexError):
            m, k = p.memory_full_info(), kind(p)
            for key in (k, "tree"):
                row = out.setdefault(key, {"count": 0, "pss_mb": 0.0, "uss_mb": 0.0,
                                           "rss_mb": 0.0})  # fmt: skip
                row["count"] += 1
                row["pss_mb"] += m.pss / 2**20
                row["uss_mb"] += m.uss / 2**20
                row["rss_mb"] += m.rss / 2**20
    return {k: {f: round(v, 1) for f, v in row.items()} for k, row in out.items()}


class Sampler:
    """The tree's CPU seconds every 0.2 s, on a thread, to be read at chosen moments."""

    def __init__(self, pid: int) -> None:
        self.pid, self.done = pid, False
        self.kinds: list[tuple[float, dict[str, float]]] = []
        self.points: list[tuple[float, float]] = []
        self._sample()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        kinds = cpu_by_kind(self.pid)
        now = time.time()
        self.kinds.append((now, kinds))
        self.points.append((now, sum(kinds.values())))

    def _run(self) -> None:
        while not self.done:
            time.sleep(0.2)
            self._sample()

    def by_kind(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each kind spent between the samples nearest `start` and `end`."""
        first = min(self.kinds, key=lambda p: abs(p[0] - start))[1]
        last = min(self.kinds, key=lambda p: abs(p[0] - end))[1]
        return {k: round(last.get(k, 0.0) - first.get(k, 0.0), 3) for k in last}

    def stop(self) -> None:
        self.done = True
        self.thread.join()

    def at(self, when: float) -> float:
        """CPU seconds at wall time `when`, between the samples around it."""
        before = max((p for p in self.points if p[0] <= when), default=self.points[0])
        after = min((p for p in self.points if p[0] >= when), default=self.points[-1])
        if after[0] == before[0]:
            return before[1]
        share = (when - before[0]) / (after[0] - before[0])
        return before[1] + share * (after[1] - before[1])


# --- efficiency --------------------------------------------------------------------------


WORKLOADS: dict[str, tuple[str, int, Callable[[random.Random], int]]] = {
    # name: handler, concurrency, the handler's ms for a message
    "noop": (NOOP, 10, lambda rng: 0),
    "sleep_50ms": (SLEEP, 5, lambda rng: 50),
    "sleep_100_500ms": (SLEEP, 5, lambda rng: rng.randint(100, 500)),
}


def efficiency(kind_: str, repeat: int, root: Path) -> dict[str, Any]:
    queues = 4
    sizes = {"noop": 2000, "sleep_50ms": 400, "sleep_100_500ms": 300}
    if kind_ != "localstack":  # moto slows down past a few hundred messages
        sizes = {"noop": 150, "sleep_50ms": 60, "sleep_100_500ms": 40}
    out: dict[str, Any] = {"load": f"{queues} queues each, 2 workers (MW)"}
    for name, (handler, conc, ms) in WORKLOADS.items():
        runs = [_efficiency_run(Bench(root / f"efficiency-{name}{r}", kind_), name, handler,
                                conc, ms, queues, sizes[name], r)
                for r in range(repeat)]  # fmt: skip
        summary: dict[str, Any] = {"concurrency": conc, "messages": queues * sizes[name]}
        for key in ("tree_cpu_ms_per_message", "tree_cpu_ms_per_message_whole_run",
                    "loop_cpu_ms_per_message", "ratio", "ratio_whole_run"):  # fmt: skip
            summary[key] = round(median([run[key] for run in runs]), 3)
        summary["memory_mid_drain"] = runs[-1]["memory"]
        summary["by_kind_ms_per_message"] = runs[-1]["by_kind_ms_per_message"]
        summary["runs"] = runs
        out[name] = summary
    out["consumer_start_ms"] = consumer_start(Bench(root / "consumer-start", kind_, {
        "LOG_LEVEL": "INFO", "CONSUMER_USAGE_LIMIT": "1"}))  # fmt: skip
    return out


def _efficiency_run(bench: Bench, name: str, handler: str, conc: int,
                    ms: Callable[[random.Random], int], queues: int, per_queue: int,
                    seed: int) -> dict[str, Any]:  # fmt: skip
    try:
        urls = make_queues(bench, name, queues, handler, conc)
        durations = [ms(random.Random(seed * 7919 + i)) for i in range(per_queue)]

        def fill() -> None:
            fill_queues(bench, urls, per_queue, lambda i: {"ms": durations[i], "i": i})

        fill()
        total = queues * per_queue
        cpu0 = time.process_time()  # the loop's threads, in this process
        baseline(bench, urls, conc, lambda b: time.sleep(b["ms"] / 1000), total)
        loop_ms = (time.process_time() - cpu0) * 1000 / total
        fill()
        with _measured_daemon(bench) as (proc, sampler, memory):
            wait_for(lambda: bench.handled() >= total // 2, 600, "half handled", 0.2)
            memory.update(tree_memory(proc.pid))
            wait_for(lambda: bench.settled(total), 600, f"{total} handled and jobs closed", 0.2)
        records = bench.records()
        first = min(r["start"] for r in records)
        last = max(r.get("end", r["start"]) for r in records)
        drain_ms = (sampler.at(last) - sampler.at(first)) * 1000 / total
        whole_ms = (sampler.points[-1][1] - sampler.points[0][1]) * 1000 / total
        by_kind = {k: round(v * 1000 / total, 3) for k, v in sampler.by_kind(first, last).items()}
        return {"tree_cpu_ms_per_message": drain_ms, "by_kind_ms_per_message": by_kind,
                "tree_cpu_ms_per_message_whole_run": whole_ms,
                "loop_cpu_ms_per_message": loop_ms, "ratio": drain_ms / loop_ms,
                "ratio_whole_run": whole_ms / loop_ms, "memory": dict(memory)}  # fmt: skip
    finally:
        bench.close()


@contextlib.contextmanager
def _measured_daemon(bench: Bench) -> Iterator[tuple[Any, Sampler, dict[str, Any]]]:
    """The daemon (MW, 2 workers) with its tree's CPU sampled from its start until it has
    been told to stop (its shutdown is not counted)."""
    memory: dict[str, Any] = {}
    with bench.daemon("--mode", "MW", "--workers", "2") as proc:
        sampler = Sampler(proc.pid)
        try:
            yield proc, sampler, memory
        finally:
            sampler.stop()


def consumer_start(bench: Bench, queues: int = 6) -> dict[str, Any]:
    """Spawn → first job started, for consumers started one at a time (each queue's job
    gets a fresh one: CONSUMER_USAGE_LIMIT 1), so that they do not share the CPU."""
    try:
        with bench.daemon("--mode", "MW", "--workers", "1"):
            for i in range(queues):
                fill_queues(bench, make_queues(bench, f"start{i}-", 1, NOOP, 2), 5,
                            lambda n: {"ms": 0, "i": n})  # fmt: skip
                wait_for(lambda i=i: bench.settled(5 * (i + 1)), 120, "a queue drained", 0.2)
        spawned: dict[int, float] = {}
        started: dict[int, float] = {}
        for log in bench.root.glob("daemon-*.log"):
            for event in _events(log):
                at = datetime.fromisoformat(event["timestamp"]).timestamp()
                if event["event"] == "consumer.spawned":
                    spawned[int(event["consumer_pid"])] = at
                elif event["event"] == "consumer.job_started":
                    started.setdefault(int(event["pid"]), at)
        ms = sorted((started[p] - spawned[p]) * 1000 for p in spawned if p in started)
        return {"consumers": len(ms), "median": round(median(ms), 1),
                "max": round(max(ms), 1) if ms else None}  # fmt: skip
    finally:
        bench.close()


def _events(log: Path) -> Iterator[Record]:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if "event" in event and "timestamp" in event:
                    yield event


# --- idle ------------------------------------------------------------------------------------


def idle(kind_: str, repeat: int, root: Path) -> dict[str, Any]:
    queues, settle = 100, 30.0
    seconds = 300.0 if kind_ == "localstack" else 60.0
    runs = []
    for r in range(repeat):
        bench = Bench(root / f"idle{r}", kind_)
        try:
            for i in range(queues):
                bench.admin.create(f"idle{i}", handler=NOOP)
            with bench.daemon("--mode", "MW", "--workers", "2") as proc:
                time.sleep(settle)  # the first checks of every queue, the backoff of idle ones
                cpu0, t0 = tree_cpu(proc.pid), time.time()
                time.sleep(seconds)
                runs.append((tree_cpu(proc.pid) - cpu0) / (time.time() - t0) * 100)
        finally:
            bench.close()
    return {"load": f"MW, 2 workers, {queues} empty queues, {seconds:.0f} s after {settle:.0f} s",
            "percent_of_one_core": round(median(runs), 2), "runs": [round(x, 2) for x in runs]}
