"""Typed records for the MongoDB documents of design §4, with to_doc/from_doc."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes written and read values equal.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class QueueRecord:
    """A managed queue: the source of truth for its settings."""

    name: str
    queue_url: str
    concurrency: int
    handler: str
    paused: bool = False
    visibility_timeout: int = 30
    dlq_name: str | None = None
    dlq_url: str | None = None
    max_receive_count: int | None = None
    id: str | None = None  # the document's ObjectId, as hex
    created_at: datetime | None = None
    updated_at: datetime | None = None
    synced_at: datetime | None = None

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")

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
            created_at=doc.get("createdAt"),
            updated_at=doc.get("updatedAt"),
            synced_at=doc.get("syncedAt"),
        )


@dataclass(frozen=True)
class QueueDepth:
    """SQS's approximate counts for one queue."""

    visible: int
    in_flight: int
    delayed: int
