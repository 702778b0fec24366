"""What the DLQ operations of QueueAdmin answer, and their small helpers."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orchestrator.backends.store import Store
from orchestrator.errors import ServiceUnavailable
from orchestrator.models import FailureNote, SqsMessage, utcnow


@dataclass(frozen=True)
class DeadLetter:
    """A message in a dead-letter queue, with the last failure kept for it."""

    message: SqsMessage
    failure: FailureNote | None

    def to_json(self, preview: int = 2048) -> dict[str, Any]:
        body = self.message.body
        return {
            "messageId": self.message.message_id,
            "body": body[:preview],
            "bodyTruncated": len(body) > preview,
            "receiveCount": self.message.receive_count,
            "group": self.message.group or None,
            "lastFailure": self.failure.to_json() if self.failure else None,
        }


@dataclass(frozen=True)
class DlqLook:
    """What a look at a DLQ found, and about how many messages the DLQ held when asked
    (fewer found than held and asked for: in a FIFO DLQ, SQS's group lock; README)."""

    letters: list[DeadLetter]
    held: int


@dataclass(frozen=True)
class DlqChange:
    """What a redrive or a delete of DLQ messages did: how many it moved or deleted (None:
    all, by SQS's purge, which does not count) and the ids asked for but not found."""

    count: int | None
    not_found: list[str]


def renew(store: Store, key: str, holder: str, seconds: float, stop: threading.Event) -> None:
    """Keep a lock while its operation runs: renew it every third of its length (a renewal
    MongoDB missed is tried again at the next; a lock taken over meanwhile is not ours)."""
    while not stop.wait(seconds / 3):
        try:
            if not store.renew_lock(key, holder, utcnow() + timedelta(seconds=seconds)):
                return
        except ServiceUnavailable:
            continue


def unique(ids: Iterable[str]) -> list[str]:
    """The ids in the order given, each once."""
    return list(dict.fromkeys(ids))


def missing(asked: list[str] | None, found: list[str]) -> list[str]:
    """The ids asked for that an operation did not find (in a FIFO DLQ, also those SQS's
    group lock kept from it: README, "Dead letters")."""
    done = set(found)
    return [i for i in asked or [] if i not in done]
