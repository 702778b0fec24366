"""The `assignments` collection: which worker runs which queue."""

from __future__ import annotations

from orchestrator.backends.store.base import (
    ASSIGNMENTS,
    Connection,
    _oid,
    translated,
)
from orchestrator.models import (
    Assignment,
)


class AssignmentDocs(Connection):
    """The `assignments` collection: which worker runs which queue."""

    @translated
    def assigned_workers(self) -> dict[str, str]:
        """queueUrl → id of the worker it is assigned to."""
        cursor = self._db[ASSIGNMENTS].find({}, {"queueUrl": 1, "worker": 1})
        return {d["queueUrl"]: d["worker"] for d in cursor}

    @translated
    def assignments(self, worker: str | None = None) -> list[Assignment]:
        query = {} if worker is None else {"worker": worker}
        return [Assignment.from_doc(d) for d in self._db[ASSIGNMENTS].find(query)]

    @translated
    def release(self, job_id: str) -> None:
        """Delete the assignment of a job (the queue becomes assignable again)."""
        self._db[ASSIGNMENTS].delete_one({"jobId": _oid(job_id)})

