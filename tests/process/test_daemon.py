"""The daemon end to end: real processes, real servers, real signals, deadlines."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.models import utcnow
from tests.process.conftest import Daemon, holds_for, records, wait_for

RECORD = "tests.handlers:record"
SLOW = "tests.handlers:slow_record"

pytestmark = pytest.mark.timeout(180)


def drained(store: Store, record_dir: Path, expected: set[tuple[str, str]]) -> bool:
    """Every expected (queue, body) handled, every job closed, nothing assigned."""
    seen = {(r["queue"], r["body"]) for r in records(record_dir)}
    open_jobs = [j for j in store.jobs(limit=1000) if j.status in ("queued", "running")]
    return expected <= seen and not open_jobs and not store.assignments()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals running at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:  # at equal times ends (-1) sort first: touching is not overlap
        running += step
        peak = max(peak, running)
    return peak


def test_mw_two_workers_drain_three_queues(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    for name in ("q1", "q2", "q3"):
        admin.create(name, handler=RECORD, concurrency=5)
        admin.send(name, 100)
    expected = {(q, json.dumps({"seq": i})) for q in ("q1", "q2", "q3") for i in range(100)}
    daemon = start_daemon("--mode", "MW", "--workers", "2")

    wait_for(lambda: drained(store, record_dir, expected), 120, "3 x 100 messages drained")

    handled = records(record_dir)
    jobs = store.jobs(limit=1000)
    assert {j.status for j in jobs} == {"completed"}
    assert sum(j.message_count for j in jobs) == len(handled)  # counts add up
    assert sum(j.failed_count for j in jobs) == 0
    assert all(admin.depth(q).visible == 0 for q in ("q1", "q2", "q3"))
    workers = wait_for(lambda: len(store.workers()) == 2 and store.workers(), 10, "2 workers")
    for worker in workers:
        assert utcnow() - worker.heartbeat_at < timedelta(seconds=3), worker
    assert daemon.stop() == 0


def test_concurrency_is_respected_and_tunable_while_running(
    admin: QueueAdmin,
    store: Store,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
    run_cli: Callable[..., Result],
) -> None:
    admin.create("slow", handler=SLOW, concurrency=2)
    admin.send("slow", 80, body=json.dumps({"ms": 300}))
    daemon = start_daemon("--mode", "MW", "--workers", "1")

    wait_for(lambda: len(records(record_dir)) >= 10, 60, "10 slow messages handled at 2")
    assert run_cli("queue", "set-concurrency", "slow", "4").exit_code == 0
    changed_at = utcnow().timestamp()
    wait_for(lambda: len(records(record_dir)) >= 80, 90, "all 80 slow messages handled")

    intervals = [(r["start"], r["end"]) for r in records(record_dir)]
    before = [i for i in intervals if i[0] < changed_at]
    after_effect = [i for i in intervals if i[0] >= changed_at + 5]
    assert max_overlap(before) == 2  # reached 2, never more
    assert 2 < max_overlap([i for i in intervals if i[1] > changed_at + 5]) <= 4
    assert max_overlap(intervals) <= 4
    assert after_effect, "some messages should start after the change took effect"

    def running_at(t: float) -> int:
        return sum(1 for start, end in intervals if start <= t < end)

    first_above_2 = min(start for start, _ in intervals if running_at(start) > 2)
    assert first_above_2 <= changed_at + 5, "the change took effect within 5 s"
    assert daemon.stop() == 0


def test_master_and_worker_as_separate_processes(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("split", handler=RECORD)
    admin.send("split", 50)
    expected = {("split", json.dumps({"seq": i})) for i in range(50)}
    master = start_daemon("--mode", "M")
    worker = start_daemon("--mode", "W")

    wait_for(lambda: drained(store, record_dir, expected), 90, "50 messages drained by M + W")
    assert master.events("master.leading") and not worker.events("master.leading")
    # The worker logs job.completed just after it closed the job in MongoDB.
    wait_for(lambda: worker.events("job.completed"), 10, "the worker to log the job's end")
    assert not master.events("job.completed")
    assert master.stop() == 0 and worker.stop() == 0


def test_two_masters_one_leader_no_double_assignment(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    names = ["m1", "m2", "m3"]
    for name in names:
        admin.create(name, handler=RECORD)
        admin.send(name, 50)
    expected = {(q, json.dumps({"seq": i})) for q in names for i in range(50)}
    masters = [start_daemon("--mode", "M"), start_daemon("--mode", "M")]
    start_daemon("--mode", "W", "--workers", "2")

    wait_for(lambda: drained(store, record_dir, expected), 120, "3 x 50 messages drained")

    leaders = [m for m in masters if m.events("master.leading")]
    assert len(leaders) == 1
    lease = store.lease()
    assert lease and lease.holder == leaders[0].events("master.leading")[0]["master_id"]
    assignments = [e for m in masters for e in m.events("queue.assigned")]
    jobs = store.jobs(limit=1000)
    assert len(assignments) == len(jobs)
    assert all(e in leaders[0].events("queue.assigned") for e in assignments)
    for name in names:  # a queue's jobs never overlap in time
        spans = sorted((j.created_at, j.ended_at) for j in jobs if j.queue_name == name)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end is not None and end <= start


def test_graceful_stop_releases_everything(
    admin: QueueAdmin,
    store: Store,
    sqs: Sqs,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
) -> None:
    admin.create("long", handler=SLOW, concurrency=3)
    url = store.get_queue("long").queue_url
    for start in range(0, 60, 10):
        sqs.send_batch(url, [json.dumps({"ms": 200, "seq": i}) for i in range(start, start + 10)])
    daemon = start_daemon("--mode", "MW", "--workers", "1")
    wait_for(lambda: len(records(record_dir)) >= 5, 60, "some messages handled")

    assert daemon.stop(timeout=30) == 0

    jobs = store.jobs(limit=1000)
    assert [j.status for j in jobs if j.status in ("queued", "running")] == []
    assert any(j.status == "interrupted" for j in jobs)
    assert store.assignments() == [] and store.workers() == []
    handled = {json.loads(r["body"])["seq"] for r in records(record_dir)}
    back = set()
    while got := sqs.receive(url, 10, 1):
        back |= {json.loads(m.body)["seq"] for m in got}
    # Every message was either handled (and so deleted) or is back in the queue at once.
    assert handled | back == set(range(60))
    assert not handled & back


def test_pause_while_running_then_resume(
    admin: QueueAdmin,
    store: Store,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
    run_cli: Callable[..., Result],
) -> None:
    admin.create("p", handler=SLOW, concurrency=2)
    admin.send("p", 60, body=json.dumps({"ms": 100}))
    daemon = start_daemon("--mode", "MW")
    wait_for(lambda: len(records(record_dir)) >= 5, 60, "some messages handled")
    assert run_cli("queue", "pause", "p").exit_code == 0
    paused = wait_for(
        lambda: [j for j in store.jobs(queue="p") if j.end_reason == "paused"], 20, "paused job"
    )
    assert paused[0].status == "completed"
    handled = len(records(record_dir))
    assert store.assignments() == []
    holds_for(lambda: store.assignments() == [], 3, "a paused queue stays unassigned")
    assert handled < 60 and admin.depth("p").visible > 0
    assert run_cli("queue", "resume", "p").exit_code == 0
    wait_for(lambda: len({r["start"] for r in records(record_dir)}) >= 60, 60, "rest handled")
    assert daemon.stop() == 0


def test_consumers_are_reused_and_recycled(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    names = [f"r{i}" for i in range(4)]
    for name in names:
        admin.create(name, handler=RECORD)
        admin.send(name, 5)
    daemon = start_daemon("--mode", "MW", env={"CONSUMER_USAGE_LIMIT": "1", "MAX_LOAD": "1"})
    expected = {(q, json.dumps({"seq": i})) for q in names for i in range(5)}
    wait_for(lambda: drained(store, record_dir, expected), 90, "4 queues drained one by one")
    pids_by_queue = {r["queue"]: r["pid"] for r in records(record_dir)}
    assert len(set(pids_by_queue.values())) == 4  # a fresh consumer for every assignment
    assert len(daemon.events("consumer.recycling")) >= 3
    assert daemon.stop() == 0


def test_heartbeat_reports_consumer_stats(
    admin: QueueAdmin, store: Store, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("s", handler=SLOW, concurrency=1)
    admin.send("s", 30, body=json.dumps({"ms": 200}))
    daemon = start_daemon("--mode", "MW")

    def busy_consumer() -> list[Any]:
        return [c for w in store.workers() for c in w.consumers if c.queue_name == "s"]

    [stats] = wait_for(busy_consumer, 30, "a heartbeat listing the busy consumer")
    assert stats.pid > 0 and 5 < stats.rss_mb < 500 and stats.cpu_percent >= 0
    assert daemon.stop() == 0


def test_mode_environment_variable(start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(env={"MODE": "M"})
    [started] = wait_for(lambda: daemon.events("supervisor.started"), 30, "supervisor start")
    assert started["roles"] == ["master"]
    assert daemon.stop() == 0
