"""Store: every MongoDB query of the project. The only module that imports pymongo.

Queries stay within what both real MongoDB (>= 5.0) and the embedded nx-27017
server support (shared/emulators.md): no transactions, no partial indexes,
no `$push` of sub-documents, no reliance on TTL purging on time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pymongo
from bson import ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from orchestrator.config import redact_uri, scrub
from orchestrator.errors import ConfigError, QueueExists, QueueNotFound, ServiceUnavailable
from orchestrator.models import QueueRecord, utcnow

P = ParamSpec("P")
R = TypeVar("R")

QUEUES, ASSIGNMENTS, WORKERS, JOBS, LEASES = "queues", "assignments", "workers", "jobs", "leases"
INDEX_OPTIONS_CONFLICT = (85, 86)


def _short(exc: PyMongoError) -> str:
    """The first clause of a pymongo error; its topology descriptions run to pages."""
    text = str(exc)
    for cut in (" (configured timeouts", ", Timeout:", ", full error:"):
        text = text.split(cut)[0]
    return text


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Turn pymongo errors into ServiceUnavailable naming the (redacted) server."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except PyMongoError as exc:
            store = args[0]
            assert isinstance(store, Store)
            raise ServiceUnavailable(f"MongoDB at {store.address} failed: {_short(exc)}") from exc

    return wrapper


class Store:
    """Owns the MongoDB connection and every query against the §4 collections."""

    def __init__(self, uri: str, db_name: str, *, job_ttl_days: float, timeout_ms: int = 5000):
        self.address = redact_uri(uri)
        self.job_ttl_seconds = int(job_ttl_days * 86400)
        try:
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                uri,
                tz_aware=True,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                appname="orchestrator",
            )
        except (PyMongoError, ValueError) as exc:  # a malformed URI: the setting is wrong
            raise ConfigError(f"setting MONGODB_URI is not usable: {scrub(str(exc), uri)}") from exc
        self._db = self._client[db_name]

    def close(self) -> None:
        self._client.close()

    # --- set-up --------------------------------------------------------------

    @translated
    def ensure_indexes(self) -> None:
        """Create every index of §4; safe to run from every process at every start."""
        db = self._db
        db[QUEUES].create_index("name", unique=True)
        db[QUEUES].create_index("queueUrl", unique=True)
        db[ASSIGNMENTS].create_index("queueUrl", unique=True)
        db[ASSIGNMENTS].create_index("worker")
        db[WORKERS].create_index("heartbeatAt")
        db[JOBS].create_index([("status", 1), ("createdAt", 1)])
        db[JOBS].create_index([("queueUrl", 1), ("status", 1)])
        self._ensure_ttl(JOBS, "lastModified", self.job_ttl_seconds)

    def _ensure_ttl(self, collection: str, key: str, seconds: int) -> None:
        coll = self._db[collection]
        try:
            coll.create_index(key, expireAfterSeconds=seconds)
        except OperationFailure as exc:
            if exc.code not in INDEX_OPTIONS_CONFLICT:
                raise
            # JOB_TTL_DAYS changed since the index was made: replace the index.
            for name, info in coll.index_information().items():
                if [k for k, _ in info["key"]] == [key]:
                    coll.drop_index(name)
            coll.create_index(key, expireAfterSeconds=seconds)

    @translated
    def ping(self) -> None:
        self._client.admin.command("ping")

    # --- queues --------------------------------------------------------------

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
    def find_queue_by_dlq(self, dlq_name: str) -> QueueRecord | None:
        doc = self._db[QUEUES].find_one({"dlqName": dlq_name})
        return QueueRecord.from_doc(doc) if doc else None

    @translated
    def list_queues(self) -> list[QueueRecord]:
        return [QueueRecord.from_doc(d) for d in self._db[QUEUES].find().sort("name", 1)]

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
    def mark_synced(self, queue_id: str, queue_url: str, dlq_url: str | None) -> None:
        now = utcnow()
        self._db[QUEUES].update_one(
            {"_id": ObjectId(queue_id)},
            {"$set": {"queueUrl": queue_url, "dlqUrl": dlq_url, "syncedAt": now, "updatedAt": now}},
        )

    @translated
    def delete_queue(self, name: str) -> bool:
        return self._db[QUEUES].delete_one({"name": name}).deleted_count == 1

    # --- assignments ---------------------------------------------------------

    @translated
    def assigned_workers(self) -> dict[str, str]:
        """queueUrl → id of the worker it is assigned to."""
        cursor = self._db[ASSIGNMENTS].find({}, {"queueUrl": 1, "worker": 1})
        return {d["queueUrl"]: d["worker"] for d in cursor}
