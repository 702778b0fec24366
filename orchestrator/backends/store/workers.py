"""The `workers` collection: live workers and their heartbeats."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from orchestrator.backends.store.base import (
    WORKERS,
    Connection,
    translated,
)
from orchestrator.models import (
    ConsumerStats,
    WorkerRecord,
)


class WorkerDocs(Connection):
    """The `workers` collection: live workers and their heartbeats."""

    @translated
    def register_worker(self, worker: WorkerRecord) -> None:
        self._db[WORKERS].replace_one({"_id": worker.id}, worker.to_doc(), upsert=True)

    @translated
    def heartbeat(
        self, worker_id: str, now: datetime, consumers: Iterable[ConsumerStats], status: str
    ) -> bool:
        """Refresh the worker's document; False if it is gone (a master declared us dead)."""
        # w:1 (FAST in base.py): every few seconds; a lost one is rewritten by the next.
        result = self._fast[WORKERS].update_one(
            {"_id": worker_id},
            {
                "$set": {
                    "heartbeatAt": now,
                    "status": status,
                    "consumers": [c.to_doc() for c in consumers],
                }
            },
        )
        return result.matched_count == 1

    @translated
    def workers(self) -> list[WorkerRecord]:
        return [WorkerRecord.from_doc(d) for d in self._db[WORKERS].find().sort("_id", 1)]

    @translated
    def delete_worker(self, worker_id: str) -> None:
        self._db[WORKERS].delete_one({"_id": worker_id})

