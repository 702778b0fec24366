"""Outbox: job outcomes waiting to be written to MongoDB.

A worker closes a job through its outbox, so that a MongoDB outage delays the
write (the queue stays assigned meanwhile, so nobody else runs it) instead of
losing it. The counts of the job's messages are written first: a job seen
closed is always in the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from orchestrator.backends.protocols import OutboxStore
from orchestrator.errors import ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import Assignment, utcnow
from orchestrator.roles.process.protocol import Done, Reason

log = structlog.get_logger()

@dataclass(frozen=True)
class JobEnd:
    """A job outcome waiting to be written: the job first, then its assignment released."""

    job: Assignment
    reason: Reason
    handled: int
    failed: int
    error: str | None = None
    processes: tuple[dict[str, Any], ...] = ()  # its handler processes' counts
    pids: tuple[int, int] | None = None  # the worker's and the consumer's, when known
    duplicates: int = 0  # copies its consumer received again while it still had them

    @property
    def status(self) -> str:
        return self.reason.status

    @classmethod
    def reported(cls, job: Assignment, done: Done, pids: tuple[int, int]) -> JobEnd:
        """The outcome a consumer's `Done` report gives. A job that gave up on handlers
        that never returned failed, whatever ended it: their messages were not handled."""
        if done.abandoned:
            error = (
                f"{done.abandoned} handler(s) had not returned within SHUTDOWN_GRACE when "
                f"the job ended ({done.reason}); the consumer abandoned them and exited, "
                "and their messages come back after the visibility timeout"
            )
            return cls(job, Reason.ABANDONED, done.handled, done.failed, error, done.processes,
                       pids, done.duplicates)
        return cls(job, done.reason, done.handled, done.failed, done.error, done.processes, pids,
                   done.duplicates)


class Outbox:
    """Outcomes in the order they happened, and the meter whose counts go first."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.pending: list[JobEnd] = []

    def job_ids(self) -> set[str]:
        return {end.job.job_id for end in self.pending}

    def add(self, end: JobEnd, store: OutboxStore | None) -> None:
        """Queue an outcome, and write it at once through `store` when one is given."""
        self.pending.append(end)
        if store is None:
            return
        try:
            self.flush(store)
        except ServiceUnavailable:
            pass  # retried by the worker's "outbox" step, which logs the outage
        except Exception:  # a bug: keep the traceback; the "outbox" step retries too
            log.exception("outbox.flush_failed", job_id=end.job.job_id)

    def flush_metrics(self, store: OutboxStore) -> None:
        store.flush_meter(self.meter)

    def flush(self, store: OutboxStore) -> None:
        """Write waiting outcomes: metrics, then the job, then the assignment (the queue
        becomes assignable again only once its job is closed)."""
        if self.pending:
            self.flush_metrics(store)
        while self.pending:
            end = self.pending[0]
            store.job_ended(end.job.job_id, end.status, utcnow(), handled=end.handled,
                            failed=end.failed, reason=end.reason.value, error=end.error,
                            processes=list(end.processes), pids=end.pids,
                            duplicates=end.duplicates)  # fmt: skip
            store.release(end.job.job_id)
            self.pending.pop(0)
            log_event = log.info if end.status == "completed" else log.warning
            log_event(f"job.{end.status}", queue=end.job.queue_name, job_id=end.job.job_id,
                      handled=end.handled, failed=end.failed, reason=end.reason.value,
                      error=end.error)  # fmt: skip
