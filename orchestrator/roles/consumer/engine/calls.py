"""Calls: the SQS requests of one assignment, made on a small pool of I/O threads.

Receives as the Flow plans them, deletes and visibility changes 10 messages per
request. An SQS failure never ends the run: the messages only come back.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

import structlog

from orchestrator import policy
from orchestrator.backends.protocols import ConsumerSqs
from orchestrator.backends.sqs import BATCH
from orchestrator.errors import OrchestratorError, RoleUnavailable
from orchestrator.roles.consumer.engine.executors import Fatal
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.held import Received
from orchestrator.roles.consumer.engine.outgoing import Io
from orchestrator.roles.consumer.engine.receives import Ask
from orchestrator.roles.consumer.engine.spec import JobSpec
from orchestrator.roles.process.loop import Outage
from orchestrator.roles.process.protocol import Reason

RECEIVE_WAIT_SECONDS = 1  # short enough to notice pause/stop and drain quickly
IO_THREADS = 16  # receives, deletes and visibility changes under way at once
MAX_HIDE_SECONDS = 43_200  # SQS's longest visibility timeout

log = structlog.get_logger()


class Calls:
    """The SQS side of one assignment's run. Thread-safe: any thread may call it."""

    def __init__(
        self, sqs: ConsumerSqs, spec: JobSpec, flow: Flow, wake: Callable[[], None]
    ) -> None:
        self.sqs = sqs
        self.url = spec.queue_url
        self.fifo = spec.fifo
        self.visibility = spec.visibility_timeout
        self.flow = flow
        self.wake = wake  # the runner's: a FIFO queue's next receive may wait for a delete
        self.pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="sqs")
        self.pending: set[Future[None]] = set()
        self.lock = threading.Lock()
        self.deleting = 0  # delete requests under way
        self.unlocked = False  # a delete landed since the last receive was planned
        self.outage = Outage()  # receives: one log line per problem, capped backoff
        self.fatal: Fatal | None = None  # the queue's role could not be assumed
        self.receive_after = 0.0

    def receive(self, now: float) -> None:
        """Start the receives the flow wants now."""
        if now < self.receive_after:
            return  # SQS failed just now: back off
        another = False
        if self.fifo:
            # SQS keeps a group locked until its messages are deleted: a receive made
            # before the deletes land may not see the group's next messages, so wait for
            # them, and once they landed one more receive may start beside a poll that
            # began before.
            if self.deleting:
                return
            another, self.unlocked = self.unlocked, False
        while (ask := self.flow.plan_receive(another)) is not None:
            another = False
            self._submit(self._receive, ask)

    def send(self, io: Io) -> None:
        """Make the calls the flow asked for, 10 messages per request."""
        for chunk in _chunks([m.receipt for m in io.deletes]):
            self._submit(self._delete, chunk)
        self._set_visibility([m.receipt for m in io.returns], 0)
        by_delay: dict[int, list[str]] = {}
        for message, error, hide_for in io.retries:
            # A Backoff's retry_after, else the backoff on its receive count.
            delay = (policy.retry_visibility(message.receive_count) if hide_for is None
                     else min(MAX_HIDE_SECONDS, max(0, math.ceil(hide_for))))  # fmt: skip
            by_delay.setdefault(delay, []).append(message.receipt)
            _log_failure(message, delay, error)
        for delay, receipts in by_delay.items():
            self._set_visibility(receipts, delay)

    def extend(self, receipts: list[str]) -> None:
        self._set_visibility(receipts, self.visibility)

    def wait(self) -> None:
        """Until every call made so far has returned (receives under way included)."""
        while True:
            with self.lock:
                pending = list(self.pending)
            if not pending:
                return
            wait_all(pending)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    # --- on the I/O threads ---------------------------------------------------------------

    def _receive(self, ask: Ask) -> None:
        try:
            messages = self.sqs.receive(self.url, ask.count, RECEIVE_WAIT_SECONDS,
                                        self.visibility)  # fmt: skip
        except Exception as exc:  # Outage logs an outage once, and a bug with its traceback
            if isinstance(exc, RoleUnavailable):  # this queue's alone: the job fails
                self.fatal = self.fatal or Fatal(Reason.ROLE_UNAVAILABLE, str(exc))
            with self.lock:
                self.receive_after = time.monotonic() + self.outage.failed(exc)
            self.flow.receive_failed(ask)
            return
        with self.lock:
            self.outage.recovered()
        self.flow.add(ask, messages)

    def _delete(self, receipts: list[str]) -> None:
        with self.lock:
            self.deleting += 1
        try:
            refused = self.sqs.delete_batch(self.url, receipts)
        finally:
            with self.lock:
                self.deleting -= 1
            self.unlocked = True
            self.wake()
        if refused:
            log.warning("message.delete_refused", count=refused)  # they will come back

    def _set_visibility(self, receipts: list[str], seconds: int) -> None:
        for chunk in _chunks(receipts):
            self._submit(self._visibility, chunk, seconds)

    def _visibility(self, receipts: list[str], seconds: int) -> None:
        self.sqs.set_visibility(self.url, receipts, seconds)

    def _submit(self, call: Callable[..., None], *args: Any) -> None:
        # Run it with the caller's log bindings (role, pid, queue, job): a pool thread
        # starts with none, and its lines would not say whose they are.
        future = self.pool.submit(contextvars.copy_context().run, _quietly, call, *args)
        with self.lock:
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self.lock:
            self.pending.discard(future)


def _log_failure(message: Received, delay: int, error: str) -> None:
    """The message stays in SQS, hidden for a backoff on its receive count; SQS's
    redrive policy moves it to the DLQ after maxReceiveCount receives."""
    log.warning("message.failed", message_id=message.message_id,
                receive_count=message.receive_count, retry_in=delay, error=error)  # fmt: skip


def _quietly(call: Callable[..., None], *args: Any) -> None:
    """An SQS call whose failure must not end the run: the messages only come back."""
    try:
        call(*args)
    except OrchestratorError as exc:
        log.warning("sqs.call_failed", call=call.__name__, error=str(exc))
    except Exception:  # a bug: keep the traceback, keep the run
        log.exception("sqs.call_crashed", call=call.__name__)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]
