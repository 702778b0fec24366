"""Backlog age (docs/design.md §10): how long a queue's messages wait for a consumer, and
how late its consumer receives them, on /metrics and /api/queues of a running daemon;
and the doorbell a send rings, so that an idle queue is looked at at once (§3)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from tests.http import get
from tests.process.conftest import Daemon, api_url, holds_for, records, wait_for
from tests.process.test_api import metric_samples

WAIT = "orchestrator_queue_wait_seconds"
OLDEST = "orchestrator_queue_oldest_age_seconds"


def gauge(base: str, name: str, queue: str) -> float | None:
    return metric_samples(base).get((name, (("queue", queue),)))


@pytest.mark.timeout(180)
def test_a_queue_that_waits_for_room_shows_its_wait_then_how_late_its_messages_arrive(
    admin: QueueAdmin, sqs: Sqs, start_daemon: Callable[..., Daemon]
) -> None:
    # One worker with room for one queue: "busy" holds it for ~8 s, "late" waits.
    busy = admin.create("busy", concurrency=1, handler="tests.handlers:slow_record")
    sqs.send_batch(busy.queue_url, [json.dumps({"seq": i, "ms": 1000}) for i in range(8)])
    daemon = start_daemon("--mode", "MW", env={"MAX_LOAD": "1"})
    base = api_url(daemon)
    wait_for(lambda: [q for q in get(f"{base}/api/queues") if q["worker"]], 30, "busy to run")
    late = admin.create("late", concurrency=2, handler="tests.handlers:slow_record")
    # 10 of 0.8 s, 2 at a time: it runs for 4 s, through two progress reports
    sqs.send_batch(late.queue_url, [json.dumps({"seq": i, "ms": 800}) for i in range(10)])
    sent_at = time.time()

    # It waits: the gauge grows while no worker is free; the busy one is served, 0.
    first = wait_for(lambda: (gauge(base, WAIT, "late") or 0) > 0 and gauge(base, WAIT, "late"),
                     30, "late's wait to show")  # fmt: skip
    assert gauge(base, WAIT, "busy") == 0
    assert (wait_for(lambda: (gauge(base, WAIT, "late") or 0) > first + 1 and
                     gauge(base, WAIT, "late"), 15, "the wait to grow")) > first  # fmt: skip
    view = {q["name"]: q for q in get(f"{base}/api/queues")}["late"]
    assert view["waitSeconds"] > 0 and view["oldestAgeSeconds"] is None  # not running yet

    # Once it runs: no wait, and its messages arrived as late as they waited.
    oldest = wait_for(lambda: (gauge(base, OLDEST, "late") or 0) > 0
                      and gauge(base, OLDEST, "late"), 60, "late's oldest age")  # fmt: skip
    assert gauge(base, WAIT, "late") == 0
    waited = time.time() - sent_at
    assert 2 < oldest <= waited + 1


@pytest.mark.timeout(120)
def test_queue_send_rings_the_doorbell_of_a_queue_idle_for_longer_than_idle_check_max(
    admin: QueueAdmin, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """An idle queue is looked at after 2 s doubling to IDLE_CHECK_MAX (60 s here): after
    16 s idle its next look is ~14 s away. A send through the product rings its doorbell,
    and the leading master looks at it in its next cycle (MASTER_INTERVAL 0.2 s)."""
    admin.create("idle", handler="tests.handlers:record")
    daemon = start_daemon("--mode", "MW", env={"IDLE_CHECK_MAX": "60"})
    api_url(daemon)  # the master runs
    holds_for(lambda: not records(record_dir), 16, "idle, nothing handled")
    admin.send("idle", 3)
    wait_for(lambda: len(records(record_dir)) >= 3, 4, "the messages handled within 4 s")
