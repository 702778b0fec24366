"""Runner: one assignment inside a consumer — receive → handle → delete.

The runner's thread owns the assignment's life: it applies control messages
(new settings, pause, stop), reports progress and decides when the assignment
ends. The Flow decides what may start; handlers run on an executor (threads, an
event loop, or handler processes) that pulls its work from it; the SQS calls it
asks for (receives, batched deletes, retries, hand-backs, visibility extensions)
go through Calls (calls.py). A message is deleted only after its
handler returned: at-least-once delivery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from orchestrator.backends.protocols import ConsumerSqs
from orchestrator.errors import HandlerImportError
from orchestrator.metrics import Meter
from orchestrator.roles.consumer.engine.calls import Calls
from orchestrator.roles.consumer.engine.executors import Executor, Fatal
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason

PROGRESS_SECONDS = 1.0
LOOP_SECONDS = 0.1  # the longest the runner sleeps between looks
EXTEND_CHECK_SECONDS = 0.25
MAX_RECEIVES = 8  # receives under way at once while a queue has a backlog

log = structlog.get_logger()


@dataclass(frozen=True)
class JobSpec:
    """What a consumer is asked to run: the `assign` message from its worker."""

    job_id: str
    queue_name: str
    queue_url: str
    handler: str
    concurrency: int
    paused: bool = False
    visibility_timeout: int = 30
    processes: int = 1
    batch_size: int = 1
    batch_window: float = 0.0
    rate_limit: float | None = None
    adaptive: bool = False
    failure_bodies: bool = False

    @property
    def fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")

    @classmethod
    def of(cls, assign: protocol.Assign) -> JobSpec:
        live = assign.live
        return cls(
            job_id=assign.job_id, queue_name=assign.queue_name, queue_url=assign.queue_url,
            handler=assign.handler, concurrency=live.concurrency, paused=live.paused,
            visibility_timeout=assign.visibility_timeout, processes=live.processes,
            batch_size=live.batch_size, batch_window=live.batch_window,
            rate_limit=live.rate_limit, adaptive=live.adaptive,
            failure_bodies=assign.failure_bodies,
        )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    handled: int
    failed: int
    reason: Reason
    abandoned: int = 0  # handlers still running when the run gave up waiting for them
    error: str | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)  # handler processes' counts
    duplicates: int = 0  # copies received while the message was still here: not run twice


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
    """Runs one assignment until the queue drains, time is up, or it is told to stop."""

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
    ) -> None:
        self.sqs = sqs
        self.spec = spec
        self.url = spec.queue_url
        self.visibility = spec.visibility_timeout
        self.executors = executors
        self.processes = spec.processes
        self.deadline = time.monotonic() + max_seconds
        self.grace = grace
        self.control = control
        self.progress = progress
        self.waker = Waker(watch)
        self.flow = Flow(
            limit=spec.concurrency, fifo=spec.fifo, visibility=self.visibility,
            batch_size=spec.batch_size, batch_window=spec.batch_window,
            drain_empty_polls=drain_empty_polls, queue_name=spec.queue_name, meter=meter,
            keep_bodies=spec.failure_bodies,
        )  # fmt: skip
        self.flow.set_rate(spec.rate_limit)
        self.flow.set_adaptive(spec.adaptive)
        self.flow.wake = self._due
        self.flow.max_receives = MAX_RECEIVES
        self.reason: Reason | None = None
        self.error: str | None = None
        self.stopped_at: float | None = None
        self.calls = Calls(sqs, spec, self.flow, self.waker.wake)
        self.retired: list[Executor] = []

    # --- the runner's thread ---------------------------------------------------------

    def run(self) -> Outcome:
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
            return self._end(Outcome(0, 0, fatal.reason, error=fatal.error))
        return self._end(self._loop())

    def _loop(self) -> Outcome:
        next_progress = next_extend = time.monotonic()
        control_ready = True
        while True:
            if control_ready and self._apply_control(self.control()):
                return self._give_up(Reason.ABORTED)
            now = time.monotonic()
            if now >= self.deadline:
                self._finish(Reason.MAX_TIME)  # yield to queues waiting for capacity
            fatal = self.executor.maintain() or self.calls.fatal
            if fatal and self.reason is None:
                self.error = fatal.error
                self._finish(fatal.reason)
            self._pump()
            if now >= next_extend:
                self.calls.extend(self.flow.due_extensions(now))
                next_extend = now + EXTEND_CHECK_SECONDS
            self.flow.adapt(now)
            if now >= next_progress:
                self.progress(*self.flow.counts())
                next_progress = now + PROGRESS_SECONDS
            if self.reason is None and self.flow.drained():
                self._finish(Reason.DRAINED)
            if self.reason is not None:
                if self.flow.idle():
                    break
                assert self.stopped_at is not None
                if now - self.stopped_at > self.grace:
                    return self._give_up(self.reason)
            control_ready = self.waker.wait(LOOP_SECONDS)
        self.calls.send(self.flow.take_io(time.monotonic(), everything=True))
        self.calls.wait()
        self._close_executors(kill=False)
        handled, failed = self.flow.counts()
        return Outcome(handled, failed, self.reason or Reason.DRAINED, error=self.error,
                       processes=self._report())  # fmt: skip

    def _end(self, outcome: Outcome) -> Outcome:
        self.calls.close()
        self.waker.close()
        return dataclasses.replace(outcome, duplicates=self.flow.duplicates)

    def _give_up(self, reason: Reason) -> Outcome:
        """Stop waiting for running handlers: hand their messages back to SQS at once.

        Handler threads cannot be stopped, so the consumer process must exit after this;
        a handler that still finishes is not deleted (it may run twice, never zero times).
        """
        self._finish(reason)
        stuck = self.flow.abandon()
        io = self.flow.take_io(time.monotonic(), everything=True)
        io.returns.extend(stuck)
        self.calls.send(io)
        self.calls.wait()
        self._close_executors(kill=True)
        log.warning("runner.gave_up", reason=reason, abandoned=len(stuck))
        handled, failed = self.flow.counts()
        return Outcome(handled, failed, reason, abandoned=len(stuck), error=self.error,
                       processes=self._report())  # fmt: skip

    def _finish(self, reason: Reason) -> None:
        """Stop receiving and hand held messages back; running handlers finish, and the
        first reason given sticks."""
        if self.reason is None:
            self.reason = reason
            self.stopped_at = time.monotonic()
        self.flow.close()

    def _apply_control(self, ops: list[Control]) -> bool:
        """Apply control messages; True when told to abort at once."""
        for op in ops:
            if isinstance(op, protocol.Retune):
                self._apply_settings(op.live)
            elif isinstance(op, protocol.Stop):
                self._finish(op.reason)
            else:
                return True
        return False

    def _apply_settings(self, live: protocol.Live) -> None:
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
            self._finish(Reason.PAUSED)

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

    def _due(self) -> None:
        """The flow has SQS calls to make: made from the thread that found them due (a
        handler or I/O thread), sparing a hop through the runner's thread; that is woken
        when the run may be ending."""
        self._pump()
        if self.reason is not None or self.flow.idle():
            self.waker.wake()

    def _pump(self) -> None:
        now = time.monotonic()
        self.calls.send(self.flow.take_io(now))
        self.calls.receive(now)
