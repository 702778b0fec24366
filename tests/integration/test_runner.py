"""Runner (one assignment inside a consumer) in-process, against the real SQS server."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestrator.backends.sqs import Sqs
from orchestrator.message import Message
from orchestrator.metrics import BUCKETS, Meter
from orchestrator.roles.consumer.engine import invoke
from orchestrator.roles.consumer.engine.executors import (
    AsyncExecutor,
    Executor,
    MessageMaker,
    ThreadExecutor,
)
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.runner import Control, Runner
from orchestrator.roles.consumer.engine.spec import JobSpec, Outcome
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason


def job(
    sqs: Sqs, name: str, count: int, concurrency: int = 5, visibility: int = 30
) -> dict[str, Any]:
    url, _ = sqs.create_queue(name, visibility_timeout=visibility)
    for start in range(0, count, 10):
        sqs.send_batch(url, [json.dumps({"seq": i}) for i in range(start, min(start + 10, count))])
    return {"queueUrl": url, "queueName": name, "concurrency": concurrency, "jobId": "j",
            "visibilityTimeout": visibility, "handler": "tests.handlers:record"}  # fmt: skip


def spec_of(job: dict[str, Any]) -> JobSpec:
    """The job as its consumer gets it from the worker."""
    live = protocol.Live(concurrency=job["concurrency"], processes=job.get("processes", 1),
                         batch_size=job.get("batchSize", 1),
                         batch_window=job.get("batchWindow", 0.0))  # fmt: skip
    return JobSpec.of(protocol.Assign(job["jobId"], job["queueName"], job["queueUrl"],
                                      job["handler"], job["visibilityTimeout"], live))


def settings(concurrency: int, paused: bool = False) -> Control:
    return protocol.Retune("j", protocol.Live(concurrency=concurrency, paused=paused))


def in_process(spec: JobSpec, handler: Callable[..., object]) -> Callable[[Flow, int], Executor]:
    """The executor factory for a handler given as a function (not an import path)."""

    def make(flow: Flow, processes: int) -> Executor:
        messages = MessageMaker(spec.queue_name, spec.queue_url)
        if invoke.is_async(handler):
            return AsyncExecutor(flow, handler, messages)
        return ThreadExecutor(flow, handler, messages)

    return make


def run(
    sqs: Sqs,
    spec: dict[str, Any],
    handler: Callable[[Message], object],
    control: Callable[[], list[Control]] = list,
    max_seconds: float = 60,
    grace: float = 30,
    meter: Meter | None = None,
    drain_empty_polls: int = 2,
) -> Outcome:
    job_spec = spec_of(spec)
    runner = Runner(sqs, job_spec, in_process(job_spec, handler),
                    drain_empty_polls=drain_empty_polls,
                    max_seconds=max_seconds, grace=grace, control=control,
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

    # Four empty polls (4 s) to call it drained: on a loaded machine two 1 s polls can both
    # start before the failed message's 1 s hide has ended (the embedded server's long
    # poll wakes for a send, not for a message whose hide ends), and the run would end
    # before its retry. It ends at its 4 s deadline instead.
    outcome = run(sqs, spec, handler, max_seconds=4, drain_empty_polls=4)
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
    calls: Iterator[list[Control]] = iter([[], [], [settings(1, paused=True)]])
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

    def control() -> list[Control]:
        with lock:
            if changed_at or len(peaks) < 10:
                return []
            changed_at.append(len(peaks))
        return [settings(6)]

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

    outcome = run(sqs, spec, handler,
                  control=lambda: [protocol.Abort("j")] if started.is_set() else [])
    assert outcome.reason == "aborted" and outcome.abandoned >= 1 and outcome.handled == 0
    depth = sqs.depth(spec["queueUrl"])
    assert depth.visible + depth.in_flight == 4 and depth.visible >= outcome.abandoned


# --- the execution model of docs/design.md §5: prefetch, FIFO groups, async and batch handlers


def fifo_job(sqs: Sqs, name: str, groups: dict[str, int], concurrency: int,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A FIFO queue with `groups[g]` messages {"g", "seq"} per group, sent interleaved."""
    url, _ = sqs.create_queue(name, visibility_timeout=30)
    bodies = [(g, i) for i in range(max(groups.values())) for g in groups if i < groups[g]]
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        sqs.send_batch(url, [json.dumps({"g": g, "seq": i}) for g, i in chunk],
                       group_ids=[g for g, _ in chunk])  # fmt: skip
    return {"queueUrl": url, "queueName": name, "concurrency": concurrency, "jobId": "j",
            "visibilityTimeout": 30, "handler": "tests.handlers:record", **extra}  # fmt: skip


