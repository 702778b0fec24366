"""Sender, the body of orchestrator.Producer: send messages to the product's queues by
name, and wake the fleet (docs/design.md §5, "Producing").

A queue is found by name in MongoDB (its URL, region and role; kept QUEUE_TTL seconds),
its messages go in batches sized by count and bytes (backends/batches.py), each with a
`traceparent` when asked, and the send rings the queue's doorbell (at most once every
DOORBELL_SECONDS per queue and producer): the leading master looks at the queue in its
next cycle, whatever its idle schedule (§3). Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator import tracing, validate
from orchestrator.backends.batches import message_size, sized_batches
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.errors import InvalidValue, QueueTypeMismatch
from orchestrator.models import QueueRecord, utcnow

QUEUE_TTL = 60.0  # seconds a queue's URL, region and role are used before reading again
DOORBELL_SECONDS = 1.0  # a producer rings one queue's doorbell at most this often
MAX_DELAY = 900  # SQS's longest DelaySeconds
MAX_BODIES = 10_000  # one send_batch call


class Sender:
    """Sends to the product's queues by name (`send`, `send_batch`): what
    orchestrator.Producer is, given its clients."""

    def __init__(self, store: Store, sqs: Sqs, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.store, self.sqs, self.clock = store, sqs, clock
        self._lock = threading.Lock()
        self._queues: dict[str, tuple[QueueRecord, float]] = {}  # name → (record, read at)
        self._rung: dict[str, float] = {}  # queue id → when this producer last rang it

    def send(self, queue: str, body: str, *, group: str | None = None,
             dedup_id: str | None = None, delay: int = 0,
             attributes: Mapping[str, Mapping[str, Any]] | None = None,
             trace: bool = True) -> str:  # fmt: skip
        """Send one message; its SQS message id. `group`: its MessageGroupId (on a FIFO
        queue its order group, default "default"; on a standard queue its tenant, for
        SQS's fair queues); `dedup_id`: FIFO queues only; `delay`: 0-900 s before it is
        visible (standard queues only); `attributes`: SQS message attributes; `trace`: add a W3C
        `traceparent` (the current span's when tracing is set up)."""
        return self._send(queue, [body], group, [dedup_id], delay, dict(attributes or {}),
                          trace)[0]  # fmt: skip

    def send_batch(self, queue: str, bodies: Sequence[str], *, group: str | None = None,
                   delay: int = 0, trace: bool = True) -> list[str]:  # fmt: skip
        """Send many messages in as few requests as SQS's limits allow; their ids, in order."""
        if not 1 <= len(bodies) <= MAX_BODIES:
            raise InvalidValue(f"{len(bodies)} bodies: send 1..{MAX_BODIES:,} at a time")
        return self._send(queue, list(bodies), group, None, delay, {}, trace)

    def _send(self, name: str, bodies: list[str], group: str | None,
              dedup_ids: list[str | None] | None, delay: int,
              attributes: dict[str, Any], trace: bool) -> list[str]:  # fmt: skip
        queue = self.queue(name)
        _check(queue, group, dedup_ids, delay)
        messages = []
        for body in bodies:
            extra = {**attributes, **(tracing.traceparent_attribute() if trace else {})}
            validate.message_body(body, validate.attributes_size(extra))
            messages.append((body, extra or None))
        sqs, ids, done = self.sqs.of(queue), [], 0
        for batch in sized_batches(messages, lambda m: message_size(m[0], m[1])):
            part = dedup_ids[done:done + len(batch)] if dedup_ids else None
            groups = [group] * len(batch) if group is not None else None
            ids += sqs.send_batch(queue.queue_url, [m[0] for m in batch], [m[1] for m in batch],
                                  groups, part, delay)  # fmt: skip
            done += len(batch)
        self._ring(queue)
        return ids

    def queue(self, name: str) -> QueueRecord:
        """The named queue (QueueNotFound if there is none), read at most every QUEUE_TTL."""
        now = self.clock()
        with self._lock:
            held = self._queues.get(name)
        if held is not None and now - held[1] < QUEUE_TTL:
            return held[0]
        record = self.store.get_queue(name)
        with self._lock:
            self._queues[name] = (record, now)
        return record

    def _ring(self, queue: QueueRecord) -> None:
        """Ring its doorbell, unless this producer did less than DOORBELL_SECONDS ago."""
        assert queue.id is not None
        now = self.clock()
        with self._lock:
            if now - self._rung.get(queue.id, float("-inf")) < DOORBELL_SECONDS:
                return
            self._rung[queue.id] = now
        self.store.ring_doorbell(queue.id, utcnow())

    def close(self) -> None:
        self.store.close()


def _check(queue: QueueRecord, group: str | None, dedup_ids: list[str | None] | None,
           delay: int) -> None:  # fmt: skip
    """What SQS would refuse, said before anything is sent."""
    if not 0 <= delay <= MAX_DELAY:
        raise InvalidValue(f"delay {delay} is out of range 0..{MAX_DELAY} seconds")
    if not queue.fifo and any(dedup_ids or ()):
        raise QueueTypeMismatch(f"queue {queue.name!r} is not a FIFO queue: a deduplication "
                                "id is for FIFO queues (names ending in .fifo)")  # fmt: skip
    if queue.fifo and delay:
        raise QueueTypeMismatch(f"queue {queue.name!r} is a FIFO queue: SQS takes no delay "
                                "per message on it (set the queue's own delay)")  # fmt: skip
    if group is not None:
        validate.group_id(group)
