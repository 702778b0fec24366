"""Store: every MongoDB query of the project. The only module that imports pymongo.

Queries stay within what both real MongoDB (>= 5.0) and the embedded nx-27017
server support (shared/emulators.md): no transactions, no partial indexes,
no `$push` of sub-documents, no reliance on TTL purging on time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import pymongo
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from orchestrator import metrics
from orchestrator.config import Settings, redact_uri, scrub
from orchestrator.errors import (
    ConfigError,
    InvalidValue,
    MetricsPartlyWritten,
    QueueExists,
    QueueNotFound,
    ServiceUnavailable,
)
from orchestrator.metrics import Deltas, Meter, Totals
from orchestrator.models import (
    OPEN_JOB_STATES,
    Assignment,
    ConsumerStats,
    JobRecord,
    QueueRecord,
    WorkerRecord,
    utcnow,
)

P = ParamSpec("P")
R = TypeVar("R")

QUEUES, ASSIGNMENTS, WORKERS, JOBS, LEASES = "queues", "assignments", "workers", "jobs", "leases"
METRICS = "metrics"  # counters summed over every process (orchestrator/metrics.py)
INDEX_OPTIONS_CONFLICT = (85, 86)
# Daemons give up on an unreachable server sooner than the CLI: their loops retry
# anyway, and a long wait stalls everything else they do.
DAEMON_TIMEOUT_MS = 2000


def _oid(value: str) -> dict[str, list[ObjectId]]:
    """Filter for an ObjectId in a field other than `_id`.

    nx-27017 0.8.1 matches `{field: ObjectId}` in finds but not in updates or
    deletes (they silently match nothing); `$in` works in both, on real MongoDB too.
    """
    return {"$in": [ObjectId(value)]}


def _short(exc: PyMongoError) -> str:
    """The first clause of a pymongo error; its topology descriptions run to pages."""
    text = str(exc)
    for cut in (" (configured timeouts", ", Timeout:", ", full error:"):
        text = text.split(cut)[0]
    return text


def _raised_in_pymongo(exc: BaseException) -> bool:
    """Whether pymongo itself raised `exc`: it lets a few errors of its own escape its
    tree, such as KeyError('payload') when a server without authentication answers a
    login. A KeyError of this module is a bug, and is not translated."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("pymongo")


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Turn pymongo errors into ServiceUnavailable naming the (redacted) server."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, Store)
        try:
            return method(*args, **kwargs)
        except PyMongoError as exc:
            raise ServiceUnavailable(f"MongoDB at {store.address} failed: {_short(exc)}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            if not _raised_in_pymongo(exc):
                raise
            raise ServiceUnavailable(
                f"MongoDB at {store.address} failed: its answer made no sense to the client "
                f"({type(exc).__name__} {exc}); if MONGODB_URI has credentials, does the "
                "server support authentication?"
            ) from exc

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
                # One budget per operation, retries and handshakes included: a server that
                # accepts connections but never answers fails the call instead of hanging
                # it (a worker stuck in a heartbeat could not fence itself in time).
                timeoutMS=timeout_ms * 3 // 2,
                appname="orchestrator",
            )
        except (PyMongoError, ValueError, OSError) as exc:  # a malformed URI, a missing
            # tlsCAFile: the setting is wrong
            raise ConfigError(f"setting MONGODB_URI is not usable: {scrub(str(exc), uri)}") from exc
        self._db = self._client[db_name]

    @classmethod
    def connect(cls, settings: Settings, uri: str, *, timeout_ms: int = 5000) -> Store:
        """A Store for these settings at `uri` (the embedded server's, or the setting)."""
        return cls(uri, settings.mongodb_name, job_ttl_days=settings.job_ttl_days,
                   timeout_ms=timeout_ms)  # fmt: skip

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Every call made inside ends within `seconds` from now (failing as an outage
        if it must), whatever its own timeout: a worker must fence itself on time."""
        with pymongo.timeout(max(seconds, 0.001)):
            yield

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
        db[JOBS].create_index([("queueName", 1), ("createdAt", 1)])  # jobs of one queue, newest
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
    def queues_by_id(self, ids: Iterable[str]) -> dict[str, QueueRecord]:
        wanted = [ObjectId(i) for i in set(ids)]
        cursor = self._db[QUEUES].find({"_id": {"$in": wanted}})
        return {str(d["_id"]): QueueRecord.from_doc(d) for d in cursor}

    @translated
    def find_queue_by_dlq(self, dlq_name: str) -> QueueRecord | None:
        doc = self._db[QUEUES].find_one({"dlqName": dlq_name})
        return QueueRecord.from_doc(doc) if doc else None

    @translated
    def list_queues(self) -> list[QueueRecord]:
        # Large batches: the master reads every queue each cycle (one round trip per batch).
        cursor = self._db[QUEUES].find().sort("name", 1).batch_size(5000)
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
    def mark_synced(self, queue_id: str, queue_url: str, dlq_url: str | None) -> None:
        now = utcnow()
        self._db[QUEUES].update_one(
            {"_id": ObjectId(queue_id)},
            {"$set": {"queueUrl": queue_url, "dlqUrl": dlq_url, "syncedAt": now, "updatedAt": now}},
        )

    @translated
    def delete_queue(self, name: str) -> bool:
        """Forget the queue, and its counters: /metrics must not report it for ever."""
        deleted = self._db[QUEUES].delete_one({"name": name}).deleted_count == 1
        self._db[METRICS].delete_one({"_id": f"queue:{name}"})
        return deleted

    # --- assignments ---------------------------------------------------------

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
    def assign(self, queue: QueueRecord, worker: str, now: datetime) -> str | None:
        """Assign the queue and record its job; None if another master assigned it first."""
        assert queue.id is not None
        job_id = ObjectId()
        doc = {
            "queueUrl": queue.queue_url,
            "queueId": ObjectId(queue.id),
            "queueName": queue.name,
            "worker": worker,
            "jobId": job_id,
            "assignedAt": now,
        }
        try:
            self._db[ASSIGNMENTS].insert_one(doc)
        except DuplicateKeyError:
            return None  # the unique queueUrl index: somebody else won this queue
        self._db[JOBS].insert_one(
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
            }
        )
        return str(job_id)

    @translated
    def release(self, job_id: str) -> None:
        """Delete the assignment of a job (the queue becomes assignable again)."""
        self._db[ASSIGNMENTS].delete_one({"jobId": _oid(job_id)})

    @translated
    def release_worker(self, worker: str, now: datetime, reason: str) -> list[Assignment]:
        """Interrupt a worker's open jobs, then delete its assignments; return them.

        Jobs first: a crash in between leaves assignments the next attempt finds,
        never open jobs that no assignment refers to.
        """
        held = self.assignments(worker)
        self.interrupt_jobs([a.job_id for a in held], now, reason)
        self._db[ASSIGNMENTS].delete_many({"worker": worker})
        return held

    # --- workers -------------------------------------------------------------

    @translated
    def register_worker(self, worker: WorkerRecord) -> None:
        self._db[WORKERS].replace_one({"_id": worker.id}, worker.to_doc(), upsert=True)

    @translated
    def heartbeat(
        self, worker_id: str, now: datetime, consumers: Iterable[ConsumerStats], status: str
    ) -> bool:
        """Refresh the worker's document; False if it is gone (a master declared us dead)."""
        result = self._db[WORKERS].update_one(
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

    # --- jobs ----------------------------------------------------------------

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
    def job_progress(self, job_id: str, handled: int, failed: int, now: datetime) -> None:
        self._db[JOBS].update_one(
            {"_id": ObjectId(job_id), "status": {"$in": list(OPEN_JOB_STATES)}},
            {"$set": {"messageCount": handled, "failedCount": failed, "lastModified": now}},
        )

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
    ) -> None:
        """Close an open job (a closed one is left as it is: the first ending wins).
        `processes`: the counts of its handler processes, when it had any."""
        fields: dict[str, Any] = {
            "status": status,
            "messageCount": handled,
            "failedCount": failed,
            "endedAt": now,
            "lastModified": now,
            "endReason": reason,
            "error": error,
        }
        if processes:
            fields["processes"] = processes
        self._db[JOBS].update_one(
            {"_id": ObjectId(job_id), "status": {"$in": list(OPEN_JOB_STATES)}},
            {"$set": fields},
        )

    @translated
    def interrupt_jobs(self, job_ids: Iterable[str], now: datetime, reason: str) -> int:
        ids = [ObjectId(j) for j in job_ids]
        result = self._db[JOBS].update_many(
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
    def orphaned_jobs(self, stale_before: datetime) -> list[str]:
        """Open jobs untouched since `stale_before` that no assignment refers to."""
        query = {"status": {"$in": list(OPEN_JOB_STATES)}, "lastModified": {"$lt": stale_before}}
        candidates = {str(d["_id"]) for d in self._db[JOBS].find(query, {"_id": 1})}
        if not candidates:
            return []
        assigned = {str(d["jobId"]) for d in self._db[ASSIGNMENTS].find({}, {"jobId": 1})}
        return sorted(candidates - assigned)

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

    # --- leader lease --------------------------------------------------------

    @translated
    def renew_lease(self, holder: str, expires: datetime) -> bool:
        """Renew the master lease if `holder` holds it. Every renewal changes `version`:
        other masters judge the holder alive by seeing it change (master.py)."""
        result = self._db[LEASES].update_one(
            {"_id": "master", "holder": holder},
            {"$set": {"expiresAt": expires}, "$inc": {"version": 1}},
        )
        return result.matched_count == 1

    @translated
    def create_lease(self, holder: str, expires: datetime) -> bool:
        """Take the lease when nobody holds one; False if somebody else was first."""
        try:
            self._db[LEASES].insert_one(
                {"_id": "master", "holder": holder, "version": 1, "expiresAt": expires}
            )
        except DuplicateKeyError:
            return False
        return True

    @translated
    def take_lease(
        self, holder: str, was_holder: str, was_version: int | None, expires: datetime
    ) -> bool:
        """Take over the lease from a holder that stopped renewing it, if it is still as
        we saw it (holder and version): of two masters taking it at once, one wins."""
        version: Any = was_version if was_version is not None else {"$exists": False}
        result = self._db[LEASES].update_one(
            {"_id": "master", "holder": was_holder, "version": version},
            {"$set": {"holder": holder, "expiresAt": expires, "version": (was_version or 0) + 1}},
        )
        return result.matched_count == 1

    @translated
    def drop_lease(self, holder: str) -> None:
        self._db[LEASES].delete_one({"_id": "master", "holder": holder})

    @translated
    def lease(self) -> dict[str, Any] | None:
        return self._db[LEASES].find_one({"_id": "master"})

    # --- metrics ---------------------------------------------------------------

    @translated
    def add_metrics(self, deltas: Deltas, now: datetime) -> None:
        """Add a Meter's counts to the fleet's sums: one `$inc` per document, one round trip."""
        writes = metrics.to_writes(deltas, now)
        if not writes:
            return
        try:
            self._db[METRICS].bulk_write(
                [UpdateOne(w.filter, w.update, upsert=True) for w in writes], ordered=False
            )
        except BulkWriteError as exc:  # some documents were written: only the rest are kept
            failed = [writes[e["index"]] for e in exc.details.get("writeErrors", [])]
            message = f"MongoDB at {self.address} refused some metrics: {_short(exc)}"
            raise MetricsPartlyWritten(message, metrics.unwritten(failed)) from exc

    def flush_meter(self, meter: Meter) -> None:
        """Write what `meter` counted; on failure it keeps the counts for the next flush."""
        meter.flush(lambda deltas: self.add_metrics(deltas, utcnow()))

    @translated
    def metric_totals(self) -> Totals:
        return metrics.totals(self._db[METRICS].find())
