"""Typed records for the MongoDB documents of docs/design.md §4, with to_doc/from_doc."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator import queueref
from orchestrator.message import Message


def utcnow() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes written and read values equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class QueueRecord:
    """A queue the fleet runs: the source of truth for its settings. Managed queues the
    product created and owns in SQS; adopted ones (`managed` False) it only consumes."""

    name: str
    queue_url: str
    concurrency: int
    handler: str
    paused: bool = False
    visibility_timeout: int = 30
    dlq_name: str | None = None
    dlq_url: str | None = None
    max_receive_count: int | None = None
    processes: int = 1  # handler processes on the assigned worker
    batch_size: int = 1  # above 1 the handler gets a list of up to this many messages
    batch_window: float = 0.0  # seconds a batch may wait to fill
    rate_limit: float | None = None  # handler starts per second, fleet-wide; None: no limit
    priority: int = 0  # 0..9: higher is served first when workers are short
    adaptive: bool = False  # the effective concurrency follows AIMD below `concurrency`
    max_shards: int = 1  # workers that may serve the queue at once
    failure_bodies: bool = False  # a failure's record keeps the message body (DLQ browser)
    managed: bool = True  # False: adopted; never created, changed, purged or deleted in SQS
    region: str | None = None  # None: AWS_REGION (documents from before regions)
    account: str | None = None  # the AWS account its URL names
    role_arn: str | None = None  # assumed (STS) for every call on it; None: own credentials
    id: str | None = None  # the document's ObjectId, as hex
    created_at: datetime | None = None
    updated_at: datetime | None = None
    synced_at: datetime | None = None
    doorbell_at: datetime | None = None  # the last send that rang it (docs/design.md §3)

    @property
    def fifo(self) -> bool:
        return self.sqs_name.endswith(".fifo")

    @property
    def sqs_name(self) -> str:
        """Its name in SQS (an adopted queue's `name` may differ: `adopt --name`)."""
        return queueref.name_of(self.queue_url) if self.queue_url else self.name

    def to_doc(self) -> dict[str, Any]:
        """The document without `_id` (the store owns ObjectId conversion)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "queueUrl": self.queue_url,
            "concurrency": self.concurrency,
            "handler": self.handler,
            "paused": self.paused,
            "visibilityTimeout": self.visibility_timeout,
            "dlqName": self.dlq_name,
            "dlqUrl": self.dlq_url,
            "maxReceiveCount": self.max_receive_count,
            "processes": self.processes,
            "batchSize": self.batch_size,
            "batchWindow": self.batch_window,
            "rateLimit": self.rate_limit,
            "priority": self.priority,
            "adaptive": self.adaptive,
            "maxShards": self.max_shards,
            "failureBodies": self.failure_bodies,
            "managed": self.managed,
            "region": self.region,
            "account": self.account,
            "roleArn": self.role_arn,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "syncedAt": self.synced_at,
        }
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> QueueRecord:
        return cls(
            id=str(doc["_id"]),
            name=doc["name"],
            queue_url=doc["queueUrl"],
            concurrency=int(doc["concurrency"]),
            handler=doc["handler"],
            paused=bool(doc.get("paused", False)),
            visibility_timeout=int(doc.get("visibilityTimeout") or 30),
            dlq_name=doc.get("dlqName"),
            dlq_url=doc.get("dlqUrl"),
            max_receive_count=doc.get("maxReceiveCount"),
            # Documents written before a field existed lack it: the default applies.
            processes=int(doc.get("processes") or 1),
            batch_size=int(doc.get("batchSize") or 1),
            batch_window=float(doc.get("batchWindow") or 0.0),
            rate_limit=None if doc.get("rateLimit") is None else float(doc["rateLimit"]),
            priority=int(doc.get("priority") or 0),
            adaptive=bool(doc.get("adaptive", False)),
            max_shards=int(doc.get("maxShards") or 1),
            failure_bodies=bool(doc.get("failureBodies", False)),
            managed=bool(doc.get("managed", True)),
            region=doc.get("region"),
            account=doc.get("account"),
            role_arn=doc.get("roleArn"),
            created_at=doc.get("createdAt"),
            updated_at=doc.get("updatedAt"),
            synced_at=doc.get("syncedAt"),
            doorbell_at=doc.get("doorbellAt"),
        )


@dataclass(frozen=True)
class SqsMessage:
    """A message as a receive got it from SQS: what the consumer keeps until it deletes
    it, retries it or hands it back."""

    message_id: str
    receipt: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)  # ApproximateReceiveCount, ...
    message_attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", 1))

    @property
    def group(self) -> str:
        """Its MessageGroupId (FIFO queues; empty on a standard queue)."""
        return self.attributes.get("MessageGroupId", "")

    @classmethod
    def from_sqs(cls, raw: Mapping[str, Any]) -> SqsMessage:
        """From a ReceiveMessage answer's entry."""
        return cls(str(raw["MessageId"]), str(raw["ReceiptHandle"]), raw.get("Body", ""),
                   dict(raw.get("Attributes") or {}),
                   dict(raw.get("MessageAttributes") or {}))  # fmt: skip

    def for_handler(self, queue_name: str, queue_url: str) -> Message:
        return Message(self.message_id, self.body, queue_name, queue_url, self.receive_count,
                       self.attributes, self.message_attributes)  # fmt: skip


@dataclass(frozen=True)
class QueueDepth:
    """SQS's approximate counts for one queue."""

    visible: int
    in_flight: int
    delayed: int
    missing: bool = False  # SQS has no such queue (counted as empty)


@dataclass(frozen=True)
class FleetNeed:
    """What the fleet needs, as the leading master saw it in its last cycle (for
    autoscalers: GET /api/fleet, orchestrator_fleet_desired_workers)."""

    live_workers: int
    capacity: int  # assignments the live workers can hold (their MAX_LOAD, summed)
    wanted: int  # running assignments, plus queues (and shards) waiting for room
    desired_workers: int  # ceil(wanted / MAX_LOAD), at least 1

    def to_json(self) -> dict[str, int]:
        return {"liveWorkers": self.live_workers, "capacity": self.capacity,
                "wanted": self.wanted, "desiredWorkers": self.desired_workers}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FleetNeed:
        return cls(int(doc["liveWorkers"]), int(doc["capacity"]), int(doc["wanted"]),
                   int(doc["desiredWorkers"]))  # fmt: skip


@dataclass(frozen=True)
class Share:
    """A shard's part of its queue's concurrency and rate limit, as the master split them.
    A new shard waits (`granted` False) until the others run within their new shares."""

    concurrency: int
    rate_limit: float | None
    granted: bool = True

    def to_doc(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "rateLimit": self.rate_limit,
                "granted": self.granted}  # fmt: skip

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Share | None:
        if not doc:
            return None
        rate = doc.get("rateLimit")
        return cls(int(doc["concurrency"]), None if rate is None else float(rate),
                   bool(doc.get("granted", True)))  # fmt: skip


@dataclass(frozen=True)
class Assignment:
    """A queue (one shard of it) given to a worker; the unique `{queueUrl, shard}` index
    makes it exclusive."""

    queue_url: str
    queue_id: str
    queue_name: str
    worker: str
    job_id: str
    assigned_at: datetime
    shard: int = 0
    share: Share | None = None  # None: the queue's own concurrency and rate limit
    yield_requested: bool = False  # a master asked it to give way (preemption)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Assignment:
        return cls(
            queue_url=doc["queueUrl"],
            queue_id=str(doc["queueId"]),
            queue_name=doc["queueName"],
            worker=doc["worker"],
            job_id=str(doc["jobId"]),
            assigned_at=doc["assignedAt"],
            shard=int(doc.get("shard") or 0),
            share=Share.from_doc(doc.get("share")),
            yield_requested=doc.get("yieldRequestedAt") is not None,
        )


@dataclass(frozen=True)
class ConsumerStats:
    pid: int
    queue_name: str | None
    rss_mb: float
    cpu_percent: float

    def to_doc(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "queueName": self.queue_name,
            "rssMb": self.rss_mb,
            "cpuPercent": self.cpu_percent,
        }


@dataclass(frozen=True)
class WorkerRecord:
    """A live worker process, kept fresh by its heartbeats."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    max_load: int
    status: str = "active"
    consumers: tuple[ConsumerStats, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "host": self.host,
            "pid": self.pid,
            "startedAt": self.started_at,
            "heartbeatAt": self.heartbeat_at,
            "maxLoad": self.max_load,
            "status": self.status,
            "consumers": [c.to_doc() for c in self.consumers],
        }

    def to_json(self, load: int, now: datetime) -> dict[str, Any]:
        """As `workers list --json` and the API show it: with its load and heartbeat age."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "status": self.status,
            "load": load,
            "maxLoad": self.max_load,
            "startedAt": self.started_at.isoformat(),
            "heartbeatAgeSeconds": round((now - self.heartbeat_at).total_seconds(), 1),
            "consumers": [c.to_doc() for c in self.consumers],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> WorkerRecord:
        return cls(
            id=doc["_id"],
            host=doc["host"],
            pid=int(doc["pid"]),
            started_at=doc["startedAt"],
            heartbeat_at=doc["heartbeatAt"],
            max_load=int(doc["maxLoad"]),
            status=doc.get("status", "active"),
            consumers=tuple(
                ConsumerStats(c["pid"], c.get("queueName"), c["rssMb"], c["cpuPercent"])
                for c in doc.get("consumers") or []
            ),
        )


@dataclass(frozen=True)
class Lease:
    """The master lease: who holds it, and the version each renewal bumps (other masters
    judge the holder alive by seeing it change, never by `expires_at`)."""

    holder: str
    version: int | None  # None in a lease written before versions existed
    expires_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Lease:
        version = doc.get("version")
        return cls(doc["holder"], None if version is None else int(version), doc.get("expiresAt"))


# What a failure keeps of a handler's error text, traceback and message body. A handler
# raising ValueError("E" * 9_000_000) made 18 MB documents (MongoDB refuses 16 MiB), an
# 18 MB API answer and 18 MB log lines: the error is cut where it is made (the engine's
# invoke), and the body where the failure is noted.
MAX_ERROR_BYTES = 4096
MAX_TRACEBACK_BYTES = 8192
MAX_FAILURE_BODY_BYTES = 65_536


def clip(text: str, limit: int) -> str:
    """`text` cut to its first `limit` bytes of UTF-8 (never inside a character), marked
    `…[truncated N bytes]` with the number of bytes cut; unchanged when it fits."""
    if len(text) * 4 <= limit:  # a UTF-8 character is at most 4 bytes: no need to encode
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    head = raw[:limit].decode("utf-8", "ignore")  # drops a character cut in two
    return f"{head}…[truncated {len(raw) - len(head.encode('utf-8', 'surrogatepass')):,} bytes]"


@dataclass(frozen=True)
class FailureNote:
    """A handler's failure on one message: noted by its consumer (engine/failurelog.py),
    carried as it is to the worker, which hands it to the store, and kept JOB_TTL_DAYS for
    the dead-letter browser. The body only when its queue opts in (`failureBodies`)."""

    queue_name: str
    message_id: str
    receive_count: int
    error_type: str
    error: str
    traceback: str  # its last lines
    at: datetime  # when the consumer noted it
    body: str | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"queueName": self.queue_name, "messageId": self.message_id,
                "receiveCount": self.receive_count, "errorType": self.error_type,
                "error": self.error, "traceback": self.traceback, "at": self.at,
                "body": self.body}  # fmt: skip

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> FailureNote:
        return cls(doc["queueName"], doc["messageId"], int(doc.get("receiveCount") or 1),
                   doc.get("errorType") or "", doc.get("error") or "", doc.get("traceback") or "",
                   doc["at"], doc.get("body"))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"messageId": self.message_id, "receiveCount": self.receive_count,
                "errorType": self.error_type, "error": self.error,
                "traceback": self.traceback, "at": self.at.isoformat(),
                "body": self.body}  # fmt: skip


