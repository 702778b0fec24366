"""Flow control against real daemons and servers: a fleet-wide rate limit, priorities
with preemption, adaptive concurrency, and shards of a hot queue."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.store import Store
from tests.process.conftest import Daemon, records, wait_for

pytestmark = pytest.mark.timeout(180)


def starts(record_dir: Path, queue: str) -> list[float]:
    return sorted(r["start"] for r in records(record_dir) if r["queue"] == queue)


def most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most handler runs that overlapped in time (from their start and end)."""
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs],
                   key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_a_rate_limit_holds_across_the_fleet(
    admin: QueueAdmin, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("rated", handler="tests.handlers:record", concurrency=10, rate_limit=10.0)
    admin.send("rated", 300)
    start_daemon("--mode", "MW", "--workers", "2")
    got = wait_for(lambda: (s := starts(record_dir, "rated")) and s[-1] - s[0] >= 22 and s, 90,
                   "22 s of rate-limited handling")  # fmt: skip
    first = got[0] + 1  # past the first second's single token
    in_20 = sum(1 for s in got if first <= s < first + 20)
    assert 180 <= in_20 <= 220, f"{in_20} handlers started in 20 s at 10/s (±10 %)"


def test_a_queue_of_higher_priority_preempts_a_lower_one(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("low", handler="tests.handlers:slow_record", concurrency=2)
    admin.send("low", 300, body=json.dumps({"ms": 100}))
    daemon = start_daemon("--mode", "MW", env={"MAX_LOAD": "1", "PREEMPT_AFTER": "2"})
    wait_for(lambda: starts(record_dir, "low"), 60, "the low-priority queue to run")
    admin.create("high", handler="tests.handlers:record", priority=9)
    admin.send("high", 5)
    [preempting] = wait_for(lambda: daemon.events("queue.preempting"), 30, "a preemption")
    assert (preempting["queue"], preempting["waiting_queue"]) == ("low", "high")
    wait_for(lambda: len(starts(record_dir, "high")) == 5, 30, "the high-priority queue handled")
    [low_job] = [j for j in store.jobs(queue="low") if j.end_reason == "preempted"]
    assert low_job.status == "completed"


def test_an_adaptive_queue_halves_on_backoff_and_grows_back(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("fragile", handler="tests.handlers:backoff_while_flagged", concurrency=8,
                 adaptive=True)  # fmt: skip
    admin.send("fragile", 400, body=json.dumps({"ms": 500}))  # 16 a second: 25 s of work
    start_daemon("--mode", "MW", env={"ASSIGNMENT_MAX_SECONDS": "120"})  # one job throughout

    def effective() -> int | None:
        running = [j for j in store.jobs(queue="fragile") if j.status == "running"]
        return running[0].effective_concurrency if running else None

    wait_for(lambda: effective() == 8, 60, "the queue to run at its concurrency")
    flag = record_dir / "overloaded"
    flag.touch()  # the downstream struggles: every handler raises Backoff
    wait_for(lambda: (e := effective()) is not None and e <= 2, 20, "the concurrency to halve")
    flag.unlink()
    wait_for(lambda: effective() == 8, 40, "the concurrency to grow back")


def test_a_backlog_gets_a_second_shard_on_another_worker_within_the_concurrency(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("hot", handler="tests.handlers:slow_record", concurrency=4, max_shards=2)
    admin.send("hot", 400, body=json.dumps({"ms": 100}))
    daemon = start_daemon("--mode", "MW", "--workers", "2")
    [sharded] = wait_for(lambda: daemon.events("queue.sharded"), 60, "a second shard")
    assert sharded["shard"] == 1
    wait_for(lambda: len({r["pid"] for r in records(record_dir)}) >= 2, 30,
             "handlers in two consumers")  # fmt: skip
    wait_for(lambda: len(starts(record_dir, "hot")) >= 400, 120, "the backlog drained")
    runs = [r for r in records(record_dir) if r["queue"] == "hot"]
    assert most_at_once(runs) <= 4  # concurrency 4 across both shards, always
    jobs = store.jobs(queue="hot", limit=100)
    workers = {j.worker_id for j in jobs if j.shard == 1} | {j.worker_id for j in jobs
                                                             if j.shard == 0}
    assert len(workers) == 2  # two shards, two workers


def test_the_slowest_rate_runs_and_lifting_it_lets_the_rest_run_at_once(
    admin: QueueAdmin, record_dir: Path, start_daemon: Callable[..., Daemon],
    run_console: Callable[..., Any],
) -> None:
    """1e-10/s is refused (it killed every handler thread: a wait of 1e10 s overflowed);
    the slowest rate taken runs its token's message, and a lifted limit runs the rest (the
    cap on a waiting thread's wait is tested in test_flow.py)."""
    refused = run_console("queue", "create", "fc", "--rate-limit", "1e-10")
    assert refused.returncode == 2 and "out of range" in refused.stderr
    admin.create("fc", handler="tests.handlers:record", concurrency=5, rate_limit=0.001)
    admin.send("fc", 5)
    daemon = start_daemon("--mode", "MW")
    wait_for(lambda: len(starts(record_dir, "fc")) == 1, 60, "the one token's message")
    admin.update("fc", rate_limit=None)
    wait_for(lambda: len(starts(record_dir, "fc")) == 5, 20, "the rest once the limit is lifted")
    assert not daemon.events("handler_thread.died")
    assert daemon.stop() == 0
