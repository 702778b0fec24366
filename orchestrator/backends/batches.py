"""SQS's batch limits: send batches sized within the limit for a batch in all (one sizer
for `queue send` and redrive), and DLQ scans that receive 10 at a time and read each
message once (docs/design.md §6)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from orchestrator import validate
from orchestrator.errors import QueueNotFound, ServiceUnavailable
from orchestrator.models import SqsMessage

T = TypeVar("T")

BATCH = 10  # SQS's limit for send, delete and receive
SCAN_HIDE_SECONDS = 30  # a DLQ scan hides what it read this long, renewed while it runs
SCAN_RENEW_SECONDS = 10  # renewed when less than this is left (a receive takes at most ~7 s)


class ScanSqs(Protocol):
    """What a DLQ scan needs of Sqs."""

    def receive(self, url: str, max_messages: int, wait_seconds: int,
                visibility_timeout: int | None = None) -> list[SqsMessage]: ...  # fmt: skip

    def set_visibility(self, url: str, receipts: list[str], seconds: int) -> int: ...


def message_size(body: str, attributes: Mapping[str, Any] | None = None) -> int:
    """What SQS counts of a message against its size limits: the body's UTF-8 bytes plus
    its attributes' (validate.attributes_size)."""
    return len(body.encode("utf-8", "surrogatepass")) + validate.attributes_size(attributes)


def sized_batches(items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """The items in order, in send batches of at most 10 whose sizes add up to at most
    SQS's limit for a batch (validate.MAX_BODY_BYTES, read at each call). An item over the
    limit on its own goes alone: it is SQS's to refuse (or, from a DLQ, it took it before)."""
    limit = validate.MAX_BODY_BYTES
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and (len(batch) == BATCH or total + n > limit):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


class DlqScan:
    """One pass over a DLQ that reads each message at most once: what it has received stays
    hidden until the pass ends (renewed while it runs, which does not raise receive counts)
    and then goes back all at once. A message received twice means a renewal was missed:
    the pass stops there rather than show or touch it again."""

    def __init__(self, sqs: ScanSqs, url: str, limit: int,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.sqs = sqs
        self.url = url
        self.limit = limit
        self.clock = clock
        self.seen: set[str] = set()
        self.held: dict[str, str] = {}  # message id -> latest receipt, until handed back
        self.hidden_until: list[tuple[float, list[str]]] = []  # per receive, its ids

    def __enter__(self) -> DlqScan:
        return self

    def __exit__(self, *_: object) -> None:
        self.hand_back()

    def batches(self) -> Iterator[list[SqsMessage]]:
        """Batches of up to 10 messages never yielded before, `limit` in all; the caller
        calls `forget` for those it deleted."""
        while len(self.seen) < self.limit:
            self._renew()
            started = self.clock()
            batch = self.sqs.receive(self.url, min(BATCH, self.limit - len(self.seen)), 1,
                                     SCAN_HIDE_SECONDS)  # fmt: skip
            self.held.update((m.message_id, m.receipt) for m in batch)
            self.hidden_until.append((started + SCAN_HIDE_SECONDS,
                                      [m.message_id for m in batch]))  # fmt: skip
            fresh = [m for m in batch if m.message_id not in self.seen]
            self.seen.update(m.message_id for m in fresh)
            if fresh:
                yield fresh
            if not fresh or len(fresh) < len(batch):  # nothing more, or come round again
                return

    def forget(self, message_ids: Iterable[str]) -> None:
        """These are gone (deleted): neither renewed nor handed back."""
        for message_id in message_ids:
            self.held.pop(message_id, None)

    def _renew(self) -> None:
        """Hide again, for SCAN_HIDE_SECONDS, what would show within SCAN_RENEW_SECONDS."""
        now = self.clock()
        due = [ids for until, ids in self.hidden_until if until - now < SCAN_RENEW_SECONDS]
        if not due:
            return
        self.hidden_until = [(u, ids) for u, ids in self.hidden_until
                             if u - now >= SCAN_RENEW_SECONDS]  # fmt: skip
        ids = [i for group in due for i in group if i in self.held]
        for start in range(0, len(ids), BATCH):
            self.sqs.set_visibility(self.url, [self.held[i] for i in ids[start:start + BATCH]],
                                    SCAN_HIDE_SECONDS)  # fmt: skip
        self.hidden_until.append((now + SCAN_HIDE_SECONDS, ids))

    def hand_back(self) -> None:
        """Everything still held back to the DLQ at once (visibility 0)."""
        receipts = list(self.held.values())
        self.held.clear()
        for start in range(0, len(receipts), BATCH):
            with contextlib.suppress(ServiceUnavailable, QueueNotFound):
                self.sqs.set_visibility(self.url, receipts[start : start + BATCH], 0)
