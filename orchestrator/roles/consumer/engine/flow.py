"""Flow: one assignment's messages between SQS and the handlers (thread-safe).

It holds what the consumer received and has not finished, and it alone decides
what may start (docs/design.md §5):
- at most `limit` (the queue's concurrency) messages run at once; a batch counts
  its length;
- beyond the slots that are free, the consumer holds at most `prefetch` =
  min(10, limit) received-but-not-started messages, so that the next ones are
  there when a slot frees instead of a ReceiveMessage round trip later;
- on a FIFO queue one piece of work per MessageGroupId runs at a time, in the
  order SQS gave; when one fails, the rest of its group is handed back, so that
  SQS (which keeps a group locked while a message of it is in flight) delivers
  the retry first.
Handlers pull work (`take`, `wait_for_work`) and report it (`finished`) under
the one lock, with no queue or future per message. The SQS calls the flow needs
(deletes, retries, hand-backs, visibility extensions, receives) are collected
here and made by the runner, which `wake` calls when one is due.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator import policy
from orchestrator.metrics import Meter
from orchestrator.models import SqsMessage
from orchestrator.policy import RECEIVE_BATCH as BATCH
from orchestrator.roles.consumer.engine.failurelog import FailureLog
from orchestrator.roles.consumer.engine.held import Held, Received
from orchestrator.roles.consumer.engine.invoke import Result
from orchestrator.roles.consumer.engine.rate import Aimd, Bucket

EXTEND_FRACTION = 0.5  # extend a message's visibility once half of it has passed
DELETE_MAX_WAIT = 1.0  # a partial delete batch waits at most this long (s) for more
WAIT_CAP = 1.0  # s: a handler thread waiting for a token or a batch window looks again
EWMA = 0.2  # weight of the newest sample in the handler-time and round-trip averages


@dataclass(eq=False)
class Work:
    """What one handler call gets: one message, or a batch (`batch`: the handler takes a list)."""

    messages: list[Received]
    batch: bool
    started: float


@dataclass(frozen=True)
class Ask:
    """A receive under way: how many it asked for, when, and whether nothing was in
    flight then (only such empty polls count towards "drained")."""

    count: int
    started: float
    idle: bool


@dataclass
class Io:
    """SQS calls the flow wants made (the runner makes them)."""

    deletes: list[Received] = field(default_factory=list)
    # (message, error, seconds to hide it: None for the backoff on its receive count)
    retries: list[tuple[Received, str, float | None]] = field(default_factory=list)
    returns: list[Received] = field(default_factory=list)  # hand back now: visibility 0

    def __bool__(self) -> bool:
        return bool(self.deletes or self.retries or self.returns)


class Flow:
    """The messages of one assignment and the rules for starting them."""

    def __init__(
        self,
        *,
        limit: int,
        fifo: bool,
        visibility: int,
        batch_size: int = 1,
        batch_window: float = 0.0,
        drain_empty_polls: int = 2,
        queue_name: str = "",
        keep_bodies: bool = False,  # the queue's failureBodies: failure notes keep the body
        meter: Meter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.Lock()
        self.work_ready = threading.Condition(self.lock)  # handler threads wait here
        self.waiting = 0  # threads waiting on work_ready
        self.limit = limit
        self.fifo = fifo
        self.visibility = visibility
        self.batch_size, self.batch_window = batch_size, batch_window
        self.drain_empty_polls = drain_empty_polls
        self.queue_name = queue_name
        self.meter = meter
        self.clock = clock
        self.held = Held(fifo)  # received, not started
        self.running: dict[int, Work] = {}  # by id(work)
        self.running_count = 0  # messages, not works
        self.peak = 0  # the most messages received and not finished at once
        self.receiving = 0  # messages asked for by receives under way
        self.receives = 0  # receives under way
        self.backlog = False  # the last receive came back full
        self.empty_polls = 0
        self.last_empty = float("-inf")  # when the last empty poll that counted returned
        self.seq = 0
        self.io = Io()
        self.delete_since = 0.0
        self.flush_deletes = False  # send the waiting deletes now, however few
        self.closed = False  # no more receiving or starting: held messages go back
        self.handled = self.failed = 0
        self.duplicates = 0  # copies of messages already here, received again and dropped
        self.handler_s = 0.0  # average handler-call time
        self.rtt_s = 0.02  # average round trip of a receive that returned messages
        self.max_receives = 1  # receives under way at once, when the queue has a backlog
        self.failures = FailureLog(queue_name, keep_bodies)  # since the last report
        self.bucket: Bucket | None = None  # the rate limit (set_rate)
        self.aimd: Aimd | None = None  # the adaptive concurrency (set_adaptive)
        self.wake: Callable[[], None] = lambda: None  # tells the runner an SQS call is due
        self.listeners: list[Callable[[], None]] = []  # told when work may have become ready

    # --- receiving -------------------------------------------------------------------

    def plan_receive(self, another: bool = False) -> Ask | None:
        """Reserve a receive: how many messages to ask for now (None: none yet).
        `another`: one more may start beside those under way, backlog or not."""
        with self.lock:
            state = self._state()
            if self.closed:
                n = 0
            elif another:
                n = min(policy.capacity(state), BATCH)
            else:
                n = policy.receive_size(state, self.max_receives)
            if not n:
                return None
            self.receiving += n
            self.receives += 1
            return Ask(n, self.clock(), self._idle())

    def _state(self) -> policy.FlowState:
        return policy.FlowState(
            limit=self._limit(), running=self.running_count, held=len(self.held),
            receiving=self.receiving, receives=self.receives, backlog=self.backlog,
            handler_s=self.handler_s, rtt_s=self.rtt_s,
        )  # fmt: skip

    def add(self, ask: Ask, raws: list[SqsMessage]) -> None:
        """The receive `ask` came back with these messages."""
        now = self.clock()
        with self.lock:
            self.receiving -= ask.count
            self.receives -= 1
            self.backlog = len(raws) >= ask.count
            if raws:
                self.rtt_s += EWMA * (now - ask.started - self.rtt_s)
                self.empty_polls = 0
            elif ask.idle and self._idle() and ask.started >= self.last_empty:
                # Empty polls count one after the other, not several under way at once.
                self.empty_polls += 1
                self.last_empty = now
            if self.closed:  # stopped while polling: give them back at once, never run late
                self.io.returns.extend(self._received(raw, now) for raw in raws)
            else:
                fresh = self._new(raws)
                self.duplicates += len(raws) - len(fresh)
                for raw in fresh:
                    self.held.add(self._received(raw, now))
                self._notify(len(fresh))
                self.peak = max(self.peak, self.running_count + len(self.held))
            due = self._runner_due()
        if due:
            self.wake()
        self._tell(listeners=bool(raws))

    def _new(self, raws: list[SqsMessage]) -> list[SqsMessage]:
        """The messages not already here. A message this flow still holds, runs or has yet
        to delete can come again (its visibility ran out; or two receives under way got it
        both, which SQS allows and moto does): a second copy must not start beside the
        first (nor, on a FIFO queue, after the group's later messages), so the copy here
        keeps its place and takes the newer receipt, the one its delete needs."""
        here = {r.message_id: r for r in itertools.chain(
            self.held, (m for w in self.running.values() for m in w.messages), self.io.deletes)}
        fresh = []
        for raw in raws:
            if (copy := here.get(raw.message_id)) is not None:
                copy.message = raw
            else:
                fresh.append(raw)
        return fresh

    def receive_failed(self, ask: Ask) -> None:
        with self.lock:
            self.receiving -= ask.count
            self.receives -= 1

    def _received(self, raw: SqsMessage, now: float) -> Received:
        self.seq += 1
        group = raw.group if self.fifo else None
        return Received(raw, self.seq, group, now, now + self.visibility * EXTEND_FRACTION)

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
                self.waiting += 1
                try:
                    self.work_ready.wait(self._window_wait())
                finally:
                    self.waiting -= 1
            return None

    def _notify(self, n: int) -> None:
        """Wake up to `n` waiting handler threads (called holding the lock); notifying
        nobody is not free, and most of the time every thread is busy."""
        if self.waiting:
            self.work_ready.notify(n)

    def window_wait(self) -> float | None:
        """Seconds until a waiting partial batch may start (None: nothing is waiting)."""
        with self.lock:
            return self._window_wait()

    def _window_wait(self) -> float | None:
        """Seconds until held work may start though nothing finishes: a partial batch's
        window, or the rate limit's next token (None: only a finish can start more)."""
        oldest = self.held.oldest_startable()
        if oldest is None:
            return None
        now = self.clock()
        waits = []
        if self.batch_size > 1:
            waits.append(max(0.0, oldest.received + self.batch_window - now))
        if self.bucket is not None and self.running_count < self._limit():
            waits.append(self.bucket.wait(1, now))
        # Capped: a wait is looked at again after WAIT_CAP whatever it was (a slow rate's
        # next token may be minutes away, and Condition.wait overflows on huge timeouts).
        return min(max(waits), WAIT_CAP) if waits else None

    def _limit(self) -> int:
        """How many messages may run now: the concurrency, or the adaptive one below it."""
        return self.aimd.effective if self.aimd is not None else self.limit

    def _take(self, now: float) -> Work | None:
        limit = self._limit()
        free = limit - self.running_count
        if self.closed or free <= 0 or not self.held:
            return None
        if self.batch_size <= 1:
            if self.bucket is not None and not self.bucket.take(1, now):
                return None  # over the rate: the next token wakes the handlers
            picked = self.held.pop(1, whole_groups=False)
            return self._start(picked, False, now) if picked else None
        oldest = self.held.oldest_startable()
        if oldest is None:
            return None
        target = min(self.batch_size, limit)
        if self.bucket is not None:
            target = min(target, self.bucket.largest())  # a batch is never above a burst
        n = min(target, free, self.held.startable())
        # A batch starts full, or when it waited `batch_window` for messages or slots.
        if n < target and now < oldest.received + self.batch_window:
            return None
        if self.bucket is not None and not self.bucket.take(n, now):
            return None
        return self._start(self.held.pop(n, whole_groups=True), True, now)

    def _start(self, messages: list[Received], batch: bool, now: float) -> Work:
        work = Work(messages, batch, now)
        self.running[id(work)] = work
        self.running_count += len(messages)
        return work

    # --- finishing -------------------------------------------------------------------

    def finished(self, work: Work, result: Result) -> None:
        """A handler call ended: queue deletes and retries, free its slots and group."""
        with self.lock:
            if self.running.pop(id(work), None) is None:
                return  # the run gave up on it and handed it back: never delete it
            self.running_count -= len(work.messages)
            self.handler_s += EWMA * (result.seconds - self.handler_s)
            self._settle(work, result)
            if self.aimd is not None:
                failed = len(result.failed)
                if self.aimd.record(self.clock(), len(work.messages) - failed, failed,
                                    result.backoff):  # fmt: skip
                    self._trim_held()
            if self.held:
                self._notify(len(work.messages))
            due = self._runner_due()
        if due:
            self.wake()
        self._tell(listeners=False)

    def _settle(self, work: Work, result: Result) -> None:
        failed_groups: set[str] = set()
        for received in work.messages:
            if received.message_id in result.failed:
                self.failed += 1
                self.io.retries.append((received, result.error or "failed", result.retry_after))
                self.failures.note(received.message_id, received.receive_count,
                                   received.message.body, result.error, result.trace)
                if received.group is not None:
                    failed_groups.add(received.group)
                self._count(result.seconds, ok=False)
            elif received.group in failed_groups:
                # After a failure in its group: not deleted even if the handler went on,
                # so that the group runs again in order from the failed message.
                self.io.returns.append(received)
            else:
                self.handled += 1
                if not self.io.deletes:
                    self.delete_since = self.clock()
                self.io.deletes.append(received)
                self._count(result.seconds, ok=True)
        if self.fifo:
            groups = {r.group for r in work.messages if r.group is not None}
            back, emptied = self.held.finished(groups, failed_groups)
            self.io.returns.extend(back)
            # SQS keeps a group locked until its received messages are deleted: a delete
            # waiting for a fuller batch would hold the group back.
            self.flush_deletes = self.flush_deletes or emptied

    def _count(self, seconds: float, ok: bool) -> None:
        # Counted where the job's counts are, so that the two always agree.
        if self.meter is not None:
            self.meter.message(self.queue_name, seconds, ok=ok)

    def _runner_due(self) -> bool:
        """Whether the runner has an SQS call to make now (called holding the lock)."""
        if self.io.retries or self.io.returns or len(self.io.deletes) >= BATCH:
            return True
        if self.flush_deletes and self.io.deletes:
            return True
        if self._idle():
            return True
        if self.closed or (self.receives and not self.backlog):
            return False  # no receive could start: spare building the state
        return policy.receive_size(self._state(), self.max_receives) > 0

    def _idle(self) -> bool:
        return not self.running and not self.held

    # --- what the runner asks ----------------------------------------------------------

    def take_io(self, now: float, *, everything: bool = False) -> Io:
        """The SQS calls due now: full delete batches, and a partial one once it waited
        DELETE_MAX_WAIT (or a quarter of the visibility timeout), or `everything`."""
        with self.lock:
            io, self.io = self.io, Io()
            wait = min(DELETE_MAX_WAIT, self.visibility / 4)
            flush_all = (everything or self._idle() or self.flush_deletes
                         or now - self.delete_since >= wait)  # fmt: skip
            self.flush_deletes = False
            keep = 0 if flush_all else len(io.deletes) % BATCH
            if keep:
                self.io.deletes = io.deletes[-keep:]
                io.deletes = io.deletes[:-keep]
            return io

    def due_extensions(self, now: float) -> list[str]:
        """Receipts whose visibility should be extended now: running and held messages."""
        with self.lock:
            due = [r for w in self.running.values() for r in w.messages if r.extend_at <= now]
            due += [r for r in self.held if r.extend_at <= now]
            for held in due:
                held.extend_at = now + self.visibility * EXTEND_FRACTION
            return [h.receipt for h in due]

    def set_limit(self, limit: int) -> None:
        """A new concurrency. Held messages above the new bounds go back at once (the
        newest first, which on a FIFO queue are the tails of their groups)."""
        with self.lock:
            self.limit = limit
            if self.aimd is not None:
                self.aimd.set_ceiling(limit)
            self._trim_held()
            self.work_ready.notify_all()
        self.wake()
        self._tell(listeners=True)

    def _trim_held(self) -> None:
        """Hand back what is held beyond the bounds of the current limit (holding the lock)."""
        limit = self._limit()
        allowed = max(0, limit - self.running_count) + policy.prefetch(limit)
        if len(self.held) > allowed:
            self.io.returns.extend(self.held.take_newest(len(self.held) - allowed))

    def set_rate(self, rate: float | None) -> None:
        """At most `rate` handler starts a second (None: no limit); applies at once."""
        with self.lock:
            now = self.clock()
            if rate is None:
                self.bucket = None
            elif self.bucket is None:
                self.bucket = Bucket(rate, now)
            else:
                self.bucket.set_rate(rate, now)
            self.work_ready.notify_all()
        self._tell(listeners=True)

    def set_adaptive(self, adaptive: bool) -> None:
        """Follow AIMD below the concurrency (starting at it), or not."""
        with self.lock:
            if adaptive and self.aimd is None:
                self.aimd = Aimd(self.limit, self.clock())
            elif not adaptive:
                self.aimd = None
            self.work_ready.notify_all()
        self._tell(listeners=True)

    def adapt(self, now: float) -> None:
        """Let an adaptive concurrency grow after a second without failures."""
        with self.lock:
            grew = self.aimd is not None and self.aimd.tick(now)
            if grew:
                self._notify(1)
        if grew:
            self.wake()
            self._tell(listeners=True)

    def set_batching(self, size: int, window: float) -> None:
        """Applies from the next batch."""
        with self.lock:
            self.batch_size, self.batch_window = size, window
            self.work_ready.notify_all()
        self._tell(listeners=True)

    def close(self) -> None:
        """Stop receiving and starting: every held message goes back at once."""
        with self.lock:
            self.closed = True
            self.io.returns.extend(self.held.take_newest(len(self.held)))
            self.work_ready.notify_all()
        self.wake()
        self._tell(listeners=True)

    def abandon(self) -> list[Received]:
        """Give up on running handlers: their messages, to hand back. If such a handler
        still returns, its message is not deleted (it may run twice, never zero times)."""
        with self.lock:
            stuck = [r for w in self.running.values() for r in w.messages]
            self.running.clear()
            self.running_count = 0
            return stuck

    def demand(self) -> int:
        """Messages running or waiting to start (called holding the lock)."""
        return self.running_count + len(self.held)

    def idle(self) -> bool:
        with self.lock:
            return self._idle() and not self.receives

    def drained(self) -> bool:
        with self.lock:
            # A receive under way does not count: should it bring messages, they go back.
            return policy.is_drained(
                self.empty_polls, self.running_count + len(self.held), self.drain_empty_polls
            )

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.handled, self.failed

    def load(self) -> tuple[int, int]:
        """(the concurrency it runs at now, messages running): a progress report's."""
        with self.lock:
            return self._limit(), self.running_count

    def _tell(self, *, listeners: bool) -> None:
        if listeners:
            for listener in self.listeners:
                listener()
