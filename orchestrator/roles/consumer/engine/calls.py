"""Calls: the SQS requests of one assignment, decided and launched by one thread.

The runner's thread alone plans receives, sends deletes and visibility changes (10
messages per request) and applies what came back (`collect`): the I/O threads only
make the request and post its outcome, then wake the runner. So this state has one
owner and needs no lock. An SQS failure never ends the run: the messages only come back.
"""

from __future__ import annotations

import contextvars
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from orchestrator import policy
from orchestrator.backends.protocols import ConsumerSqs
from orchestrator.backends.sqs import BATCH
from orchestrator.errors import OrchestratorError, RoleUnavailable
from orchestrator.models import SqsMessage
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
T = TypeVar("T")


class Calls:
    """The SQS side of one assignment's run. Every method but the I/O threads' is the
    runner thread's alone."""

    def __init__(
        self, sqs: ConsumerSqs, spec: JobSpec, flow: Flow, wake: Callable[[], None]
    ) -> None:
        self.sqs = sqs
        self.url = spec.queue_url
        self.fifo = spec.fifo
        self.visibility = spec.visibility_timeout
        self.flow = flow
        self.wake = wake  # the runner's: an outcome waits to be collected
        self.pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="sqs")
        self.pending: dict[int, Future[None]] = {}  # requests not yet collected, by key
        self.keys = itertools.count()
        self.outcomes: deque[_Outcome] = deque()  # posted by the I/O threads
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
            self.deleting += 1
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

    def collect(self, now: float) -> None:
        """Apply what the requests that returned since the last look brought back."""
        while self.outcomes:
            outcome = self.outcomes.popleft()
            del self.pending[outcome.key]
            if isinstance(outcome, _Received):
                self._received(outcome, now)
            elif isinstance(outcome, _Deleted):
                self.deleting -= 1
                self.unlocked = True

    def wait(self) -> None:
        """Until every request made so far has returned: its outcome waits for `collect`."""
        wait_all(list(self.pending.values()))

    def settle(self, now: float) -> None:
        """Until every request made so far has returned and what it brought back was
        applied and answered (a receive that lands after a stop hands its messages back)."""
        while self.pending:
            self.wait()  # each request posts its outcome, then returns
            self.collect(now)
            self.send(self.flow.take_io(now, everything=True))

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _received(self, outcome: _Received, now: float) -> None:
        if outcome.error is None:
            self.outage.recovered()
            self.flow.add(outcome.ask, outcome.messages)
            return
        if isinstance(outcome.error, RoleUnavailable):  # this queue's alone: the job fails
            self.fatal = self.fatal or Fatal(Reason.ROLE_UNAVAILABLE, str(outcome.error))
        self.receive_after = now + self.outage.failed(outcome.error)
        self.flow.receive_failed(outcome.ask)

    # --- on the I/O threads: the request, then its outcome posted --------------------------

    def _receive(self, key: int, ask: Ask) -> None:
        try:
            messages = self.sqs.receive(self.url, ask.count, RECEIVE_WAIT_SECONDS,
                                        self.visibility)  # fmt: skip
        except Exception as exc:  # Outage logs an outage once, and a bug with its traceback
            self._post(_Received(key, ask, [], exc))
        else:
            self._post(_Received(key, ask, messages, None))

    def _delete(self, key: int, receipts: list[str]) -> None:
        refused = _quietly(self.sqs.delete_batch, self.url, receipts)
        self._post(_Deleted(key))
        if refused:
            log.warning("message.delete_refused", count=refused)  # they will come back

    def _set_visibility(self, receipts: list[str], seconds: int) -> None:
        for chunk in _chunks(receipts):
            self._submit(self._visibility, chunk, seconds)

    def _visibility(self, key: int, receipts: list[str], seconds: int) -> None:
        _quietly(self.sqs.set_visibility, self.url, receipts, seconds)
        self._post(_Outcome(key))

    def _post(self, outcome: _Outcome) -> None:
        self.outcomes.append(outcome)  # deque.append is atomic: no lock
        self.wake()

    def _submit(self, call: Callable[..., None], *args: Any) -> None:
        # Run it with the caller's log bindings (role, pid, queue, job): a pool thread
        # starts with none, and its lines would not say whose they are. The outcome is
        # collected on this thread, so the key is in `pending` before it can be.
        key = next(self.keys)
        self.pending[key] = self.pool.submit(contextvars.copy_context().run, call, key, *args)


@dataclass(frozen=True)
class _Outcome:
    """A request returned: `key` is the one it was submitted with."""

    key: int


@dataclass(frozen=True)
class _Received(_Outcome):
    ask: Ask
    messages: list[SqsMessage]
    error: Exception | None


@dataclass(frozen=True)
class _Deleted(_Outcome):
    pass


def _log_failure(message: Received, delay: int, error: str) -> None:
    """The message stays in SQS, hidden for a backoff on its receive count; SQS's
    redrive policy moves it to the DLQ after maxReceiveCount receives."""
    log.warning("message.failed", message_id=message.message_id,
                receive_count=message.receive_count, retry_in=delay, error=error)  # fmt: skip


def _quietly(call: Callable[..., T], *args: Any) -> T | None:
    """An SQS call whose failure must not end the run: the messages only come back."""
    try:
        return call(*args)
    except OrchestratorError as exc:
        log.warning("sqs.call_failed", call=call.__name__, error=str(exc))
    except Exception:  # a bug: keep the traceback, keep the run
        log.exception("sqs.call_crashed", call=call.__name__)
    return None


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]