OPEN_JOB_STATES = ("queued", "running")
JOB_STATES = ("queued", "running", "completed", "failed", "interrupted")


@dataclass(frozen=True)
class JobRecord:
    """One assignment's run: the audit trail, purged by the TTL index on lastModified."""

    id: str
    queue_name: str
    queue_url: str
    queue_id: str
    status: str
    message_count: int
    failed_count: int
    worker_id: str | None
    worker_pid: int | None
    consumer_pid: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    last_modified: datetime
    end_reason: str | None
    error: str | None
    processes: tuple[dict[str, Any], ...] = ()  # handler processes: pid, handled, failed, exit
    effective_concurrency: int | None = None  # what its consumer runs at (adaptive, shares)
    running: int | None = None  # handlers running at its last report
    oldest_age_seconds: float | None = None  # how late its last report's oldest arrival was
    shard: int = 0
    duplicates: int = 0  # copies received again while its consumer had them: not run twice

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JobRecord:
        processor = doc.get("processor") or {}
        return cls(
            id=str(doc["_id"]),
            queue_name=doc["queueName"],
            queue_url=doc["queueUrl"],
            queue_id=str(doc["queueId"]),
            status=doc["status"],
            message_count=int(doc.get("messageCount") or 0),
            failed_count=int(doc.get("failedCount") or 0),
            worker_id=processor.get("workerId"),
            worker_pid=processor.get("workerPid"),
            consumer_pid=processor.get("consumerPid"),
            created_at=doc["createdAt"],
            started_at=doc.get("startedAt"),
            ended_at=doc.get("endedAt"),
            last_modified=doc["lastModified"],
            end_reason=doc.get("endReason"),
            error=doc.get("error"),
            processes=tuple(doc.get("processes") or ()),
            effective_concurrency=doc.get("effectiveConcurrency"),
            running=doc.get("running"),
            oldest_age_seconds=doc.get("oldestAgeSeconds"),
            shard=int(doc.get("shard") or 0),
            duplicates=int(doc.get("duplicates") or 0),
        )

    def to_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "id": self.id,
            "queueName": self.queue_name,
            "queueUrl": self.queue_url,
            "status": self.status,
            "messageCount": self.message_count,
            "failedCount": self.failed_count,
            "processor": {
                "workerId": self.worker_id,
                "workerPid": self.worker_pid,
                "consumerPid": self.consumer_pid,
            },
            "createdAt": iso(self.created_at),
            "startedAt": iso(self.started_at),
            "endedAt": iso(self.ended_at),
            "lastModified": iso(self.last_modified),
            "endReason": self.end_reason,
            "error": self.error,
            "processes": list(self.processes),
            "effectiveConcurrency": self.effective_concurrency,
            "oldestAgeSeconds": self.oldest_age_seconds,
            "shard": self.shard,
            "duplicates": self.duplicates,
        }
