"""The `assignments` collection: which worker runs which queue.

Every write waits for a majority (MAJORITY in base.py): an assignment a failover undid
would let a master give the shard to a second worker while the first still consumes it.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from orchestrator.backends.store.base import (
    ASSIGNMENTS,
    Connection,
    _oid,
    translated,
)
from orchestrator.models import Assignment, Share


class AssignmentDocs(Connection):
    """The `assignments` collection: which worker runs which queue."""

    @translated
    def assigned_workers(self) -> dict[str, list[str]]:
        """queueUrl → ids of the workers it is assigned to (one per shard, in shard order)."""
        cursor = self._db[ASSIGNMENTS].find({}, {"queueUrl": 1, "worker": 1, "shard": 1})
        out: dict[str, list[tuple[int, str]]] = {}
        for d in cursor:
            out.setdefault(d["queueUrl"], []).append((int(d.get("shard") or 0), d["worker"]))
        return {url: [w for _, w in sorted(held)] for url, held in out.items()}

    def worker_loads(self) -> Counter[str]:
        """Worker id → assignments it holds."""
        return Counter(w for held in self.assigned_workers().values() for w in held)

    @translated
    def set_share(self, job_id: str, share: Share | None) -> None:
        """A shard's part of its queue's concurrency and rate (None: the queue's own)."""
        self._majority[ASSIGNMENTS].update_one(
            {"jobId": _oid(job_id)}, {"$set": {"share": share.to_doc() if share else None}}
        )

    @translated
    def request_yield(self, job_id: str, now: datetime) -> None:
        """Ask the assignment's worker to stop it (preemption by a higher priority)."""
        self._majority[ASSIGNMENTS].update_one({"jobId": _oid(job_id)},
                                         {"$set": {"yieldRequestedAt": now}})  # fmt: skip

    @translated
    def assignments(self, worker: str | None = None) -> list[Assignment]:
        query = {} if worker is None else {"worker": worker}
        return [Assignment.from_doc(d) for d in self._db[ASSIGNMENTS].find(query)]

    @translated
    def release(self, job_id: str) -> None:
        """Delete the assignment of a job (the queue becomes assignable again)."""
        self._majority[ASSIGNMENTS].delete_one({"jobId": _oid(job_id)})