class Ledger:
    """What handlers ran: (body, start, end), and the most that ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[tuple[dict[str, Any], float, float]] = []
        self.running = self.peak = 0

    def enter(self) -> float:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        return time.monotonic()

    def leave(self, body: dict[str, Any], start: float) -> None:
        with self.lock:
            self.running -= 1
            self.runs.append((body, start, time.monotonic()))

    def by_group(self) -> dict[str, list[tuple[int, float, float]]]:
        out: dict[str, list[tuple[int, float, float]]] = {}
        for body, start, end in sorted(self.runs, key=lambda r: r[1]):
            out.setdefault(body["g"], []).append((body["seq"], start, end))
        return out


@pytest.mark.timeout(60)
def test_fifo_groups_run_in_order_one_at_a_time_and_overlap_each_other(sqs: Sqs) -> None:
    spec = fifo_job(sqs, "order.fifo", {"A": 12, "B": 12, "C": 12}, concurrency=3)
    ledger = Ledger()

    def handler(m: Message) -> None:
        start = ledger.enter()
        time.sleep(0.03)
        ledger.leave(m.json(), start)

    outcome = run(sqs, spec, handler)
    assert (outcome.handled, outcome.failed) == (36, 0)
    groups = ledger.by_group()
    for group, runs in groups.items():
        assert [seq for seq, _, _ in runs] == list(range(12)), group  # in order, once each
        for (_, _, end), (_, start, _) in itertools.pairwise(runs):
            assert start >= end, f"group {group} ran two messages at once"
    assert ledger.peak > 1  # different groups ran side by side ...
    assert ledger.peak <= 3  # ... within the concurrency


@pytest.mark.timeout(60)
def test_a_failed_fifo_message_holds_back_only_its_own_group(sqs: Sqs) -> None:
    # B has work for longer than A's backoff, however fast this machine runs it.
    spec = fifo_job(sqs, "hold.fifo", {"A": 6, "B": 15}, concurrency=2)
    ledger = Ledger()

    def handler(m: Message) -> None:
        start = ledger.enter()
        body = m.json()
        time.sleep(0.02)
        ledger.leave({**body, "try": m.receive_count}, start)
        if body == {"g": "A", "seq": 2} and m.receive_count == 1:
            raise ValueError("first try fails")

    outcome = run(sqs, spec, handler)
    assert (outcome.handled, outcome.failed) == (21, 1)
    groups = ledger.by_group()
    assert [seq for seq, _, _ in groups["A"]] == [0, 1, 2, 2, 3, 4, 5]  # the retry came first
    assert [seq for seq, _, _ in groups["B"]] == list(range(15))
    failed_at = groups["A"][2][2]
    retried_at = groups["A"][3][1]
    assert retried_at - failed_at >= 0.9  # A waited out the 1 s backoff ...
    assert any(failed_at < start < retried_at for _, start, _ in groups["B"])  # ... B did not


@pytest.mark.timeout(60)
def test_an_async_handler_runs_far_more_at_once_than_there_are_threads(sqs: Sqs) -> None:
    spec = job(sqs, "async", 200, concurrency=100)
    ledger = Ledger()
    threads: list[int] = []

    async def handler(m: Message) -> None:
        start = ledger.enter()
        threads.append(threading.active_count())
        await asyncio.sleep(2)
        ledger.leave(m.json(), start)

    outcome = run(sqs, spec, handler)
    # Receives run side by side here, and moto may then give a message to two of them
    # (standard SQS may too): at least once, never lost.
    assert {body["seq"] for body, _, _ in ledger.runs} == set(range(200))
    assert outcome.handled >= 200 and outcome.failed == 0
    assert max(threads) < 30  # no thread per message ...
    assert 2 * max(threads) <= ledger.peak <= 100  # ... yet far more at once than threads


@pytest.mark.timeout(60)
def test_a_batch_handler_gets_lists_and_only_its_failures_are_retried(sqs: Sqs) -> None:
    spec = job(sqs, "batch", 23, concurrency=10)
    spec.update(batchSize=5, batchWindow=0.2)
    sizes: list[int] = []
    tries: dict[int, int] = {}
    lock = threading.Lock()

    def handler(messages: list[Message]) -> list[str]:
        with lock:
            sizes.append(len(messages))
            for m in messages:
                tries[m.json()["seq"]] = tries.get(m.json()["seq"], 0) + 1
        # seq 7 and 13 fail once
        return [m.message_id for m in messages
                if m.json()["seq"] in (7, 13) and m.receive_count == 1]  # fmt: skip

    outcome = run(sqs, spec, handler)
    # (receives may run side by side at concurrency 10: moto may deliver one twice)
    assert outcome.handled >= 23 and outcome.failed >= 2
    assert max(sizes) == 5 and sum(sizes) >= 25
    assert set(tries) == set(range(23))
    assert all(tries[i] >= (2 if i in (7, 13) else 1) for i in range(23))
    depth = sqs.depth(spec["queueUrl"])
    assert depth.visible + depth.in_flight == 0


@pytest.mark.timeout(60)
def test_held_messages_go_back_at_once_when_the_run_is_stopped(sqs: Sqs) -> None:
    spec = job(sqs, "handback", 10, concurrency=2)
    started = threading.Event()
    ran: list[int] = []
    stop_at: list[float] = []

    def handler(m: Message) -> None:
        ran.append(m.json()["seq"])
        started.set()
        time.sleep(1.5)

    def control() -> list[Control]:
        if started.is_set() and not stop_at:
            stop_at.append(time.monotonic())
            return [protocol.Stop("j", Reason.SHUTDOWN)]
        return []

    visible_at: list[float] = []

    def watch() -> None:
        while not stop_at:
            time.sleep(0.01)
        while time.monotonic() - stop_at[0] < 1.2:
            if sqs.depth(spec["queueUrl"]).visible == 10 - len(ran):
                visible_at.append(time.monotonic())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcome = run(sqs, spec, handler, control=control)
    watcher.join()
    assert outcome.reason == "shutdown" and outcome.handled == len(ran) <= 2
    # everything received but not started was visible again within a second of the stop,
    # while the running handlers still ran (1.5 s)
    assert visible_at and visible_at[0] - stop_at[0] < 1.0


@pytest.mark.timeout(60)
def test_receives_never_hold_more_than_the_slots_and_one_prefetch(sqs: Sqs) -> None:
    """Slow handlers (0.5 s: 6 a second, fewer than one per round trip of a receive) hold
    min(10, concurrency); fast ones may hold more (tests/unit/test_policy.py)."""
    spec = spec_of(job(sqs, "bound", 24, concurrency=3))
    ledger = Ledger()

    def handler(m: Message) -> None:
        start = ledger.enter()
        time.sleep(0.5)
        ledger.leave(m.json(), start)

    runner = Runner(sqs, spec, in_process(spec, handler), drain_empty_polls=2, max_seconds=60,
                    grace=30, control=list, progress=lambda h, f: None, meter=Meter())  # fmt: skip
    outcome = runner.run()
    assert outcome.handled == 24
    assert ledger.peak == 3
    assert runner.flow.tally.peak == 3 + 3  # concurrency + min(10, concurrency), and it got there
