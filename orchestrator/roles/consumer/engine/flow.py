"""Flow: one assignment's messages between SQS and the handlers (thread-safe).

It holds what the consumer received and has not finished, and alone decides what may
start (docs/design.md §5). It is a coordinator: one lock over parts that each keep one
rule — limits.py (concurrency, AIMD, rate), held.py (start order, FIFO groups),
batching.py (one message or a batch), running.py, receives.py (receive sizing, drain),
outgoing.py (deletes, retries, hand-backs, visibility) and handoff.py (waking handlers).
Handlers pull work (`take`, `wait_for_work`) and report it (`finished`), with no queue
or future per message; the runner makes the SQS calls, and `wake` tells it one is due.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

from orchestrator.metrics import Meter
from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine.batching import Batching
from orchestrator.roles.consumer.engine.failurelog import FailureLog
from orchestrator.roles.consumer.engine.handoff import Handoff
from orchestrator.roles.consumer.engine.held import Held, Received, take_newer
from orchestrator.roles.consumer.engine.invoke import Result
from orchestrator.roles.consumer.engine.limits import Limits
from orchestrator.roles.consumer.engine.outgoing import Io, Outgoing
from orchestrator.roles.consumer.engine.params import FlowParams
from orchestrator.roles.consumer.engine.receives import Ask, Receives
from orchestrator.roles.consumer.engine.running import RunningWork, Work
from orchestrator.roles.consumer.engine.tally import Tally


class Flow:
    """The messages of one assignment and the rules for starting them."""

    def __init__(self, params: FlowParams, *, meter: Meter | None = None,
                 wake: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.lock = threading.Lock()
        self.handoff = Handoff(self.lock)  # handler threads wait here, listeners are told
        self.wake = wake  # tells the runner an SQS call is due
        self.clock = clock
        self.wall = wall  # epoch seconds, to compare with SQS's SentTimestamp
        self.limits = Limits(params.limit, rate=params.rate, adaptive=params.adaptive,
                             now=clock())  # fmt: skip
        self.batching = Batching(params.batch_size, params.batch_window)
        self.receives = Receives(max_receives=params.max_receives,
                                 drain_empty_polls=params.drain_empty_polls,
                                 visibility=params.visibility)  # fmt: skip
        self.outgoing = Outgoing(params.visibility)
        self.held = Held(params.fifo)  # received, not started
        self.running = RunningWork()
        self.tally = Tally(meter, params.queue_name)
        self.closed = False  # no more receiving or starting: held messages go back
        self.failures = FailureLog(params.queue_name, params.keep_bodies)  # until reported

    # --- receiving -------------------------------------------------------------------

    def plan_receive(self, another: bool = False) -> Ask | None:
        """Reserve a receive: how many messages to ask for now (None: none yet).
        `another`: one more may start beside those under way, backlog or not."""
        with self.lock:
            if self.closed:
                return None
            return self.receives.plan(self.limits.current, self.running.count, len(self.held),
                                      now=self.clock(), idle=self._idle(), another=another)

    def add(self, ask: Ask, raws: list[SqsMessage]) -> None:
        """The receive `ask` came back with these messages."""
        now = self.clock()
        with self.lock:
            self.receives.returned(ask, len(raws), now, self._idle())
            extend_at = self.outgoing.extend_at(now)
            if self.closed:  # stopped while polling: give them back at once, never run late
                self.outgoing.hand_back(self.held.wrap(raw, now, extend_at) for raw in raws)
            else:
                here = itertools.chain(self.held, self.running.messages(), self.outgoing.deletes)
                fresh = take_newer(raws, here)
                for raw in fresh:
                    self.held.add(self.held.wrap(raw, now, extend_at))
                self.handoff.notify(len(fresh))
                self.tally.received(len(raws), len(fresh), self.demand())
                self.tally.arrived([r.attributes.get("SentTimestamp") for r in raws], self.wall())
            due = self._runner_due()
        if due:
            self.wake()
        if raws:
            self.handoff.tell()

    def receive_failed(self, ask: Ask) -> None:
        with self.lock:
            self.receives.failed(ask)

    # --- starting --------------------------------------------------------------------

    def take(self) -> Work | None:
        """The next work that may start now, marked running; None when none may."""
        with self.lock:
            return self._take(self.clock())

    def wait_for_work(self, should_exit: Callable[[], bool]) -> Work | None:
        """Block until work may start (returned) or `should_exit()` (called holding the
        lock) says to stop (None). For handler threads."""
        with self.lock:
            while not should_exit():
                work = self._take(self.clock())
                if work is not None:
                    return work
                self.handoff.wait(self.batching.wait(self.held, self.limits,
                                                     self.running.count, self.clock()))
            return None

    def window_wait(self) -> float | None:
        """Seconds until a waiting partial batch may start (None: nothing is waiting)."""
        with self.lock:
            return self.batching.wait(self.held, self.limits, self.running.count, self.clock())

    def _take(self, now: float) -> Work | None:
        if self.closed:
            return None
        picked = self.batching.pick(self.held, self.limits, self.running.count, now)
        return self.running.start(picked, self.batching.batches, now) if picked else None

    # --- finishing -------------------------------------------------------------------

    def finished(self, work: Work, result: Result) -> None:
        """A handler call ended: queue deletes and retries, free its slots and group."""
        with self.lock:
            if not self.running.end(work):
                return  # the run gave up on it and handed it back: never delete it
            now = self.clock()
            self.receives.handler_took(result.seconds)
            self._settle(work, result, now)
            failed = len(result.failed)
            if self.limits.outcome(now, len(work.messages) - failed, failed, result.backoff):
                self._trim_held()
            if self.held:
                self.handoff.notify(len(work.messages))
            due = self._runner_due()
        if due:
            self.wake()

    def _settle(self, work: Work, result: Result, now: float) -> None:
        deleted, failed, failed_groups = self.outgoing.settle(work.messages, result, now)
        self.tally.settled(deleted, len(failed), result.seconds)
        for received in failed:
            self.failures.note(received.message_id, received.receive_count,
                               received.message.body, result.error, result.trace)
        back, emptied = self.held.finished(work.messages, failed_groups)
        self.outgoing.hand_back(back)
        if emptied:
            # SQS keeps a FIFO group locked until its received messages are deleted: a
            # delete waiting for a fuller batch would hold the group back.
            self.outgoing.flush_deletes()

    def _runner_due(self) -> bool:
        """Whether the runner has an SQS call to make now (called holding the lock)."""
        if self.outgoing.due() or self._idle():
            return True
        return not self.closed and self.receives.wanted(
            self.limits.current, self.running.count, len(self.held))

    def _idle(self) -> bool:
        return not self.running and not self.held

    # --- what the runner asks ----------------------------------------------------------

    def take_io(self, now: float, *, everything: bool = False) -> Io:
        """The SQS calls due now (Outgoing.take); every waiting delete once nothing runs
        or is held, since nothing more is coming to fill its batch."""
        with self.lock:
            return self.outgoing.take(now, everything=everything or self._idle())

    def due_extensions(self, now: float) -> list[str]:
        """Receipts whose visibility should be extended now: running and held messages."""
        with self.lock:
            return self.outgoing.due_extensions(
                itertools.chain(self.running.messages(), self.held), now)

    def set_limit(self, limit: int) -> None:
        """A new concurrency. Held messages above the new bounds go back at once (the
        newest first, which on a FIFO queue are the tails of their groups)."""
        with self._changing(wake=True):
            self.limits.set_concurrency(limit)
            self._trim_held()

    def _trim_held(self) -> None:
        """Hand back what is held beyond the bounds of the current limit (holding the lock)."""
        prefetch = self.receives.prefetch(self.limits.current)
        if (excess := len(self.held) - self.limits.may_hold(self.running.count, prefetch)) > 0:
            self.outgoing.hand_back(self.held.take_newest(excess))

    def set_rate(self, rate: float | None) -> None:
        """At most `rate` handler starts a second (None: no limit); applies at once."""
        with self._changing():
            self.limits.set_rate(rate, self.clock())

    def set_adaptive(self, adaptive: bool) -> None:
        """Follow AIMD below the concurrency (starting at it), or not."""
        with self._changing():
            self.limits.set_adaptive(adaptive, self.clock())

    def set_batching(self, size: int, window: float) -> None:
        """Applies from the next batch."""
        with self._changing():
            self.batching = Batching(size, window)

    def close(self) -> None:
        """Stop receiving and starting: every held message goes back at once."""
        with self._changing(wake=True):
            self.closed = True
            self.outgoing.hand_back(self.held.take_newest(len(self.held)))

    def adapt(self, now: float) -> None:
        """Let an adaptive concurrency grow after a second without failures."""
        with self.lock:
            grew = self.limits.adapt(now)
            if grew:
                self.handoff.notify(1)
        if grew:
            self.wake()
            self.handoff.tell()

    @contextlib.contextmanager
    def _changing(self, *, wake: bool = False) -> Iterator[None]:
        """Change what may start, under the lock; then waiting handler threads and the
        listeners (executors) look again, and the runner too with `wake`."""
        with self.lock:
            yield
            self.handoff.notify_all()
        if wake:
            self.wake()
        self.handoff.tell()

    def abandon(self) -> list[Received]:
        """Give up on running handlers: their messages, to hand back. If such a handler
        still returns, its message is not deleted (it may run twice, never zero times)."""
        with self.lock:
            return self.running.abandon()

    def demand(self) -> int:
        """Messages running or waiting to start (called holding the lock)."""
        return self.running.count + len(self.held)

    def idle(self) -> bool:
        with self.lock:
            return self._idle() and not self.receives.under_way

    def drained(self) -> bool:
        with self.lock:
            # A receive under way does not count: should it bring messages, they go back.
            return self.receives.drained(self.demand())

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.tally.handled, self.tally.failed

    @property
    def duplicates(self) -> int:
        """Copies received while their message was still here: dropped, not run twice."""
        return self.tally.duplicates

    def take_oldest_age(self) -> float | None:
        """How late the oldest message received since the last call arrived, s (None: no
        message arrived): a progress report's."""
        with self.lock:
            return self.tally.take_oldest_age()

    def load(self) -> tuple[int, int]:
        """(the concurrency it runs at now, messages running): a progress report's."""
        with self.lock:
            return self.limits.current, self.running.count
