"""In-memory MongoDB and SQS for unit tests of the roles (dramatiq's stub broker here).

They keep the documents and messages in dicts and lists, with the rules the
roles rely on: one assignment per queue URL, the lease taken by compare-and-swap,
open jobs closed once, SQS visibility timeouts on an injectable clock, FIFO
groups locked while a message of theirs is in flight, and a redrive policy.
`fail_with` makes every call raise, as an outage would. The daemon never uses
them; integration and process tests run against the real servers.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from orchestrator.backends.protocols import ConsumerSqs, MasterSqs, MasterStore, WorkerStore
from orchestrator.errors import OrchestratorError, QueueNotFound
from orchestrator.metrics import Meter
from orchestrator.models import (
    OPEN_JOB_STATES,
    Assignment,
    ConsumerStats,
    FailureNote,
    FleetNeed,
    JobRecord,
    Lease,
    QueueDepth,
    QueueRecord,
    Share,
    SqsMessage,
    WorkerRecord,
    utcnow,
)

_ids = itertools.count(1)


def _object_id() -> str:
    return f"{next(_ids):024x}"


class _Failing:
    """`fail_with`: while set, every call raises it."""

    fail_with: OrchestratorError | None = None

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with


class MemoryStore(_Failing):
    """The collections of docs/design.md §4, in memory."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueRecord] = {}  # by id
        self.assigned: dict[tuple[str, int], Assignment] = {}  # the unique {queueUrl, shard}
        self.worker_docs: dict[str, WorkerRecord] = {}
        self.job_docs: dict[str, JobRecord] = {}
        self.lease_doc: Lease | None = None
        self.counted = Meter()  # what flush_meter wrote
        self.depth_docs: dict[str, tuple[QueueDepth, datetime]] = {}
        self.waits: dict[str, datetime | None] = {}  # waitingSince beside a depth, by URL
        self.need: tuple[FleetNeed, datetime] | None = None
        self.failure_docs: list[FailureNote] = []
        self.series_points: list[tuple[datetime, dict[str, tuple[int, int]], dict[str, int],
                                       dict[str, int]]] = []

    # --- set-up and health ---------------------------------------------------------

    def ensure_indexes(self) -> None:
        self._check()

    def ping(self) -> None:
        self._check()

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        yield

    # --- queues ----------------------------------------------------------------------

    def insert_queue(self, queue: QueueRecord) -> QueueRecord:
        self._check()
        now = utcnow()
        record = replace(queue, id=queue.id or _object_id(), created_at=now, updated_at=now,
                         synced_at=now)  # fmt: skip
        assert record.id is not None
        self.queues[record.id] = record
        return record

    def update_queue(self, name: str, changes: dict[str, Any]) -> QueueRecord:
        """Changes by attribute name (paused=True), unlike the Store's document fields."""
        self._check()
        queue = next((q for q in self.queues.values() if q.name == name), None)
        if queue is None:
            raise QueueNotFound(name)
        assert queue.id is not None
        self.queues[queue.id] = replace(queue, **changes, updated_at=utcnow())
        return self.queues[queue.id]

    def ring_doorbell(self, queue_id: str, now: datetime) -> None:
        self._check()
        if queue_id in self.queues:
            self.queues[queue_id] = replace(self.queues[queue_id], doorbell_at=now, updated_at=now)

    def list_queues(self) -> list[QueueRecord]:
        self._check()
        return sorted(self.queues.values(), key=lambda q: q.name)

    def queue_stamps_since(self, since: datetime) -> dict[str, datetime]:
        self._check()
        return {i: q.updated_at for i, q in self.queues.items()
                if q.updated_at and q.updated_at >= since}

    def add_series(self, now: datetime, counts: dict[str, tuple[int, int]] | None = None,
                   depths: dict[str, int] | None = None,
                   loads: dict[str, int] | None = None) -> None:
        self._check()
        self.series_points.append((now, counts or {}, depths or {}, loads or {}))

    def queue_pages_by_id(self, after: str | None, size: int) -> Iterator[list[QueueRecord]]:
        while True:
            self._check()
            held = dict(self.queues)  # read on a scan's thread: a copy, as of now
            ids = sorted(i for i in held if after is None or i > after)[:size]
            if ids:
                yield [held[i] for i in ids]
            if len(ids) < size:
                return
            after = ids[-1]

    def save_depths(self, found: dict[str, tuple[QueueDepth, datetime]]) -> None:
        self._check()
        self.depth_docs.update(found)

    def save_waiting(self, since: dict[str, datetime | None]) -> None:
        self._check()
        self.waits.update({url: at for url, at in since.items() if url in self.depth_docs})

    def save_fleet_need(self, need: FleetNeed, now: datetime) -> None:
        self._check()
        self.need = (need, now)

    def queues_by_id(self, ids: Iterable[str]) -> dict[str, QueueRecord]:
        self._check()
        return {i: self.queues[i] for i in set(ids) if i in self.queues}

    def mark_synced(self, queue_id: str, queue_url: str, dlq_url: str | None) -> None:
        self._check()
        queue = self.queues[queue_id]
        self.queues[queue_id] = replace(queue, queue_url=queue_url, dlq_url=dlq_url,
                                        updated_at=utcnow())  # fmt: skip

    # --- assignments -------------------------------------------------------------------

    def assignments(self, worker: str | None = None) -> list[Assignment]:
        self._check()
        return [a for a in self.assigned.values() if worker is None or a.worker == worker]

    def assign(self, queue: QueueRecord, worker: str, now: datetime, shard: int = 0,
               share: Share | None = None) -> str | None:  # fmt: skip
        self._check()
        if (queue.queue_url, shard) in self.assigned:
            return None
        assert queue.id is not None
        job_id = _object_id()
        self.assigned[(queue.queue_url, shard)] = Assignment(
            queue.queue_url, queue.id, queue.name, worker, job_id, now, shard, share)
        self.job_docs[job_id] = JobRecord(job_id, queue.name, queue.queue_url, queue.id, "queued",
                                          0, 0, worker, None, None, now, None, None, now, None,
                                          None, shard=shard)  # fmt: skip
        return job_id

    def _by_job(self, job_id: str) -> tuple[str, int] | None:
        return next((k for k, a in self.assigned.items() if a.job_id == job_id), None)

    def set_share(self, job_id: str, share: Share | None) -> None:
        self._check()
        if (key := self._by_job(job_id)) is not None:
            self.assigned[key] = replace(self.assigned[key], share=share)

    def request_yield(self, job_id: str, now: datetime) -> None:
        self._check()
        if (key := self._by_job(job_id)) is not None:
            self.assigned[key] = replace(self.assigned[key], yield_requested=True)

    def release(self, job_id: str) -> None:
        self._check()
        if (key := self._by_job(job_id)) is not None:
            del self.assigned[key]

    def release_worker(self, worker: str, now: datetime, reason: str) -> list[Assignment]:
        held = self.assignments(worker)
        self.interrupt_jobs([a.job_id for a in held], now, reason)
        for a in held:
            del self.assigned[(a.queue_url, a.shard)]
        return held

    # --- workers -----------------------------------------------------------------------

    def register_worker(self, worker: WorkerRecord) -> None:
        self._check()
        self.worker_docs[worker.id] = worker

    def heartbeat(self, worker_id: str, now: datetime, consumers: Iterable[ConsumerStats],
                  status: str) -> bool:  # fmt: skip
        self._check()
        worker = self.worker_docs.get(worker_id)
        if worker is None:
            return False
        self.worker_docs[worker_id] = replace(worker, heartbeat_at=now, status=status,
                                              consumers=tuple(consumers))  # fmt: skip
        return True

    def workers(self) -> list[WorkerRecord]:
        self._check()
        return sorted(self.worker_docs.values(), key=lambda w: w.id)

    def delete_worker(self, worker_id: str) -> None:
        self._check()
        self.worker_docs.pop(worker_id, None)

    # --- jobs --------------------------------------------------------------------------

    def _update_open(self, job_id: str, **changes: Any) -> None:
        job = self.job_docs.get(job_id)
        if job is not None and job.status in OPEN_JOB_STATES:
            self.job_docs[job_id] = replace(job, **changes)

    def job_started(self, job_id: str, worker_pid: int, consumer_pid: int,
                    now: datetime) -> None:  # fmt: skip
        self._check()
        self._update_open(job_id, status="running", started_at=now, worker_pid=worker_pid,
                          consumer_pid=consumer_pid, last_modified=now)  # fmt: skip

    def job_progress(self, job_id: str, handled: int, failed: int, now: datetime, *,
                     effective: int | None = None, running: int | None = None,
                     oldest_age: float | None = None) -> None:  # fmt: skip
        self._check()
        self._update_open(job_id, message_count=handled, failed_count=failed, last_modified=now,
                          effective_concurrency=effective, running=running,
                          oldest_age_seconds=round(oldest_age or 0.0, 3))  # fmt: skip

    def record_failures(self, failures: Sequence[FailureNote]) -> None:
        self._check()
        self.failure_docs.extend(failures)

    def jobs_by_id(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        self._check()
        return {j: self.job_docs[j] for j in set(job_ids) if j in self.job_docs}

    def job_ended(self, job_id: str, status: str, now: datetime, *, handled: int, failed: int,
                  reason: str, error: str | None = None,
                  processes: list[dict[str, Any]] | None = None,
                  pids: tuple[int, int] | None = None, duplicates: int = 0) -> None:  # fmt: skip
        self._check()
        who = {"worker_pid": pids[0], "consumer_pid": pids[1]} if pids else {}
        self._update_open(job_id, status=status, message_count=handled, failed_count=failed,
                          ended_at=now, last_modified=now, end_reason=reason, error=error,
                          processes=tuple(processes or ()), duplicates=duplicates,
                          **who)  # fmt: skip

    def interrupt_jobs(self, job_ids: Iterable[str], now: datetime, reason: str) -> int:
        self._check()
        closed = 0
        for job_id in job_ids:
            job = self.job_docs.get(job_id)
            if job is not None and job.status in OPEN_JOB_STATES:
                self._update_open(job_id, status="interrupted", ended_at=now, last_modified=now,
                                  end_reason=reason)  # fmt: skip
                closed += 1
        return closed

    def job(self, job_id: str) -> JobRecord | None:
        self._check()
        return self.job_docs.get(job_id)

    def jobs(self, status: str | None = None, queue: str | None = None,
             limit: int = 20) -> list[JobRecord]:  # fmt: skip
        self._check()
        found = [j for j in self.job_docs.values()
                 if (status is None or j.status == status) and (queue is None
                                                                or j.queue_name == queue)]
        return sorted(found, key=lambda j: j.created_at, reverse=True)[:limit]

    def orphaned_jobs(self, stale_before: datetime) -> list[str]:
        self._check()
        assigned = {a.job_id for a in self.assigned.values()}
        return sorted(j.id for j in self.job_docs.values()
                      if j.status in OPEN_JOB_STATES and j.last_modified < stale_before
                      and j.id not in assigned)  # fmt: skip

    # --- lease and metrics ------------------------------------------------------------------

    def renew_lease(self, holder: str, expires: datetime) -> bool:
        self._check()
        lease = self.lease_doc
        if lease is None or lease.holder != holder:
            return False
        self.lease_doc = Lease(holder, (lease.version or 0) + 1, expires)
        return True

    def create_lease(self, holder: str, expires: datetime) -> bool:
        self._check()
        if self.lease_doc is not None:
            return False
        self.lease_doc = Lease(holder, 1, expires)
        return True

    def take_lease(self, holder: str, was_holder: str, was_version: int | None,
                   expires: datetime) -> bool:  # fmt: skip
        self._check()
        lease = self.lease_doc
        if lease is None or (lease.holder, lease.version) != (was_holder, was_version):
            return False
        self.lease_doc = Lease(holder, (was_version or 0) + 1, expires)
        return True

    def drop_lease(self, holder: str) -> None:
        self._check()
        if self.lease_doc is not None and self.lease_doc.holder == holder:
            self.lease_doc = None

    def lease(self) -> Lease | None:
        self._check()
        return self.lease_doc

    def flush_meter(self, meter: Meter) -> None:
        self._check()
        self.counted.merge(meter.take())


@dataclass
class _Message:
    id: str
    body: str
    group: str
    seq: int
    attributes: dict[str, Any] | None = None
    visible_at: float = 0.0
    receive_count: int = 0
    receipt: str = ""


@dataclass
class _Queue:
    name: str
    visibility: int
    dlq_url: str | None = None
    max_receive_count: int | None = None
    messages: list[_Message] = field(default_factory=list)

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


class MemorySqs(_Failing):
    """SQS queues in memory, thread-safe; time from `clock` (monotonic seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.queues: dict[str, _Queue] = {}
        self.seq = itertools.count()
        self.requests: dict[str, int] = {}  # operation → calls, as SQS would bill them

    def of(self, queue: QueueRecord) -> MemorySqs:
        return self  # one region, one account

    def _queue(self, url: str, operation: str) -> _Queue:
        self._check()
        self.requests[operation] = self.requests.get(operation, 0) + 1
        queue = self.queues.get(url)
        if queue is None:
            raise QueueNotFound(url.rsplit("/", 1)[-1], "SQS")
        return queue

    def create_queue(self, name: str, *, visibility_timeout: int, dlq_name: str | None = None,
                     max_receive_count: int | None = None) -> tuple[str, str | None]:  # fmt: skip
        self._check()
        with self.lock:
            dlq_url = None
            if dlq_name:
                dlq_url = f"memory://sqs/{dlq_name}"
                self.queues.setdefault(dlq_url, _Queue(dlq_name, visibility_timeout))
            url = f"memory://sqs/{name}"
            self.queues.setdefault(url, _Queue(name, visibility_timeout, dlq_url,
                                               max_receive_count or (5 if dlq_url else None)))
            return url, dlq_url

    def list_queue_urls(self, page_size: int = 1000) -> list[str]:
        self._check()
        return sorted(self.queues)

    def delete_queue(self, url: str) -> None:
        with self.lock:
            self._queue(url, "DeleteQueue")
            del self.queues[url]

    def purge(self, url: str) -> None:
        with self.lock:
            self._queue(url, "PurgeQueue").messages.clear()

    def send_batch(self, url: str, bodies: list[str], attributes: list[Any] | None = None,
                   group_ids: list[str] | None = None) -> None:  # fmt: skip
        with self.lock:
            queue = self._queue(url, "SendMessageBatch")
            for i, body in enumerate(bodies):
                group = (group_ids[i] if group_ids else "default") if queue.fifo else ""
                queue.messages.append(_Message(uuid.uuid4().hex, body, group, next(self.seq),
                                               attributes[i] if attributes else None))

    def depth(self, url: str) -> QueueDepth:
        with self.lock:
            queue, now = self._queue(url, "GetQueueAttributes"), self.clock()
            visible = sum(1 for m in queue.messages if m.visible_at <= now)
            return QueueDepth(visible, len(queue.messages) - visible, 0)

    def receive(self, url: str, max_messages: int, wait_seconds: int,
                visibility_timeout: int | None = None) -> list[SqsMessage]:  # fmt: skip
        """What is visible now (no waiting: an empty queue answers at once)."""
        with self.lock:
            queue, now = self._queue(url, "ReceiveMessage"), self.clock()
            hidden = visibility_timeout if visibility_timeout is not None else queue.visibility
            busy = {m.group for m in queue.messages if m.visible_at > now and queue.fifo}
            out: list[SqsMessage] = []
            for message in sorted(queue.messages, key=lambda m: m.seq):
                if len(out) >= max_messages:
                    break
                if message.visible_at > now or message.group in busy:
                    continue
                if queue.max_receive_count and message.receive_count >= queue.max_receive_count:
                    self._dead_letter(queue, message)
                    continue
                message.receive_count += 1
                message.receipt = uuid.uuid4().hex
                message.visible_at = now + hidden
                out.append(self._received(message))
            return out

    def _dead_letter(self, queue: _Queue, message: _Message) -> None:
        queue.messages.remove(message)
        if queue.dlq_url in self.queues:
            self.queues[queue.dlq_url].messages.append(replace(message, receive_count=0,
                                                               visible_at=0.0))  # fmt: skip

    @staticmethod
    def _received(m: _Message) -> SqsMessage:
        attributes = {"ApproximateReceiveCount": str(m.receive_count)}
        if m.group:
            attributes["MessageGroupId"] = m.group
        return SqsMessage(m.id, m.receipt, m.body, attributes, dict(m.attributes or {}))

    def delete_batch(self, url: str, receipts: list[str]) -> int:
        with self.lock:
            queue = self._queue(url, "DeleteMessageBatch")
            gone = [m for m in queue.messages if m.receipt in set(receipts)]
            for message in gone:
                queue.messages.remove(message)
            return len(receipts) - len(gone)

    def set_visibility(self, url: str, receipts: list[str], seconds: int) -> int:
        with self.lock:
            queue, now = self._queue(url, "ChangeMessageVisibilityBatch"), self.clock()
            found = [m for m in queue.messages if m.receipt in set(receipts)]
            for message in found:
                message.visible_at = now + seconds
            return len(receipts) - len(found)

    def bodies(self, url: str) -> list[str]:
        """Every message still in the queue, visible or not (for assertions)."""
        with self.lock:
            return [m.body for m in sorted(self.queues[url].messages, key=lambda m: m.seq)]


def _conforms(store: MemoryStore, sqs: MemorySqs) -> tuple[MasterStore, WorkerStore, MasterSqs,
                                                           ConsumerSqs]:  # fmt: skip
    """Checked by mypy: the stand-ins fit every seam the roles have."""
    return store, store, sqs, sqs


__all__ = ["MemorySqs", "MemoryStore"]
