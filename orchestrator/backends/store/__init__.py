"""Store: every MongoDB query of the project, one facade over a part per collection.

The package is the only importer of pymongo. Each part (queues.py, jobs.py, …)
owns the queries of its collection; the facade adds the indexes and the operations
that write to several collections in a safe order.
"""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from orchestrator.backends.store.assignments import AssignmentDocs
from orchestrator.backends.store.base import (
    ASSIGNMENTS,
    DAEMON_TIMEOUT_MS,
    DEPTHS,
    FAILURES,
    INDEX_OPTIONS_CONFLICT,
    JOBS,
    LOCK_LEFTOVER_SECONDS,
    LOCKS,
    METRICS,
    QUEUES,
    SERIES,
    WORKERS,
    translated,
)
from orchestrator.backends.store.depths import DepthDocs
from orchestrator.backends.store.failures import FailureDocs
from orchestrator.backends.store.jobs import JobDocs
from orchestrator.backends.store.leases import LeaseDocs
from orchestrator.backends.store.locks import LockDocs
from orchestrator.backends.store.metrics import MetricDocs
from orchestrator.backends.store.queues import QueueDocs
from orchestrator.backends.store.schema import SCHEMA_VERSION, SchemaDocs
from orchestrator.backends.store.series import SERIES_TTL_SECONDS, SeriesDocs
from orchestrator.backends.store.workers import WorkerDocs
from orchestrator.models import (
    OPEN_JOB_STATES,
    Assignment,
    QueueRecord,
    Share,
)

__all__ = ["DAEMON_TIMEOUT_MS", "INDEX_OPTIONS_CONFLICT", "SCHEMA_VERSION", "Store"]


class Store(QueueDocs, AssignmentDocs, WorkerDocs, JobDocs, LeaseDocs, LockDocs, MetricDocs,
            DepthDocs, FailureDocs, SeriesDocs, SchemaDocs):
    """Owns the MongoDB connection and every query against the collections of
    docs/design.md §4."""

    @translated
    def ensure_indexes(self) -> None:
        """Refuse a database of a newer schema (SchemaTooNew, before writing anything),
        create every index of docs/design.md §4 and record the schema version; safe to
        run from every process at every start."""
        found = self.check_schema()
        db = self._db
        db[QUEUES].create_index("name", unique=True)
        db[QUEUES].create_index("queueUrl", unique=True)
        db[QUEUES].create_index("updatedAt")  # a master reads only what changed
        # One assignment per shard of a queue (before shards: per queue).
        self._replace_index(ASSIGNMENTS, [("queueUrl", 1)], [("queueUrl", 1), ("shard", 1)])
        db[ASSIGNMENTS].create_index("worker")
        db[WORKERS].create_index("heartbeatAt")
        db[JOBS].create_index([("status", 1), ("createdAt", 1)])
        db[JOBS].create_index([("queueUrl", 1), ("status", 1)])
        db[JOBS].create_index([("queueName", 1), ("createdAt", 1)])  # jobs of one queue, newest
        self._ensure_ttl(JOBS, "lastModified", self.job_ttl_seconds)
        db[FAILURES].create_index([("queueName", 1), ("messageId", 1)])
        db[SERIES].create_index([("kind", 1), ("name", 1), ("minute", 1)])
        self._ensure_ttl(SERIES, "minute", SERIES_TTL_SECONDS)
        self._ensure_ttl(FAILURES, "at", self.job_ttl_seconds)
        # Locks are judged by their expiresAt; the index only clears a crashed holder's.
        self._ensure_ttl(LOCKS, "expiresAt", LOCK_LEFTOVER_SECONDS)
        self.record_schema(found)  # last: the number says the layout is complete

    @translated
    def delete_queue(self, name: str) -> bool:
        """Forget the queue, and its counters: /metrics must not report it for ever."""
        queue = self._db[QUEUES].find_one({"name": name}, {"queueUrl": 1})
        deleted = self._db[QUEUES].delete_one({"name": name}).deleted_count == 1
        self._db[METRICS].delete_one({"_id": f"queue:{name}"})
        if queue is not None:
            self._db[DEPTHS].delete_one({"_id": queue["queueUrl"]})
        return deleted

    @translated
    def assign(self, queue: QueueRecord, worker: str, now: datetime, shard: int = 0,
               share: Share | None = None) -> str | None:  # fmt: skip
        """Assign the queue (a shard of it) and record its job; None if another master
        assigned that shard first."""
        assert queue.id is not None
        job_id = ObjectId()
        doc = {
            "queueUrl": queue.queue_url,
            "shard": shard,
            "queueId": ObjectId(queue.id),
            "queueName": queue.name,
            "worker": worker,
            "jobId": job_id,
            "assignedAt": now,
            "share": share.to_doc() if share else None,
        }
        try:
            self._majority[ASSIGNMENTS].insert_one(doc)
        except DuplicateKeyError:
            return None  # the unique {queueUrl, shard} index: somebody else won it
        # The job too: an assignment naming a job that a failover undid would have its
        # progress and end written to nothing.
        self._majority[JOBS].insert_one(
            {
                "_id": job_id,
                "queueName": queue.name,
                "queueUrl": queue.queue_url,
                "queueId": ObjectId(queue.id),
                "status": "queued",
                "messageCount": 0,
                "failedCount": 0,
                "processor": {"workerId": worker, "workerPid": None, "consumerPid": None},
                "createdAt": now,
                "startedAt": None,
                "endedAt": None,
                "lastModified": now,
                "endReason": None,
                "error": None,
                "shard": shard,
            }
        )
        return str(job_id)

    @translated
    def release_worker(self, worker: str, now: datetime, reason: str) -> list[Assignment]:
        """Interrupt a worker's open jobs, then delete its assignments; return them.

        Jobs first: a crash in between leaves assignments the next attempt finds,
        never open jobs that no assignment refers to.
        """
        held = self.assignments(worker)
        self.interrupt_jobs([a.job_id for a in held], now, reason)
        self._majority[ASSIGNMENTS].delete_many({"worker": worker})
        return held

    @translated
    def orphaned_jobs(self, stale_before: datetime) -> list[str]:
        """Open jobs untouched since `stale_before` that no assignment refers to."""
        query = {"status": {"$in": list(OPEN_JOB_STATES)}, "lastModified": {"$lt": stale_before}}
        candidates = {str(d["_id"]) for d in self._db[JOBS].find(query, {"_id": 1})}
        if not candidates:
            return []
        assigned = {str(d["jobId"]) for d in self._db[ASSIGNMENTS].find({}, {"jobId": 1})}
        return sorted(candidates - assigned)

