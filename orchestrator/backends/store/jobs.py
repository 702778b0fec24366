"""The `jobs` collection: one per assignment, the audit trail.

A job's end (job_ended, interrupt_jobs) waits for a majority (MAJORITY in base.py): an
outcome reported as written must survive a failover. Progress is w:1 (FAST): the next
report, seconds later, rewrites it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bson import ObjectId

from orchestrator.backends.store.base import (
    JOBS,
    Connection,
    translated,
)
from orchestrator.errors import (
    InvalidValue,
)
from orchestrator.models import (
    OPEN_JOB_STATES,
    JobRecord,
)


class JobDocs(Connection):
    """The `jobs` collection: one per assignment, the audit trail."""

    @translated
    def job_started(self, job_id: str, worker_pid: int, consumer_pid: int, now: datetime) -> None:
        self._db[JOBS].update_one(
            {"_id": ObjectId(job_id)},
            {
                "$set": {
                    "status": "running",
                    "startedAt": now,
                    "processor.workerPid": worker_pid,
                    "processor.consumerPid": consumer_pid,
                    "lastModified": now,
                }
            },
        )

    @translated
    def job_progress(self, job_id: str, handled: int, failed: int, now: datetime, *,
                     effective: int | None = None, running: int | None = None,
                     oldest_age: float | None = None) -> None:  # fmt: skip
        """Counts so far; `effective`: the concurrency its consumer runs at, `running`:
        its handlers running now (what a master needs to grant a new shard its share);
        `oldest_age`: how late the oldest message since the last report arrived (None:
        none arrived: 0, it is not late)."""
        self._fast[JOBS].update_one(
            {"_id": ObjectId(job_id), "status": {"$in": list(OPEN_JOB_STATES)}},
            {"$set": {"messageCount": handled, "failedCount": failed, "lastModified": now,
                      "effectiveConcurrency": effective, "running": running,
                      "oldestAgeSeconds": round(oldest_age or 0.0, 3)}},
        )  # fmt: skip

    @translated
    def jobs_by_id(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        ids = [ObjectId(j) for j in set(job_ids)]
        if not ids:
            return {}
        cursor = self._db[JOBS].find({"_id": {"$in": ids}})
        return {str(d["_id"]): JobRecord.from_doc(d) for d in cursor}

    def effective_concurrency(self, job_ids: Iterable[str]) -> dict[str, int]:
        """What the consumers of these jobs last said they run at."""
        jobs = self.jobs_by_id(job_ids).items()
        return {job_id: job.effective_concurrency for job_id, job in jobs
                if job.effective_concurrency is not None}  # fmt: skip

    @translated
    def job_ended(
        self,
        job_id: str,
        status: str,
        now: datetime,
        *,
        handled: int,
        failed: int,
        reason: str,
        error: str | None = None,
        processes: list[dict[str, Any]] | None = None,
        pids: tuple[int, int] | None = None,
        duplicates: int = 0,
    ) -> None:
        """Close an open job (a closed one is left as it is: the first ending wins).
        `processes`: the counts of its handler processes, when it had any; `pids`: the
        worker's and the consumer's (a job that failed before it started has no others);
        `duplicates`: copies its consumer received again while it still had them."""
        fields: dict[str, Any] = {
            "status": status,
            "messageCount": handled,
            "failedCount": failed,
            "endedAt": now,
            "lastModified": now,
            "endReason": reason,
            "error": error,
            "duplicates": duplicates,
        }
        if processes:
            fields["processes"] = processes
        if pids:
            fields["processor.workerPid"], fields["processor.consumerPid"] = pids
        self._majority[JOBS].update_one(
            {"_id": ObjectId(job_id), "status": {"$in": list(OPEN_JOB_STATES)}},
            {"$set": fields},
        )

    @translated
    def interrupt_jobs(self, job_ids: Iterable[str], now: datetime, reason: str) -> int:
        ids = [ObjectId(j) for j in job_ids]
        result = self._majority[JOBS].update_many(
            {"_id": {"$in": ids}, "status": {"$in": list(OPEN_JOB_STATES)}},
            {"$set": {"status": "interrupted", "endedAt": now, "lastModified": now,
                      "endReason": reason}},
        )  # fmt: skip
        return result.modified_count

    @translated
    def jobs(
        self, status: str | None = None, queue: str | None = None, limit: int = 20
    ) -> list[JobRecord]:
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if queue:
            query["queueName"] = queue
        cursor = self._db[JOBS].find(query).sort("createdAt", -1).limit(limit)
        return [JobRecord.from_doc(d) for d in cursor]

    @translated
    def job(self, job_id: str) -> JobRecord | None:
        if not ObjectId.is_valid(job_id):
            raise InvalidValue(f"job id {job_id!r} is not a 24-digit hex ObjectId")
        doc = self._db[JOBS].find_one({"_id": ObjectId(job_id)})
        return JobRecord.from_doc(doc) if doc else None

    @translated
    def job_counts(self) -> dict[str, int]:
        pipeline = [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        return {d["_id"]: d["n"] for d in self._db[JOBS].aggregate(pipeline)}

