"""Runner.tick(now) at chosen times: the deadline, progress, visibility extensions, a stop
and its grace, with time given only as the tick's argument (and the same clock for the
in-memory SQS and the runner's flow).

No handler threads: a hand-turned executor starts and finishes work when the test says.
The runner's SQS calls still run on its I/O threads (calls.py); every step waits until
they landed, so what a test sees after a step does not depend on timing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestrator.backends.memory import MemorySqs
from orchestrator.metrics import Meter
from orchestrator.roles.consumer.engine.executors import Fatal
from orchestrator.roles.consumer.engine.flow import Flow, Work
from orchestrator.roles.consumer.engine.invoke import Result
from orchestrator.roles.consumer.engine.runner import (
    EXTEND_CHECK_SECONDS,
    PROGRESS_SECONDS,
    Control,
    Runner,
)
from orchestrator.roles.consumer.engine.spec import JobSpec, Outcome
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason

pytestmark = pytest.mark.timeout(30)

# Far from this machine's monotonic clock: the runner must use only the time it is given.
START = 1_000_000.0
VISIBILITY = 30  # extended once half of it passed: 15 s after the receive


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Hand:
    """An executor the test turns by hand: `take` starts what may start, `finish` ends it."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.running: list[Work] = []
        self.killed: bool | None = None  # how it was closed (None: not yet)

    def start(self) -> None:
        pass

    def resize(self, limit: int, processes: int) -> None:
        pass

    def maintain(self) -> Fatal | None:
        return None

    def retire(self) -> None:
        pass

    def close(self, kill: bool) -> None:
        self.killed = kill

    def report(self) -> list[dict[str, Any]]:
        return []

    def take(self) -> int:
        while (work := self.flow.take()) is not None:
            self.running.append(work)
        return len(self.running)

    def finish(self) -> None:
        works, self.running = self.running, []
        for work in works:
            self.flow.finished(work, Result(frozenset(), None, 0.01))


class Rig:
    """A started runner of queue `q` (100 messages, concurrency 2: 2 run, 2 more held)."""

    def __init__(self, *, max_seconds: float = 600.0, grace: float = 5.0) -> None:
        self.clock = Clock(START)
        self.sqs = MemorySqs(clock=self.clock)
        self.url, _ = self.sqs.create_queue("q", visibility_timeout=VISIBILITY)
        self.sqs.send_batch(self.url, [json.dumps({"seq": i}) for i in range(100)])
        self.controls: list[Control] = []
        self.reports: list[tuple[float, int, int]] = []
        self.hands: list[Hand] = []
        spec = JobSpec.of(protocol.Assign("j", "q", self.url, "unused:handler", VISIBILITY,
                                          protocol.Live(concurrency=2)))  # fmt: skip
        self.runner = Runner(self.sqs, spec, self._executor, drain_empty_polls=2,
                             max_seconds=max_seconds, grace=grace, control=self._control,
                             progress=self._progress, meter=Meter(), clock=self.clock)  # fmt: skip
        assert self.runner.start() is None

    @property
    def hand(self) -> Hand:
        return self.hands[-1]

    def tick(self, now: float) -> Outcome | None:
        """The runner's look at `now`, once the SQS calls it made have landed."""
        self.clock.now = now
        outcome = self.runner.tick(now)
        self.runner.calls.wait()
        self.runner.calls.collect(now)
        return outcome

    def finish(self) -> None:
        """The running handlers return (their deletes are made as the runner asks)."""
        self.hand.finish()
        self.runner.calls.wait()

    def visible(self) -> int:
        return self.sqs.depth(self.url).visible

    def hidden_until(self) -> list[float]:
        """When the messages received so far become visible again."""
        return sorted(m.visible_at for m in self.sqs.queues[self.url].messages if m.receive_count)

    def _executor(self, flow: Flow, processes: int) -> Hand:
        self.hands.append(Hand(flow))
        return self.hand

    def _control(self) -> list[Control]:
        ops, self.controls = self.controls, []
        return ops

    def _progress(self, handled: int, failed: int) -> None:
        self.reports.append((self.clock.now - START, handled, failed))


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        made.append(Rig(**options))
        return made[-1]

    yield make
    for each in made:
        each.runner.close()


def test_the_first_tick_receives_what_fits(rig: Callable[..., Rig]) -> None:
    r = rig()
    assert r.tick(START) is None
    assert r.hand.take() == 2 and r.visible() == 96  # 2 run, 2 held: concurrency + prefetch
    assert r.hidden_until() == [START + VISIBILITY] * 4


def test_the_run_ends_at_its_deadline_from_the_given_clock(rig: Callable[..., Rig]) -> None:
    r = rig(max_seconds=60)
    r.tick(START)
    r.hand.take()
    assert r.tick(START + 59.9) is None and r.runner.reason is None
    assert r.tick(START + 60) is None  # time is up: the 2 held go back, the 2 running finish
    assert r.runner.reason is Reason.MAX_TIME and r.visible() == 98
    r.finish()
    assert r.tick(START + 60.1) == Outcome(2, 0, Reason.MAX_TIME)
    assert len(r.sqs.bodies(r.url)) == 98 and r.hand.killed is False


