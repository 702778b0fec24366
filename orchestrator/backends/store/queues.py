"""The `queues` collection: the source of truth for queue settings."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo.cursor import Cursor
from pymongo.errors import DuplicateKeyError

from orchestrator.backends.store.base import (
    QUEUES,
    Connection,
    translated,
)
from orchestrator.errors import (
    QueueExists,
    QueueNotFound,
)
from orchestrator.models import (
    QueueRecord,
    utcnow,
)


class QueueDocs(Connection):
    """The `queues` collection: the source of truth for queue settings."""

    @translated
    def insert_queue(self, queue: QueueRecord) -> QueueRecord:
        now = utcnow()
        doc = {**queue.to_doc(), "createdAt": now, "updatedAt": now, "syncedAt": now}
        try:
            result = self._db[QUEUES].insert_one(doc)
        except DuplicateKeyError as exc:
            raise QueueExists(queue.name) from exc
        return QueueRecord.from_doc({**doc, "_id": result.inserted_id})

    @translated
    def find_queue(self, name: str) -> QueueRecord | None:
        doc = self._db[QUEUES].find_one({"name": name})
        return QueueRecord.from_doc(doc) if doc else None

    def get_queue(self, name: str) -> QueueRecord:
        queue = self.find_queue(name)
        if queue is None:
            raise QueueNotFound(name)
        return queue

    @translated
    def queues_by_id(self, ids: Iterable[str]) -> dict[str, QueueRecord]:
        wanted = [ObjectId(i) for i in set(ids)]
        cursor = self._db[QUEUES].find({"_id": {"$in": wanted}})
        return {str(d["_id"]): QueueRecord.from_doc(d) for d in cursor}

    @translated
    def find_queue_by_url(self, url: str) -> QueueRecord | None:
        doc = self._db[QUEUES].find_one({"queueUrl": url})
        return QueueRecord.from_doc(doc) if doc else None

    @translated
    def find_queue_by_dlq(self, dlq_name: str) -> QueueRecord | None:
        doc = self._db[QUEUES].find_one({"dlqName": dlq_name})
        return QueueRecord.from_doc(doc) if doc else None

    @translated
    def list_queues(self) -> list[QueueRecord]:
        # Large batches: one round trip per 5,000 queues.
        cursor = self._db[QUEUES].find().sort("name", 1).batch_size(5000)
        return [QueueRecord.from_doc(d) for d in cursor]

    @translated
    def queue_stamps_since(self, since: datetime) -> dict[str, datetime]:
        """Id → updatedAt of the queues created or changed at `since` or later."""
        cursor = self._db[QUEUES].find({"updatedAt": {"$gte": since}},
                                       {"updatedAt": 1}).batch_size(5000)  # fmt: skip
        return {str(d["_id"]): d["updatedAt"] for d in cursor}

    def queue_pages_by_id(self, after: str | None, size: int) -> Iterator[list[QueueRecord]]:
        """The queues in `_id` order after the id `after` (None: from the first), `size` at
        a time through one cursor: the first page costs a query (1.7 s at 100,000 queues
        on the embedded server, which reads them all for any query), each next one a
        getMore (0.06 s). Each call has its own time budget, not the cursor."""
        query = {} if after is None else {"_id": {"$gt": ObjectId(after)}}
        cursor = self._db[QUEUES].find(query).sort("_id", 1).batch_size(size)
        while page := self._next_page(cursor, size):
            yield page
            if len(page) < size:
                return

    @translated
    def _next_page(self, cursor: Cursor[dict[str, Any]], size: int) -> list[QueueRecord]:
        return [QueueRecord.from_doc(d) for d in itertools.islice(cursor, size)]

    @translated
    def queue_page(self, after: str | None, limit: int) -> list[QueueRecord]:
        """Up to `limit` queues by name, after the name `after` (None: from the first)."""
        query = {} if after is None else {"name": {"$gt": after}}
        cursor = self._db[QUEUES].find(query).sort("name", 1).limit(limit)
        return [QueueRecord.from_doc(d) for d in cursor]

    @translated
    def update_queue(self, name: str, changes: dict[str, Any]) -> QueueRecord:
        """Set document fields (camelCase names) on the named queue and return it."""
        doc = self._db[QUEUES].find_one_and_update(
            {"name": name},
            {"$set": {**changes, "updatedAt": utcnow()}},
            return_document=pymongo.ReturnDocument.AFTER,
        )
        if doc is None:
            raise QueueNotFound(name)
        return QueueRecord.from_doc(doc)

    @translated
    def ring_doorbell(self, queue_id: str, now: datetime) -> None:
        """A producer sent to the queue: stamp it, so that the leading master looks at its
        depth in its next cycle, whatever its idle schedule (docs/design.md §3). A
        display-grade write: a lost ring only waits for the idle schedule."""
        self._fast[QUEUES].update_one({"_id": ObjectId(queue_id)},
                                      {"$set": {"doorbellAt": now, "updatedAt": now}})

    @translated
    def mark_synced(self, queue_id: str, queue_url: str, dlq_url: str | None) -> None:
        now = utcnow()
        self._db[QUEUES].update_one(
            {"_id": ObjectId(queue_id)},
            {"$set": {"queueUrl": queue_url, "dlqUrl": dlq_url, "syncedAt": now, "updatedAt": now}},
        )

