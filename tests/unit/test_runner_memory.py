"""Runner (one assignment) against the in-memory SQS: the delivery rules without servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from orchestrator.backends.memory import MemorySqs
from orchestrator.message import Message
from orchestrator.metrics import Meter
from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine.executors import Executor, MessageMaker, ThreadExecutor
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.runner import Control, Runner
from orchestrator.roles.consumer.engine.running import Work
from orchestrator.roles.consumer.engine.spec import JobSpec, Outcome
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason

pytestmark = pytest.mark.timeout(30)


def queue(sqs: MemorySqs, name: str, count: int) -> str:
    url, _ = sqs.create_queue(name, visibility_timeout=30)
    sqs.send_batch(url, [json.dumps({"seq": i}) for i in range(count)])
    return url


def run(sqs: MemorySqs, url: str, handler: Callable[[Message], object], concurrency: int = 3,
        control: Callable[[], list[Control]] = list) -> Outcome:  # fmt: skip
    name = url.rsplit("/", 1)[-1]
    spec = JobSpec.of(protocol.Assign("j", name, url, "unused:handler", 30,
                                      protocol.Live(concurrency=concurrency)))

    def executor(flow: Flow, processes: int) -> Executor:
        return ThreadExecutor(flow, handler, MessageMaker(name, url))

    runner = Runner(sqs, spec, executor, drain_empty_polls=2, max_seconds=20, grace=5,
                    control=control, progress=lambda h, f: None, meter=Meter())  # fmt: skip
    return runner.run()


def test_every_message_is_handled_once_and_deleted_in_batches() -> None:
    sqs = MemorySqs()
    url = queue(sqs, "q", 45)
    seen: list[int] = []
    outcome = run(sqs, url, lambda m: seen.append(m.json()["seq"]))
    assert outcome == Outcome(45, 0, Reason.DRAINED)
    assert sorted(seen) == list(range(45)) and sqs.bodies(url) == []
    assert sqs.requests["DeleteMessageBatch"] < 45 / 3  # batched, not one by one


def test_a_failed_message_is_not_deleted_but_hidden_for_its_backoff() -> None:
    sqs = MemorySqs()
    url = queue(sqs, "q", 5)

    def handler(m: Message) -> None:
        if m.json()["seq"] == 3:
            raise ValueError("boom")

    outcome = run(sqs, url, handler)
    assert (outcome.handled, outcome.failed, outcome.reason) == (4, 1, Reason.DRAINED)
    assert sqs.bodies(url) == [json.dumps({"seq": 3})]  # still there, for a retry
    assert sqs.depth(url).in_flight == 1  # hidden: 1 s after a first failure


def test_no_more_than_the_concurrency_run_at_once() -> None:
    sqs = MemorySqs()
    url = queue(sqs, "q", 40)
    lock, running, peak = threading.Lock(), [0], [0]

    def handler(m: Message) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    outcome = run(sqs, url, handler, concurrency=4)
    assert outcome.handled == 40 and peak[0] == 4


def test_a_stop_hands_held_messages_back_and_lets_running_ones_finish() -> None:
    sqs = MemorySqs()
    url = queue(sqs, "q", 30)
    started = threading.Event()

    def handler(m: Message) -> None:
        started.set()
        time.sleep(0.2)

    stop = [protocol.Stop("j", Reason.SHUTDOWN)]
    outcome = run(sqs, url, handler, concurrency=2,
                  control=lambda: stop if started.is_set() else [])  # fmt: skip
    assert outcome.reason is Reason.SHUTDOWN and outcome.handled == 2
    assert len(sqs.bodies(url)) == 28 and sqs.depth(url).visible == 28  # back at once


def test_sqs_unreachable_is_ridden_out() -> None:
    from orchestrator.errors import ServiceUnavailable

    sqs = MemorySqs()
    url = queue(sqs, "q", 10)
    sqs.fail_with = ServiceUnavailable("SQS at memory failed: down")
    threading.Timer(0.3, lambda: setattr(sqs, "fail_with", None)).start()
    outcome = run(sqs, url, lambda m: None)
    assert outcome.handled == 10 and sqs.bodies(url) == []


def test_a_role_that_cannot_be_assumed_fails_the_job_and_loses_nothing() -> None:
    """Unlike an outage, which is ridden out: the queue's role (its credentials) is gone,
    so the job fails with the reason, and the master's backoff for failed jobs applies."""
    from orchestrator.errors import RoleUnavailable

    sqs = MemorySqs()
    url = queue(sqs, "q", 10)
    sqs.fail_with = RoleUnavailable("could not assume role arn:aws:iam::1:role/x: AccessDenied")
    outcome = run(sqs, url, lambda m: None)
    assert (outcome.reason, outcome.handled) == (Reason.ROLE_UNAVAILABLE, 0)
    assert outcome.error and "AccessDenied" in outcome.error
    sqs.fail_with = None
    assert len(sqs.bodies(url)) == 10


