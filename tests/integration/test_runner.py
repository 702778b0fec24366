"""Runner (one assignment inside a consumer) in-process, against the real SQS server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.message import Message
from orchestrator.metrics import BUCKETS, Meter
from orchestrator.runner import Outcome, Runner
from orchestrator.sqs import Sqs


def job(
    sqs: Sqs, name: str, count: int, concurrency: int = 5, visibility: int = 30
) -> dict[str, Any]:
    url, _ = sqs.create_queue(name, visibility_timeout=visibility)
    for start in range(0, count, 10):
        sqs.send_batch(url, [json.dumps({"seq": i}) for i in range(start, min(start + 10, count))])
    return {"queueUrl": url, "queueName": name, "concurrency": concurrency,
            "visibilityTimeout": visibility, "jobId": "j"}  # fmt: skip


def run(
    sqs: Sqs,
    spec: dict[str, Any],
    handler: Callable[[Message], object],
    control: Callable[[], list[dict[str, Any]]] = list,
    max_seconds: float = 60,
    grace: float = 30,
    meter: Meter | None = None,
) -> Outcome:
    runner = Runner(sqs, spec, handler, drain_empty_polls=2, max_seconds=max_seconds,
                    grace=grace, max_concurrency=20, control=control,
                    progress=lambda h, f: None, meter=meter or Meter())  # fmt: skip
    return runner.run()


@pytest.mark.timeout(60)
def test_drains_and_deletes_everything(sqs: Sqs) -> None:
    spec = job(sqs, "drain", 25)
    seen: list[int] = []
    outcome = run(sqs, spec, lambda m: seen.append(m.json()["seq"]))
    assert outcome == Outcome(25, 0, "drained")
    assert sorted(seen) == list(range(25))
    depth = sqs.depth(spec["queueUrl"])
    assert (depth.visible, depth.in_flight) == (0, 0)


@pytest.mark.timeout(60)
def test_the_meter_counts_what_the_outcome_counts(sqs: Sqs) -> None:
    spec = job(sqs, "metered", 20)
    meter = Meter()

    def handler(m: Message) -> None:
        time.sleep(0.03)
        if m.json()["seq"] % 5 == 0 and m.receive_count == 1:
            raise ValueError("first try fails")

    outcome = run(sqs, spec, handler, meter=meter)  # the 4 come back after 1 s and pass
    counts = meter.take()["queues"]["metered"]
    assert (counts["handled"], counts["failed"]) == (outcome.handled, outcome.failed) == (20, 4)
    # every run lasted 30 ms or more: nothing in the buckets below 0.025 s
    assert sum(counts["buckets"][: BUCKETS.index(0.025) + 1]) == 0
    assert sum(counts["buckets"]) == 24 and counts["seconds"] >= 24 * 0.03


@pytest.mark.timeout(60)
def test_a_failed_message_is_hidden_for_its_backoff_then_retried(sqs: Sqs) -> None:
    spec = job(sqs, "fail", 5)  # the queue's own visibility timeout is 30 s
    attempts: list[tuple[int, float]] = []

    def handler(m: Message) -> None:
        if m.json()["seq"] == 3:
            attempts.append((m.receive_count, time.monotonic()))
            raise ValueError("poison")

    outcome = run(sqs, spec, handler, max_seconds=4)
    assert outcome.handled == 4 and outcome.failed >= 2
    # Retried after the 1 s backoff of its first receive, not after the 30 s timeout;
    # the receive count grows, so SQS's redrive policy can dead-letter it.
    (count1, t1), (count2, t2) = attempts[:2]
    assert (count1, count2) == (1, 2)
    assert 0.9 <= t2 - t1 < 10
    depth = sqs.depth(spec["queueUrl"])
    assert depth.visible + depth.in_flight == 1  # never deleted


@pytest.mark.timeout(60)
def test_pause_stops_receiving(sqs: Sqs) -> None:
    spec = job(sqs, "pause", 30, concurrency=1)
    calls = iter([[], [], [{"op": "settings", "concurrency": 1, "paused": True}]])
    outcome = run(sqs, spec, lambda m: time.sleep(0.05), control=lambda: next(calls, []))
    assert outcome.reason == "paused" and outcome.handled < 30
    depth = sqs.depth(spec["queueUrl"])
    assert depth.visible + depth.in_flight + outcome.handled == 30


@pytest.mark.timeout(60)
def test_time_limit_yields_the_queue(sqs: Sqs) -> None:
    spec = job(sqs, "busy", 40, concurrency=2)
    outcome = run(sqs, spec, lambda m: time.sleep(0.1), max_seconds=1)
    assert outcome.reason == "max_time" and 0 < outcome.handled < 40


@pytest.mark.timeout(60)
def test_concurrency_limit_and_raise_while_running(sqs: Sqs) -> None:
    spec = job(sqs, "conc", 40, concurrency=2)
    lock = threading.Lock()
    running = [0]
    peaks: list[int] = []

    def handler(m: Message) -> None:
        with lock:
            running[0] += 1
            peaks.append(running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1

    changed_at: list[int] = []

    def control() -> list[dict[str, Any]]:
        with lock:
            if changed_at or len(peaks) < 10:
                return []
            changed_at.append(len(peaks))
        return [{"op": "settings", "concurrency": 6, "paused": False}]

    outcome = run(sqs, spec, handler, control=control)
    assert outcome.handled == 40
    assert max(peaks[: changed_at[0]]) == 2
    assert 2 < max(peaks[changed_at[0] :]) <= 6


@pytest.mark.timeout(60)
def test_long_handlers_are_not_delivered_twice(sqs: Sqs) -> None:
    spec = job(sqs, "long", 1, concurrency=3, visibility=2)
    calls: list[int] = []

    def handler(m: Message) -> None:
        calls.append(m.json()["seq"])
        time.sleep(4.5)  # more than twice the queue's visibility timeout

    outcome = run(sqs, spec, handler)
    assert outcome == Outcome(1, 0, "drained")
    assert calls == [0]  # its visibility was extended while it ran


@pytest.mark.timeout(60)
def test_a_stuck_handler_is_given_up_after_the_grace(sqs: Sqs) -> None:
    spec = job(sqs, "stuck", 3, concurrency=3)
    release = threading.Event()

    def handler(m: Message) -> None:
        if m.json()["seq"] == 0:
            release.wait(30)  # hangs past the time limit and the grace

    start = time.monotonic()
    outcome = run(sqs, spec, handler, max_seconds=1, grace=1)
    release.set()
    assert (outcome.reason, outcome.handled, outcome.abandoned) == ("max_time", 2, 1)
    assert time.monotonic() - start < 10
    # The stuck message was handed back at once, not held until its visibility ran out.
    assert sqs.depth(spec["queueUrl"]).visible == 1


@pytest.mark.timeout(60)
def test_abort_hands_back_what_runs(sqs: Sqs) -> None:
    spec = job(sqs, "abort", 4, concurrency=4)
    started = threading.Event()

    def handler(m: Message) -> None:
        started.set()
        time.sleep(5)

    outcome = run(sqs, spec, handler, control=lambda: [{"op": "abort"}] if started.is_set() else [])
    assert outcome.reason == "aborted" and outcome.abandoned >= 1 and outcome.handled == 0
    depth = sqs.depth(spec["queueUrl"])
    assert depth.visible + depth.in_flight == 4 and depth.visible >= outcome.abandoned
