"""Runner: one assignment inside a consumer — receive → handle → delete.

Three kinds of thread share the work:
- the receiver long-polls SQS, asking for no more messages than there are free
  slots (`concurrency` minus handlers running), and hands each to the pool;
- pool threads run the handler, and only report the outcome;
- the calling thread owns everything else: deleting succeeded messages in
  batches, hiding failed ones for a backoff, extending the visibility of long
  handlers, applying control messages (new concurrency, pause, stop) and
  deciding when the assignment ends.
A message is deleted only after its handler returned: at-least-once delivery.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from orchestrator import policy
from orchestrator.errors import OrchestratorError
from orchestrator.handlers import Handler
from orchestrator.loop import Outage
from orchestrator.message import Message
from orchestrator.metrics import Meter
from orchestrator.sqs import BATCH, Sqs

RECEIVE_WAIT_SECONDS = 1  # short enough to notice pause/stop and drain quickly
DELETE_FLUSH_SECONDS = 0.05  # a partial delete batch waits at most this long
BATCH_WAIT_SECONDS = 0.01  # a partial receive waits at most this long for more free slots
PROGRESS_SECONDS = 1.0
EXTEND_FRACTION = 0.5  # extend a message's visibility once half of it has passed

log = structlog.get_logger()


@dataclass(frozen=True)
class Outcome:
    handled: int
    failed: int
    reason: str  # drained | max_time | paused | shutdown | released | aborted
    abandoned: int = 0  # handlers still running when the run gave up waiting for them


@dataclass
class _InFlight:
    raw: dict[str, Any]
    extend_at: float


class Runner:
    """Runs one assignment until the queue drains, time is up, or it is told to stop."""

    def __init__(
        self,
        sqs: Sqs,
        job: dict[str, Any],
        handler: Handler,
        *,
        drain_empty_polls: int,
        max_seconds: float,
        grace: float,
        max_concurrency: int,
        control: Callable[[], list[dict[str, Any]]],
        progress: Callable[[int, int], None],
        meter: Meter,
    ) -> None:
        self.sqs = sqs
        self.url: str = job["queueUrl"]
        self.name: str = job["queueName"]
        self.visibility: int = int(job.get("visibilityTimeout") or 30)
        self.handler = handler
        self.drain_empty_polls = drain_empty_polls
        self.deadline = time.monotonic() + max_seconds
        self.grace = grace
        self.stopped_at: float | None = None
        self.control = control
        self.progress = progress
        self.meter = meter
        self.limit = int(job["concurrency"])
        self.paused = bool(job.get("paused"))
        self.reason: str | None = "paused" if self.paused else None
        self.handled = self.failed = 0
        self.in_flight: dict[str, _InFlight] = {}  # by receipt handle: unique per receive
        # (message, the handler's error or None, how long it ran)
        self.done: queue.Queue[tuple[_InFlight, BaseException | None, float]] = queue.Queue()
        self.cond = threading.Condition()
        self.stop_receiving = threading.Event()
        self.pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="handler")
        self.to_delete: list[str] = []
        self.delete_since = 0.0

    # --- the calling thread --------------------------------------------------

    def run(self) -> Outcome:
        if self.reason:
            return Outcome(0, 0, self.reason)
        receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        receiver.start()
        last_progress = time.monotonic()
        while True:
            if self._apply_control():
                return self._give_up("aborted")
            now = time.monotonic()
            if now >= self.deadline:
                self._finish("max_time")  # yield to queues waiting for capacity
            self._collect(timeout=DELETE_FLUSH_SECONDS)
            self._extend_long_handlers()
            receiver_done = not receiver.is_alive()  # before `idle`: it may still add work
            with self.cond:
                idle = not self.in_flight
            if self.to_delete and (
                len(self.to_delete) >= BATCH
                or idle
                or now - self.delete_since >= DELETE_FLUSH_SECONDS
            ):
                self._flush_deletes()
            if now - last_progress >= PROGRESS_SECONDS:
                self.progress(self.handled, self.failed)
                last_progress = now
            if self.stop_receiving.is_set() and receiver_done:
                if idle:
                    self._collect(timeout=0)  # outcomes put just before the slot was freed
                    self._flush_deletes()
                    break
                if self.stopped_at is not None and now - self.stopped_at > self.grace:
                    return self._give_up(self.reason or "shutdown")
        self.pool.shutdown(wait=True)
        return Outcome(self.handled, self.failed, self.reason or "drained")

    def _give_up(self, reason: str) -> Outcome:
        """Stop waiting for running handlers: hand their messages back to SQS at once.

        Their threads cannot be stopped, so the consumer process must exit after this;
        a handler that still finishes is not deleted (it may run twice, never zero times).
        """
        self._finish(reason)
        self._collect(timeout=0)
        self._flush_deletes()
        with self.cond:
            stuck = [e.raw["ReceiptHandle"] for e in self.in_flight.values()]
            self.in_flight.clear()
        self._set_visibility(stuck, 0)  # visible again at once
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.warning("runner.gave_up", reason=reason, abandoned=len(stuck))
        return Outcome(self.handled, self.failed, reason, abandoned=len(stuck))

    def _finish(self, reason: str) -> None:
        """Stop receiving; running handlers finish, and the first reason given sticks."""
        with self.cond:
            if self.reason is None:
                self.reason = reason
            if self.stopped_at is None:
                self.stopped_at = time.monotonic()
            self.stop_receiving.set()
            self.cond.notify_all()

    def _apply_control(self) -> bool:
        """Apply control messages; True when told to abort at once."""
        for op in self.control():
            kind = op.get("op")
            if kind == "settings":
                with self.cond:
                    self.limit = int(op["concurrency"])
                    self.cond.notify_all()
                if op.get("paused"):
                    self._finish("paused")
            elif kind == "stop":
                self._finish(op.get("reason", "shutdown"))
            elif kind == "abort":
                return True
        return False

    def _collect(self, timeout: float) -> None:
        """Take the outcomes of finished handlers: queue deletes, hide failures."""
        try:
            first = self.done.get(timeout=timeout) if timeout else self.done.get_nowait()
        except queue.Empty:
            return
        outcomes = [first]
        while True:
            try:
                outcomes.append(self.done.get_nowait())
            except queue.Empty:
                break
        for entry, error, seconds in outcomes:
            # Counted where the job's counts are, so that the two always agree.
            self.meter.message(self.name, seconds, ok=error is None)
            if error is None:
                self.handled += 1
                if not self.to_delete:
                    self.delete_since = time.monotonic()
                self.to_delete.append(entry.raw["ReceiptHandle"])
            else:
                self.failed += 1
                self._retry_later(entry, error)

    def _retry_later(self, entry: _InFlight, error: BaseException) -> None:
        """Leave the message in SQS, hidden for a backoff on its receive count; SQS's
        redrive policy moves it to the DLQ after maxReceiveCount receives."""
        count = int(entry.raw.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        delay = policy.retry_visibility(count)
        log.warning(
            "message.failed",
            message_id=entry.raw["MessageId"],
            receive_count=count,
            retry_in=delay,
            error=f"{type(error).__name__}: {error}",
        )
        self._set_visibility([entry.raw["ReceiptHandle"]], delay)

    def _flush_deletes(self) -> None:
        while self.to_delete:
            batch, self.to_delete = self.to_delete[:BATCH], self.to_delete[BATCH:]
            refused = self._sqs_quietly(self.sqs.delete_batch, self.url, batch)
            if refused:
                log.warning("message.delete_refused", count=refused)  # they will come back

    def _extend_long_handlers(self) -> None:
        now = time.monotonic()
        with self.cond:
            due = [e for e in self.in_flight.values() if e.extend_at <= now]
        for entry in due:
            entry.extend_at = now + self.visibility * EXTEND_FRACTION
        self._set_visibility([e.raw["ReceiptHandle"] for e in due], self.visibility)

    def _set_visibility(self, receipts: list[str], seconds: int) -> None:
        """Set the visibility of any number of received messages, 10 per request."""
        for start in range(0, len(receipts), BATCH):
            batch = receipts[start : start + BATCH]
            self._sqs_quietly(self.sqs.set_visibility, self.url, batch, seconds)

    def _sqs_quietly(self, call: Callable[..., int], *args: Any) -> int:
        """An SQS call whose failure must not end the run: the message only comes back."""
        try:
            return call(*args)
        except OrchestratorError as exc:
            log.warning("sqs.call_failed", call=call.__name__, error=str(exc))
            return 0

    # --- the receiver thread ---------------------------------------------------

    def _receive_loop(self) -> None:
        empty_polls = 0
        outage = Outage()  # one log line per problem, capped backoff
        while not self.stop_receiving.is_set():
            with self.cond:
                free = self._wait_for_slots()
                idle_before = not self.in_flight
            if self.stop_receiving.is_set():
                return
            try:
                messages = self.sqs.receive(self.url, min(free, BATCH), RECEIVE_WAIT_SECONDS)
            except OrchestratorError as exc:
                self.stop_receiving.wait(outage.failed(exc))
                continue
            outage.recovered()
            if self.stop_receiving.is_set():
                # Stopped while polling: give these back at once rather than run them late.
                self._set_visibility([m["ReceiptHandle"] for m in messages], 0)
                return
            if not messages:
                with self.cond:
                    empty_polls = empty_polls + 1 if idle_before and not self.in_flight else 0
                    drained = policy.is_drained(
                        empty_polls, len(self.in_flight), self.drain_empty_polls
                    )
                if drained:
                    self._finish("drained")
                continue
            empty_polls = 0
            self._start(messages)

    def _wait_for_slots(self) -> int:
        """Free slots to receive into (called holding the lock).

        Waits for a slot; then, while handlers are still finishing, up to
        BATCH_WAIT_SECONDS more for a full batch: receiving 1 message at a time as
        slots free up one by one would cost a request per message.
        """
        full = min(self.limit, BATCH)
        batch_deadline: float | None = None
        while not self.stop_receiving.is_set():
            free = self.limit - len(self.in_flight)
            if free >= full or (free > 0 and not self.in_flight):
                return free
            if free <= 0:
                self.cond.wait(0.5)
                continue
            batch_deadline = batch_deadline or time.monotonic() + BATCH_WAIT_SECONDS
            remaining = batch_deadline - time.monotonic()
            if remaining <= 0:
                return free
            self.cond.wait(remaining)
        return 0

    def _start(self, messages: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        with self.cond:
            for raw in messages:
                extend_at = now + self.visibility * EXTEND_FRACTION
                self.in_flight[raw["ReceiptHandle"]] = _InFlight(raw, extend_at)
        for raw in messages:
            # Handlers see the consumer's bound log context (queue, job id).
            context = contextvars.copy_context()
            self.pool.submit(context.run, self._handle, raw)

    # --- pool threads ------------------------------------------------------------

    def _handle(self, raw: dict[str, Any]) -> None:
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            self.handler(Message.from_sqs(raw, self.name, self.url))
        except BaseException as exc:  # the handler's failure is the message's, not ours
            error = exc
        seconds = time.perf_counter() - started
        with self.cond:
            entry = self.in_flight.get(raw["ReceiptHandle"])
            if entry is None:
                return  # the run gave up on it and handed it back: never delete it
            # Outcome first, then the slot: once nothing is in flight, every outcome is
            # in `done`. Freeing the slot here, not when the main thread collects, keeps
            # receiving going while the main thread waits on a delete.
            self.done.put((entry, error, seconds))
            del self.in_flight[raw["ReceiptHandle"]]
            self.cond.notify_all()
