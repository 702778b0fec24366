"""Metrics: counted in every process, summed in MongoDB, shown by every master.

Workers run on many hosts and consumers come and go, so no single process can
serve the fleet's counts and prometheus_client's multiprocess mode (one host,
one directory) does not fit. Instead each process counts into a Meter and adds
what it counted to the `metrics` collection with `$inc` (consumers send theirs
to their worker, which owns their MongoDB writes). Any master's `/metrics`
reads the sums, so every scrape sees the whole fleet, and the counters survive
process restarts. A crash loses at most the counts of the last few seconds.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Handler duration buckets in seconds: from fast in-memory handlers to the slow
# calls a visibility extension exists for.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FLEET_COUNTERS = ("assignments", "consumerRestartsDied", "consumerRestartsRecycled")

Deltas = dict[str, Any]  # what a Meter counted since it was last taken; JSON-safe


@dataclass
class QueueCounts:
    """One queue's message counters; `buckets[i]` counts durations <= BUCKETS[i], with one
    more slot for longer ones (not cumulative: the exposition makes them so)."""

    handled: int = 0
    failed: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def add(self, other: QueueCounts) -> None:
        self.handled += other.handled
        self.failed += other.failed
        self.seconds += other.seconds
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def to_json(self) -> dict[str, Any]:
        return {"handled": self.handled, "failed": self.failed, "seconds": self.seconds,
                "buckets": self.buckets}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> QueueCounts:
        buckets = [int(n) for n in doc.get("buckets", [])]
        size = len(BUCKETS) + 1
        return cls(int(doc.get("handled", 0)), int(doc.get("failed", 0)),
                   float(doc.get("seconds", 0.0)), (buckets + [0] * size)[:size])  # fmt: skip


@dataclass
class Totals:
    """The fleet's counters as summed in MongoDB."""

    queues: dict[str, QueueCounts] = field(default_factory=dict)
    sqs_requests: dict[str, int] = field(default_factory=dict)
    fleet: dict[str, int] = field(default_factory=dict)


class Meter:
    """Counts in one process until the counts are flushed; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, QueueCounts] = {}
        self._sqs: Counter[str] = Counter()
        self._fleet: Counter[str] = Counter()

    def message(self, queue: str, seconds: float, ok: bool) -> None:
        """A handler finished: count it as handled (it returned) or failed (it raised)."""
        with self._lock:
            counts = self._queues.get(queue)
            if counts is None:  # (setdefault would build a QueueCounts every time)
                counts = self._queues[queue] = QueueCounts()
            if ok:
                counts.handled += 1
            else:
                counts.failed += 1
            counts.seconds += seconds
            counts.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1

    def sqs_request(self, operation: str) -> None:
        with self._lock:
            self._sqs[operation] += 1

    def count(self, name: str, n: int = 1) -> None:
        assert name in FLEET_COUNTERS, name
        with self._lock:
            self._fleet[name] += n

    def take(self) -> Deltas:
        """Everything counted since the last take, emptied out of the meter."""
        with self._lock:
            deltas: Deltas = {}
            if self._queues:
                deltas["queues"] = {q: c.to_json() for q, c in self._queues.items()}
            if self._sqs:
                deltas["sqs"] = dict(self._sqs)
            if self._fleet:
                deltas["fleet"] = dict(self._fleet)
            self._queues, self._sqs, self._fleet = {}, Counter(), Counter()
        return deltas

    def merge(self, deltas: Deltas | None) -> None:
        """Add counts taken elsewhere (a consumer's report, or a flush that failed)."""
        if not deltas:
            return
        with self._lock:
            for queue, doc in deltas.get("queues", {}).items():
                self._queues.setdefault(queue, QueueCounts()).add(QueueCounts.from_json(doc))
            self._sqs.update({str(k): int(v) for k, v in deltas.get("sqs", {}).items()})
            self._fleet.update({str(k): int(v) for k, v in deltas.get("fleet", {}).items()})

    def flush(self, write: Callable[[Deltas], None]) -> None:
        """Write what was counted; on failure keep what was not written and re-raise.

        A write whose answer was lost (a connection reset after MongoDB applied it)
        is written again: counts may then run high, never low."""
        deltas = self.take()
        if not deltas:
            return
        try:
            write(deltas)
        except BaseException as exc:
            self.merge(getattr(exc, "unwritten", deltas))
            raise


# --- the `metrics` collection's documents ------------------------------------------------
# One per queue (`_id: "queue:<name>"`), one for SQS requests by operation (`"sqs"`)
# and one for fleet counters (`"fleet"`). Top-level fields only: nx-27017 stores a
# dotted `$inc` path of an upserted document as a literal key, where MongoDB nests it.


@dataclass(frozen=True)
class Write:
    """One document's `$inc`, and the part of the deltas it carries."""

    filter: dict[str, Any]
    update: dict[str, Any]
    part: Deltas


def to_writes(deltas: Deltas, now: datetime) -> list[Write]:
    writes = []
    for queue, counts in deltas.get("queues", {}).items():
        inc = {"handled": counts["handled"], "failed": counts["failed"],
               "seconds": counts["seconds"]}  # fmt: skip
        inc |= {f"b{i}": n for i, n in enumerate(counts["buckets"]) if n}
        update = {"$inc": inc, "$set": {"queueName": queue, "updatedAt": now}}
        writes.append(Write({"_id": f"queue:{queue}"}, update, {"queues": {queue: counts}}))
    for key in ("sqs", "fleet"):
        if deltas.get(key):
            update = {"$inc": dict(deltas[key]), "$set": {"updatedAt": now}}
            writes.append(Write({"_id": key}, update, {key: deltas[key]}))
    return writes


def unwritten(failed: Iterable[Write]) -> Deltas:
    """The deltas of the writes that failed, to be kept for the next flush."""
    out: Deltas = {}
    for write in failed:
        for key, part in write.part.items():
            out.setdefault(key, {}).update(part)
    return out


def totals(docs: Iterable[dict[str, Any]]) -> Totals:
    found = Totals()
    for doc in docs:
        counts = {k: v for k, v in doc.items() if k not in ("_id", "updatedAt", "queueName")}
        if doc["_id"] == "sqs":
            found.sqs_requests = {k: int(v) for k, v in counts.items()}
        elif doc["_id"] == "fleet":
            found.fleet = {k: int(v) for k, v in counts.items()}
        elif "queueName" in doc:
            found.queues[doc["queueName"]] = QueueCounts(
                int(doc.get("handled", 0)), int(doc.get("failed", 0)),
                float(doc.get("seconds", 0.0)),
                [int(doc.get(f"b{i}", 0)) for i in range(len(BUCKETS) + 1)],
            )  # fmt: skip
    return found
