"""Runner: one assignment inside a consumer — receive → handle → delete.

The runner's thread owns the assignment's life: one `tick(now)` at a time, with the
time given, it applies control messages (new settings, pause, stop), reports progress
and decides when the assignment ends. The Flow decides what may start; handlers run on
an executor (threads, an event loop, or handler processes) that pulls its work from it
and reports what ended. This thread alone makes the SQS calls (receives, batched
deletes, retries, hand-backs, visibility extensions) and applies their outcomes, through
Calls (calls.py): handlers and I/O threads only wake it. A message is deleted only
after its handler returned: at-least-once delivery.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator.backends.protocols import ConsumerSqs
from orchestrator.errors import HandlerImportError
from orchestrator.metrics import Meter
from orchestrator.roles.consumer.engine.calls import Calls
from orchestrator.roles.consumer.engine.executors import Executor, Fatal
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.params import FlowParams
from orchestrator.roles.consumer.engine.spec import JobSpec, Outcome
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason

PROGRESS_SECONDS = 1.0
LOOP_SECONDS = 0.1  # the longest the runner sleeps between looks
EXTEND_CHECK_SECONDS = 0.25

log = structlog.get_logger()


# Builds the executor for `processes` handler processes (1: in this process).
ExecutorFactory = Callable[[Flow, int], Executor]
# Control messages for the running job (new settings, stop, abort).
Control = protocol.Retune | protocol.Stop | protocol.Abort


class Waker:
    """Wakes the runner's thread from other threads: one byte on a pipe, at most one
    unread at a time. `watch` gives more descriptors to wake for (control messages)."""

    def __init__(self, watch: Callable[[], list[int]] = list) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.watch = watch
        self.pending = False

    def wake(self) -> None:
        if not self.pending:
            self.pending = True
            with contextlib.suppress(OSError):  # full: a wake-up is already waiting
                os.write(self.write_fd, b"!")

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or `timeout`; True if a watched descriptor is readable (or
        none is watched: then the caller has to look every time)."""
        watched = self.watch()
        ready, _, _ = select.select([self.read_fd, *watched], [], [], timeout)
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass
        self.pending = False
        return not watched or any(fd != self.read_fd for fd in ready)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class Runner:
    """Runs one assignment until the queue drains, time is up, or it is told to stop.

    `run()` starts the executor, then calls `tick(now)` until it returns the Outcome,
    sleeping between looks until woken; every time it acts on comes from `clock` (tests
    drive `start()` and `tick(now)` themselves, with times of their choosing)."""

    def __init__(
        self,
        sqs: ConsumerSqs,
        spec: JobSpec,
        executors: ExecutorFactory,
        *,
        drain_empty_polls: int,
        max_seconds: float,
        grace: float,
        control: Callable[[], list[Control]],
        progress: Callable[[int, int], None],
        meter: Meter,
        watch: Callable[[], list[int]] = list,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sqs = sqs
        self.spec = spec
        self.url = spec.queue_url
        self.visibility = spec.visibility_timeout
        self.executors = executors
        self.processes = spec.processes
        self.clock = clock
        self.deadline = clock() + max_seconds
        self.grace = grace
        self.control = control
        self.progress = progress
        self.waker = Waker(watch)
        params = FlowParams(
            limit=spec.concurrency, fifo=spec.fifo, visibility=self.visibility,
            batch_size=spec.batch_size, batch_window=spec.batch_window, rate=spec.rate_limit,
            adaptive=spec.adaptive, keep_bodies=spec.failure_bodies,
            drain_empty_polls=drain_empty_polls, queue_name=spec.queue_name,
        )  # fmt: skip
        # Handlers that finished and receives that returned only wake this thread, which
        # alone makes the SQS calls (calls.py).
        self.flow = Flow(params, meter=meter, wake=self.waker.wake, clock=clock)
        self.reason: Reason | None = None
        self.error: str | None = None
        self.stopped_at: float | None = None
        self.calls = Calls(sqs, spec, self.flow, self.waker.wake)
        self.retired: list[Executor] = []
        self.control_ready = True  # control messages may be waiting: read them next tick
        self.next_extend = self.next_progress = float("-inf")  # both due at the first tick
        self.next_look = float("-inf")  # the periodic part of a tick (_look)

    # --- the runner's thread ---------------------------------------------------------

    def run(self) -> Outcome:
        """The whole run: start, then tick until it is over, sleeping until woken (a
        control message, an SQS call or a handler that finished) or LOOP_SECONDS."""
        outcome = self.start()
        while outcome is None:
            if (outcome := self.tick(self.clock())) is None:
                self.control_ready = self.waker.wait(LOOP_SECONDS)
        self.close()
        return outcome

    def start(self) -> Outcome | None:
        """Start the executor; the Outcome when the run ends before it began (a paused
        queue, a handler that does not import), else None."""
        if self.spec.paused:
            return Outcome(0, 0, Reason.PAUSED)
        try:
            self.executor = self.executors(self.flow, self.processes)
            self.executor.start()
            fatal = self.executor.maintain()
        except HandlerImportError as exc:
            fatal = Fatal(Reason.HANDLER_IMPORT, str(exc))
        if fatal:
            self._close_executors(kill=True)
            return Outcome(0, 0, fatal.reason, error=fatal.error)
        return None

    def tick(self, now: float) -> Outcome | None:
        """One look at the run at `now` (the clock's seconds): apply control messages and
        what the SQS calls brought back, make the calls due, and the periodic part
        (_look) when something in it is due, LOOP_SECONDS apart at most; the Outcome once
        it is over, else None."""
        if self.control_ready and self._apply_control(self.control(), now):
            return self._give_up(Reason.ABORTED, now)
        self.calls.collect(now)
        if now >= self.next_look:  # a wake-up for I/O alone skips it
            self._look(now)
            self.next_look = min(now + LOOP_SECONDS, self.next_extend, self.next_progress,
                                 max(self.deadline, now))  # fmt: skip
        self._pump(now)
        if self.reason is None and self.flow.drained():
            self._fail_if_fatal(now)  # a handler thread that died fails the job, not drains it
            self._finish(Reason.DRAINED, now)
        if self.reason is None:
            return None
        if self.flow.idle():
            return self._wind_up(self.reason, now)
        assert self.stopped_at is not None
        if now - self.stopped_at > self.grace:
            return self._give_up(self.reason, now)
        return None

    def _look(self, now: float) -> None:
        """End the run at the deadline or on a fatal error; extend visibilities, let an
        adaptive concurrency grow, report progress."""
        if now >= self.deadline:
            self._finish(Reason.MAX_TIME, now)  # yield to queues waiting for capacity
        self._fail_if_fatal(now)
        if now >= self.next_extend:
            self.calls.extend(self.flow.due_extensions(now))
            self.next_extend = now + EXTEND_CHECK_SECONDS
        self.flow.adapt(now)
        if now >= self.next_progress:
            self.progress(*self.flow.counts())
            self.next_progress = now + PROGRESS_SECONDS

    def _fail_if_fatal(self, now: float) -> None:
        """End the run on a dead handler thread or process pool, or a role refused."""
        fatal = self.executor.maintain() or self.calls.fatal
        if fatal and self.reason is None:
            self.error = fatal.error
            self._finish(fatal.reason, now)

    def close(self) -> None:
        """Release the I/O threads and the wake-up pipe (after the Outcome)."""
        self.calls.close()
        self.waker.close()

    def _wind_up(self, reason: Reason, now: float) -> Outcome:
        """Every handler finished: make the last SQS calls and end."""
        self.calls.send(self.flow.take_io(now, everything=True))
        self.calls.settle(now)
        self._close_executors(kill=False)
        return self._outcome(reason)

    def _give_up(self, reason: Reason, now: float) -> Outcome:
        """Stop waiting for running handlers: hand their messages back to SQS at once.

        Handler threads cannot be stopped, so the consumer process must exit after this;
        a handler that still finishes is not deleted (it may run twice, never zero times).
        """
        self._finish(reason, now)
        stuck = self.flow.abandon()
        io = self.flow.take_io(now, everything=True)
        io.returns.extend(stuck)
        self.calls.send(io)
        self.calls.settle(now)
        self._close_executors(kill=True)
        log.warning("runner.gave_up", reason=reason, abandoned=len(stuck))
        return self._outcome(reason, abandoned=len(stuck))

    def _outcome(self, reason: Reason, abandoned: int = 0) -> Outcome:
        """Called once the SQS calls returned (duplicates are counted as receives land)."""
        handled, failed = self.flow.counts()
        return Outcome(handled, failed, reason, abandoned=abandoned, error=self.error,
                       processes=self._report(), duplicates=self.flow.duplicates)  # fmt: skip

    def _finish(self, reason: Reason, now: float) -> None:
        """Stop receiving and hand held messages back; running handlers finish, and the
        first reason given sticks."""
        if self.reason is None:
            self.reason = reason
            self.stopped_at = now
        self.flow.close()

    def _apply_control(self, ops: list[Control], now: float) -> bool:
        """Apply control messages; True when told to abort at once."""
        for op in ops:
            if isinstance(op, protocol.Retune):
                self._apply_settings(op.live, now)
            elif isinstance(op, protocol.Stop):
                self._finish(op.reason, now)
            else:
                return True
        return False

    def _apply_settings(self, live: protocol.Live, now: float) -> None:
        limit, processes = live.concurrency, live.processes
        self.flow.set_limit(limit)
        self.flow.set_batching(live.batch_size, live.batch_window)
        self.flow.set_rate(live.rate_limit)
        self.flow.set_adaptive(live.adaptive)
        if (processes > 1) != (self.processes > 1) and self.reason is None:
            self._switch_executor(processes)
        self.processes = processes
        self.executor.resize(limit, processes)
        if live.paused:
            self._finish(Reason.PAUSED, now)

    def _switch_executor(self, processes: int) -> None:
        """Between handlers in this process and handler processes: the new executor takes
        the next work while the old one finishes what it runs."""
        try:
            fresh = self.executors(self.flow, processes)
            fresh.start()
        except HandlerImportError as exc:
            log.error("runner.executor_switch_failed", error=str(exc))
            return
        self.executor.retire()
        self.retired.append(self.executor)
        self.executor = fresh
        log.info("runner.processes_changed", processes=processes)

    def _close_executors(self, kill: bool) -> None:
        for executor in [*self.retired, getattr(self, "executor", None)]:
            if executor is not None:
                executor.close(kill)

    def _report(self) -> list[dict[str, Any]]:
        return [p for e in [*self.retired, self.executor] for p in e.report()]

    # --- SQS calls -----------------------------------------------------------------

    def _pump(self, now: float) -> None:
        self.calls.send(self.flow.take_io(now))
        self.calls.receive(now)
