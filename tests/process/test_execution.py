"""What `concurrency` means, end to end (docs/design.md §5): FIFO groups, handler processes,
async and batch handlers, held messages handed back on a stop."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from tests.process.conftest import Daemon, records, wait_for
from tests.process.test_daemon import max_overlap

pytestmark = pytest.mark.timeout(180)


def by_group(recs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in sorted(recs, key=lambda r: r["start"]):
        out.setdefault(rec["group"], []).append(rec)
    return out


def seqs(recs: list[dict[str, Any]]) -> list[int]:
    return [json.loads(r["body"])["seq"] for r in recs]


def closed_jobs(store: Store) -> list[Any]:
    jobs = store.jobs(limit=1000)
    return [] if any(j.status in ("queued", "running") for j in jobs) else jobs


def test_a_fifo_queue_keeps_each_groups_order_while_groups_overlap(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("orders.fifo", handler="tests.handlers:slow_record", concurrency=3)
    admin.send("orders.fifo", 60, body=None, groups=4)  # seq i goes to group g{i % 4}
    daemon = start_daemon("--mode", "MW")

    wait_for(lambda: len(records(record_dir)) >= 60, 120, "60 FIFO messages handled")
    groups = by_group(records(record_dir))
    assert sorted(groups) == ["g0", "g1", "g2", "g3"]
    for group, recs in groups.items():
        number = int(group[1:])
        assert seqs(recs) == list(range(number, 60, 4)), group  # in order, each once
        for earlier, later in itertools.pairwise(recs):
            assert later["start"] >= earlier["end"], f"{group} ran two messages at once"
    overlap = max_overlap([(r["start"], r["end"]) for r in records(record_dir)])
    assert 1 < overlap <= 3  # groups ran side by side, within the concurrency
    assert daemon.stop() == 0


def test_a_failed_fifo_message_holds_back_only_its_group(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    # concurrency 5: a receive brings several of a group, so g0's 6 and 8 are held when 4
    # fails, and must go back rather than run before its retry
    admin.create("hold.fifo", handler="tests.handlers:fifo_fail_once", concurrency=5)
    admin.send("hold.fifo", 24, groups=2)  # g0: 0, 2, 4 (fails once), ...; g1: 1, 3, 5, ...
    daemon = start_daemon("--mode", "MW")

    wait_for(lambda: sum(r["ok"] for r in records(record_dir)) >= 24, 120, "24 handled")
    groups = by_group(records(record_dir))
    assert seqs(groups["g0"]) == [0, 2, 4, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]  # retry first
    assert seqs(groups["g1"]) == list(range(1, 24, 2))
    failed = next(r for r in groups["g0"] if not r["ok"])
    retried = next(r for r in groups["g0"] if r["ok"] and json.loads(r["body"])["seq"] == 4)
    assert retried["start"] - failed["end"] >= 0.9  # g0 waited out its 1 s backoff ...
    g1_during = [r for r in groups["g1"] if failed["end"] < r["start"] < retried["start"]]
    assert g1_during, "... while g1 went on"
    assert daemon.stop() == 0


def test_processes_2_runs_the_handlers_in_two_processes(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("cpu", handler="tests.handlers:cpu_record", concurrency=2, processes=2)
    admin.send("cpu", 40, body=json.dumps({"ms": 50}))
    daemon = start_daemon("--mode", "MW")

    wait_for(lambda: len(records(record_dir)) >= 40 and closed_jobs(store), 120, "40 handled")
    recs = records(record_dir)
    [job] = store.jobs(limit=10)
    pids = {r["pid"] for r in recs}
    assert len(pids) == 2 and job.consumer_pid not in pids  # two handler processes
    assert {p["pid"] for p in job.processes} == pids
    assert sum(p["handled"] for p in job.processes) == job.message_count == 40
    assert max_overlap([(r["start"], r["end"]) for r in recs]) <= 2
    assert daemon.stop() == 0


def test_killing_a_handler_process_loses_nothing_and_the_job_says_so(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("sturdy", handler="tests.handlers:slow_record", concurrency=4, processes=2)
    admin.send("sturdy", 60, body=None)
    daemon = start_daemon("--mode", "MW")

    first = wait_for(lambda: records(record_dir), 60, "handlers running")
    os.kill(first[0]["pid"], signal.SIGKILL)
    killed_at = time.time()

    def all_handled() -> bool:
        return len({r["body"] for r in records(record_dir)}) >= 60 and bool(closed_jobs(store))

    wait_for(all_handled, 120, "all 60 handled after the kill")
    assert {json.loads(r["body"])["seq"] for r in records(record_dir)} == set(range(60))
    assert any(r["start"] > killed_at and r["pid"] != first[0]["pid"] for r in records(record_dir))
    reports = [p for j in store.jobs(limit=10) for p in j.processes]
    assert any(p["pid"] == first[0]["pid"] and p["exit"] == "signal SIGKILL" for p in reports)
    assert daemon.stop() == 0


def test_an_async_handler_runs_far_more_at_once_than_the_consumer_has_threads(
    settings: Settings,
    store: Store,
    sqs: Sqs,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
) -> None:
    admin = QueueAdmin(dataclasses.replace(settings, max_concurrency=1000),
                       lambda: store, lambda: sqs)  # fmt: skip
    admin.create("io", handler="tests.handlers:async_record", concurrency=150)
    admin.send("io", 300, body=json.dumps({"ms": 2000}))  # long enough to pile up on moto
    daemon = start_daemon("--mode", "MW", env={"MAX_CONCURRENCY": "1000"})

    wait_for(lambda: len(records(record_dir)) >= 300, 120, "300 async messages handled")
    recs = records(record_dir)
    threads = max(r["threads"] for r in recs)
    overlap = max_overlap([(r["start"], r["end"]) for r in recs])
    assert threads < 30, threads
    assert 2 * threads <= overlap <= 150, (overlap, threads)
    assert daemon.stop() == 0


def test_a_batch_handlers_failures_go_to_the_dlq_and_the_rest_are_deleted(
    admin: QueueAdmin,
    store: Store,
    sqs: Sqs,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
) -> None:
    queue = admin.create("bulk", handler="tests.handlers:batch_poison", concurrency=10,
                         dlq=True, max_receive_count=2, batch_size=5, batch_window=0.5)  # fmt: skip
    bodies = [json.dumps({"seq": i, **({"poison": 1} if i % 7 == 3 else {})}) for i in range(30)]
    for start in range(0, 30, 10):
        sqs.send_batch(queue.queue_url, bodies[start : start + 10])
    poison = {b for b in bodies if "poison" in b}
    daemon = start_daemon("--mode", "MW")

    assert queue.dlq_url is not None
    wait_for(lambda: sqs.depth(queue.dlq_url).visible == len(poison), 120, "poison in the DLQ")
    recs = records(record_dir)
    assert {r["body"] for r in recs} == set(bodies)
    assert all(sum(r["body"] == b for r in recs) == 1 for b in set(bodies) - poison)
    assert max(r["batch"] for r in recs) > 1  # the handler got lists
    wait_for(lambda: sqs.depth(queue.queue_url).visible + sqs.depth(queue.queue_url).in_flight
             == 0, 30, "the queue empty")  # fmt: skip
    assert daemon.stop() == 0


def test_held_messages_are_visible_again_within_a_second_of_a_stop(
    admin: QueueAdmin,
    store: Store,
    sqs: Sqs,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
) -> None:
    queue = admin.create("held", handler="tests.handlers:hold", concurrency=2)
    admin.send("held", 20, body=json.dumps({"ms": 3000}))
    daemon = start_daemon("--mode", "MW")

    def started() -> list[dict[str, Any]]:
        return [r for r in records(record_dir) if r["phase"] == "start"]

    # 2 running (their handlers started: a loaded machine may start them a while after
    # their receive) and min(10, 2) = 2 received and held
    wait_for(lambda: len(started()) == 2, 60, "2 running")
    wait_for(lambda: sqs.depth(queue.queue_url).in_flight == 4, 60, "2 running + 2 held")
    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: sqs.depth(queue.queue_url).visible == 18, 1.0, "the held ones visible")
    assert daemon.proc.wait(timeout=30) == 0
    assert len(started()) == 2  # the held ones never ran


def test_processes_and_batch_size_follow_a_running_queue(
    admin: QueueAdmin,
    store: Store,
    record_dir: Path,
    start_daemon: Callable[..., Daemon],
    run_cli: Callable[..., Any],
) -> None:
    admin.create("tuned", handler="tests.handlers:shape_record", concurrency=4)
    admin.send("tuned", 400)
    daemon = start_daemon("--mode", "MW")

    wait_for(lambda: len(records(record_dir)) >= 20, 60, "20 handled one by one")
    [job] = wait_for(lambda: store.jobs(limit=5), 10, "the job")
    consumer = job.consumer_pid
    assert {r["pid"] for r in records(record_dir)} == {consumer}
    changed = run_cli("queue", "set", "tuned", "--processes", "2", "--batch-size", "3")
    assert changed.exit_code == 0, changed.output
    changed_at = time.time()

    def followed() -> bool:
        later = [r for r in records(record_dir) if r["start"] > changed_at]
        return len({r["pid"] for r in later} - {consumer}) == 2 and any(r["batch"] == 3
                                                                       for r in later)  # fmt: skip

    wait_for(followed, 30, "handlers in 2 new processes, in batches of 3")
    first = min(r["start"] for r in records(record_dir)
                if r["start"] > changed_at and r["pid"] != consumer)  # fmt: skip
    # within the 2 s relay plus two processes' start (seconds on a loaded machine), well
    # before the 30 s ASSIGNMENT_MAX_SECONDS would restart the job with the new shape
    assert first - changed_at < 10
    assert daemon.stop() == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_the_consumer_refuses_a_handler_outside_handler_modules(
    admin: QueueAdmin, store: Store, sqs: Sqs, record_dir: Path,
    start_daemon: Callable[..., Daemon], processes: int,
) -> None:  # fmt: skip
    # stored before the allowlist was set: the consumer is the last line of defence
    admin.create("legacy", handler="tests.handlers:slow_record", processes=processes)
    admin.send("legacy", 3)
    daemon = start_daemon("--mode", "MW", env={"HANDLER_MODULES": "orchestrator.handlers"})

    jobs = wait_for(lambda: [j for j in store.jobs(limit=10) if j.status == "failed"], 60,
                    "the job to fail")  # fmt: skip
    assert jobs[0].end_reason == "handler_import"
    assert "outside HANDLER_MODULES (orchestrator.handlers)" in (jobs[0].error or "")
    assert not records(record_dir)  # nothing ran, nothing was lost
    depth = sqs.depth(store.get_queue("legacy").queue_url)
    assert depth.visible + depth.in_flight == 3
    assert daemon.stop() == 0