def test_a_rate_limit_bounds_the_starts_in_every_second() -> None:
    sqs = MemorySqs()
    url = queue(sqs, "q", 50)
    starts: list[float] = []

    def handler(m: Message) -> None:
        starts.append(time.monotonic())

    name = url.rsplit("/", 1)[-1]
    spec = JobSpec.of(protocol.Assign("j", name, url, "unused:handler", 30,
                                      protocol.Live(concurrency=10, rate_limit=20.0)))
    def executor(flow: Flow, processes: int) -> Executor:
        return ThreadExecutor(flow, handler, MessageMaker(name, url))

    runner = Runner(sqs, spec, executor, drain_empty_polls=2, max_seconds=20, grace=5,
                    control=list, progress=lambda h, f: None, meter=Meter())  # fmt: skip
    assert runner.run().handled == 50
    first = starts[0]
    per_second = [sum(1 for s in starts if k <= s - first < k + 1) for k in range(3)]
    assert all(n <= 20 + 1 for n in per_second), per_second  # a burst of at most the rate
    assert starts[-1] - first >= 49 / 20 - 0.1  # 50 starts at 20 a second, from 1 token


def test_backoff_hides_the_message_for_its_retry_after() -> None:
    from orchestrator import Backoff

    clock = [0.0]
    sqs = MemorySqs(clock=lambda: clock[0])
    url = queue(sqs, "q", 3)

    def handler(m: Message) -> None:
        if m.json()["seq"] == 1:
            raise Backoff(retry_after=42)

    outcome = run(sqs, url, handler)
    assert (outcome.handled, outcome.failed) == (2, 1)
    [hidden] = sqs.queues[url].messages
    assert hidden.visible_at == 42.0  # not the 1 s of a first failure


def test_a_handler_thread_that_dies_fails_the_job_instead_of_stalling_it() -> None:
    """A bug outside the handler (here: making the Message) killed the thread with its work
    in hand: the work never finished and the job ran to ASSIGNMENT_MAX_SECONDS, `completed`."""
    sqs = MemorySqs()
    url = queue(sqs, "q", 5)
    name = url.rsplit("/", 1)[-1]
    calls = []

    class Breaking(MessageMaker):
        def __call__(self, work: Work) -> list[Message]:
            calls.append(work)
            if len(calls) == 2:
                raise OverflowError("timestamp out of range for platform time_t")
            return super().__call__(work)

    spec = JobSpec.of(protocol.Assign("j", name, url, "unused:handler", 30,
                                      protocol.Live(concurrency=1)))

    def executor(flow: Flow, processes: int) -> Executor:
        return ThreadExecutor(flow, lambda m: None, Breaking(name, url))

    runner = Runner(sqs, spec, executor, drain_empty_polls=2, max_seconds=20, grace=5,
                    control=list, progress=lambda h, f: None, meter=Meter())  # fmt: skip
    started = time.monotonic()
    outcome = runner.run()
    assert outcome.reason is Reason.EXECUTOR_FAILED and outcome.reason.status == "failed"
    assert outcome.error and "a handler thread died: OverflowError" in outcome.error
    assert outcome.failed >= 1  # what it held failed: back to SQS, retried
    assert time.monotonic() - started < 10  # ended at once, not at max_seconds
    left = sqs.bodies(url)  # the failed one is still there; nothing lost
    assert json.dumps({"seq": 1}) in left and outcome.handled + len(left) == 5


def test_a_message_two_receives_both_got_runs_once_and_the_job_counts_the_copy() -> None:
    class Racy(MemorySqs):
        """Hands the first message out again to the next receive (moto's race)."""

        def __init__(self) -> None:
            super().__init__()
            self.first: list[object] = []

        def receive(self, url: str, max_messages: int, wait_seconds: int,
                    visibility_timeout: int | None = None) -> list[SqsMessage]:  # fmt: skip
            got = super().receive(url, max_messages, wait_seconds, visibility_timeout)
            if not self.first and got:
                self.first.append(got[0])
                return got
            if len(self.first) == 1:
                self.first.append(None)
                return [*got, self.first[0]]  # type: ignore[list-item]
            return got

    sqs = Racy()
    url = queue(sqs, "q", 3)
    gate = threading.Event()
    seen: list[int] = []

    def handler(m: Message) -> None:
        seen.append(m.json()["seq"])
        gate.wait(0.5)  # the first message is still running when its copy comes

    outcome = run(sqs, url, handler)
    assert sorted(seen) == [0, 1, 2] and outcome.handled == 3
    assert outcome.duplicates == 1 and sqs.bodies(url) == []