def test_progress_is_reported_every_progress_second_of_now(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.tick(START)
    r.hand.take()
    r.finish()
    for offset in (0.4, 0.99, 1.0, 1.5, 2.0, 2.2, 3.5):
        r.tick(START + offset)
    assert PROGRESS_SECONDS == 1.0
    assert r.reports == [(0.0, 0, 0), (1.0, 2, 0), (2.0, 2, 0), (3.5, 2, 0)]


def test_visibility_is_extended_when_half_of_it_passed_by_now(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.tick(START)
    r.hand.take()  # running and held messages alike are extended
    assert EXTEND_CHECK_SECONDS == 0.25
    r.tick(START + 14.75)  # due at 15; the runner looks every EXTEND_CHECK_SECONDS
    assert r.hidden_until() == [START + 30] * 4
    assert "ChangeMessageVisibilityBatch" not in r.sqs.requests
    r.tick(START + 15)
    assert r.hidden_until() == [START + 45] * 4  # one request for the four
    assert r.sqs.requests["ChangeMessageVisibilityBatch"] == 1
    r.tick(START + 29.75)
    assert r.sqs.requests["ChangeMessageVisibilityBatch"] == 1  # next due at 30
    r.tick(START + 30)
    assert r.hidden_until() == [START + 60] * 4


def test_a_stop_hands_held_messages_back_and_ends_once_running_ones_finish(
    rig: Callable[..., Rig],
) -> None:
    r = rig()
    r.tick(START)
    r.hand.take()
    r.controls.append(protocol.Stop("j", Reason.SHUTDOWN))
    assert r.tick(START + 1) is None  # the 2 held are back at once
    assert r.runner.reason is Reason.SHUTDOWN and r.visible() == 98
    assert r.tick(START + 2) is None  # the 2 running still run
    r.finish()
    assert r.tick(START + 2.1) == Outcome(2, 0, Reason.SHUTDOWN)
    assert len(r.sqs.bodies(r.url)) == 98 and r.hand.killed is False


def test_handlers_still_running_grace_seconds_after_the_stop_are_handed_back(
    rig: Callable[..., Rig],
) -> None:
    r = rig(grace=5.0)
    r.tick(START)
    r.hand.take()
    r.controls.append(protocol.Stop("j", Reason.SHUTDOWN))
    assert r.tick(START + 10) is None
    assert r.tick(START + 15) is None  # 5 s of grace: not over yet
    outcome = r.tick(START + 15.1)
    assert outcome == Outcome(0, 0, Reason.SHUTDOWN, abandoned=2)
    assert r.visible() == 100 and r.hand.killed is True  # the 2 running, back at once
    r.finish()  # a given-up handler that still returns: its message is not deleted
    assert len(r.sqs.bodies(r.url)) == 100


def test_an_abort_hands_everything_back_at_once(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.tick(START)
    r.hand.take()
    r.controls.append(protocol.Abort("j"))
    assert r.tick(START + 1) == Outcome(0, 0, Reason.ABORTED, abandoned=2)
    assert r.visible() == 100 and r.hand.killed is True


def test_a_paused_queue_does_not_start() -> None:
    sqs = MemorySqs()
    url, _ = sqs.create_queue("q", visibility_timeout=VISIBILITY)
    spec = JobSpec.of(protocol.Assign("j", "q", url, "unused:handler", VISIBILITY,
                                      protocol.Live(concurrency=2, paused=True)))  # fmt: skip
    made: list[Flow] = []

    def executor(flow: Flow, processes: int) -> Hand:
        made.append(flow)
        return Hand(flow)

    runner = Runner(sqs, spec, executor, drain_empty_polls=2, max_seconds=60, grace=5,
                    control=list, progress=lambda h, f: None, meter=Meter())  # fmt: skip
    assert runner.run() == Outcome(0, 0, Reason.PAUSED) and made == []


def test_what_the_sqs_calls_bring_back_is_applied_by_the_runner_alone(
    rig: Callable[..., Rig],
) -> None:
    """The I/O threads only make a request and post its outcome: the flow and the calls'
    state change on the runner's thread, at its next tick (calls.py)."""
    r = rig()
    r.runner.tick(START)  # plans and launches the receives
    r.runner.calls.wait()  # they returned on the I/O threads...
    assert r.runner.calls.outcomes and r.runner.flow.receives.under_way
    assert not r.runner.flow.held  # ...and nothing they brought is in the flow yet
    r.runner.tick(START)
    assert r.hand.take() == 2 and len(r.runner.flow.held) == 2  # applied: 2 run, 2 held
    r.hand.finish()  # handlers only report: the deletes wait for the runner
    assert r.runner.calls.deleting == 0 and "DeleteMessageBatch" not in r.sqs.requests
    r.tick(START + 1)  # a partial batch waits DELETE_MAX_WAIT for more
    assert r.sqs.requests["DeleteMessageBatch"] == 1
