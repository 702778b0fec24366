"""What each role needs of MongoDB and SQS: the seams where a role meets its backends.

The daemon passes the real Store and Sqs; unit tests pass the in-memory ones of
orchestrator/backends/memory.py (dramatiq's stub broker, for this project).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, Self

from orchestrator.metrics import Meter
from orchestrator.models import (
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
)


class OutboxStore(Protocol):
    """Closing jobs (a worker's outbox)."""

    def flush_meter(self, meter: Meter) -> None: ...

    def job_ended(self, job_id: str, status: str, now: datetime, *, handled: int, failed: int,
                  reason: str, error: str | None = None,
                  processes: list[dict[str, Any]] | None = None,
                  pids: tuple[int, int] | None = None,
                  duplicates: int = 0) -> None: ...  # fmt: skip

    def release(self, job_id: str) -> None: ...


class WorkerStore(OutboxStore, Protocol):
    """What a worker reads and writes."""

    def deadline(self, seconds: float) -> AbstractContextManager[None]: ...

    def ensure_indexes(self) -> None: ...

    def register_worker(self, worker: WorkerRecord) -> None: ...

    def heartbeat(self, worker_id: str, now: datetime, consumers: Iterable[ConsumerStats],
                  status: str) -> bool: ...  # fmt: skip

    def delete_worker(self, worker_id: str) -> None: ...

    def assignments(self, worker: str | None = None) -> list[Assignment]: ...

    def release_worker(self, worker: str, now: datetime, reason: str) -> list[Assignment]: ...

    def queues_by_id(self, ids: Iterable[str]) -> dict[str, QueueRecord]: ...

    def job_started(self, job_id: str, worker_pid: int, consumer_pid: int,
                    now: datetime) -> None: ...  # fmt: skip

    def job_progress(self, job_id: str, handled: int, failed: int, now: datetime, *,
                     effective: int | None = None, running: int | None = None,
                     oldest_age: float | None = None) -> None: ...

    def record_failures(self, failures: Sequence[FailureNote]) -> None: ...


class SyncStore(Protocol):
    """Queue documents, for the DB → SQS sync."""

    def list_queues(self) -> list[QueueRecord]: ...

    def mark_synced(self, queue_id: str, queue_url: str, dlq_url: str | None) -> None: ...


class MasterStore(SyncStore, Protocol):
    """What a master reads and writes."""

    def queue_stamps_since(self, since: datetime) -> dict[str, datetime]: ...

    def queue_pages_by_id(self, after: str | None, size: int) -> Iterator[list[QueueRecord]]: ...

    def queues_by_id(self, ids: Iterable[str]) -> dict[str, QueueRecord]: ...

    def save_depths(self, found: dict[str, tuple[QueueDepth, datetime]]) -> None: ...

    def save_waiting(self, since: dict[str, datetime | None]) -> None: ...

    def save_fleet_need(self, need: FleetNeed, now: datetime) -> None: ...

    def add_series(self, now: datetime, counts: dict[str, tuple[int, int]] | None = None,
                   depths: dict[str, int] | None = None,
                   loads: dict[str, int] | None = None) -> None: ...

    def ensure_indexes(self) -> None: ...

    def ping(self) -> None: ...

    def flush_meter(self, meter: Meter) -> None: ...

    def renew_lease(self, holder: str, expires: datetime) -> bool: ...

    def create_lease(self, holder: str, expires: datetime) -> bool: ...

    def take_lease(self, holder: str, was_holder: str, was_version: int | None,
                   expires: datetime) -> bool: ...  # fmt: skip

    def drop_lease(self, holder: str) -> None: ...

    def lease(self) -> Lease | None: ...

    def workers(self) -> list[WorkerRecord]: ...

    def delete_worker(self, worker_id: str) -> None: ...

    def release_worker(self, worker: str, now: datetime, reason: str) -> list[Assignment]: ...

    def assignments(self, worker: str | None = None) -> list[Assignment]: ...

    def assign(self, queue: QueueRecord, worker: str, now: datetime, shard: int = 0,
               share: Share | None = None) -> str | None: ...

    def set_share(self, job_id: str, share: Share | None) -> None: ...

    def request_yield(self, job_id: str, now: datetime) -> None: ...

    def jobs_by_id(self, job_ids: Iterable[str]) -> dict[str, JobRecord]: ...

    def job(self, job_id: str) -> JobRecord | None: ...

    def orphaned_jobs(self, stale_before: datetime) -> list[str]: ...

    def interrupt_jobs(self, job_ids: Iterable[str], now: datetime, reason: str) -> int: ...


class SyncSqs(Protocol):
    """SQS queues, for the DB → SQS sync."""

    def of(self, queue: QueueRecord) -> Self:
        """The client for this queue's region and role."""
        ...

    def list_queue_urls(self, page_size: int = 1000) -> list[str]: ...

    def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: int,
        dlq_name: str | None = None,
        max_receive_count: int | None = None,
    ) -> tuple[str, str | None]: ...


class MasterSqs(SyncSqs, Protocol):
    """What a master asks SQS."""

    def depth(self, url: str) -> QueueDepth: ...


class ConsumerSqs(Protocol):
    """What a consumer asks SQS for one assignment."""

    def receive(self, url: str, max_messages: int, wait_seconds: int,
                visibility_timeout: int | None = None) -> list[SqsMessage]: ...  # fmt: skip

    def delete_batch(self, url: str, receipts: list[str]) -> int: ...

    def set_visibility(self, url: str, receipts: list[str], seconds: int) -> int: ...
