"""The `depths` collection: the leading master's latest depth check of each queue, which
the HTTP API and /metrics show instead of asking SQS about every queue per request."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pymongo import UpdateOne

from orchestrator.backends.store.base import DEPTHS, FLEET, Connection, translated
from orchestrator.models import FleetNeed, QueueDepth


class DepthDocs(Connection):
    """`{_id: queueUrl, visible, inFlight, delayed, checkedAt, waitingSince}` (checkedAt:
    the master's)."""

    @translated
    def save_depths(self, found: dict[str, tuple[QueueDepth, datetime]]) -> None:
        """Record depth checks, one round trip for all of them."""
        if not found:
            return
        self._fast[DEPTHS].bulk_write([
            UpdateOne({"_id": url}, {"$set": {"visible": d.visible, "inFlight": d.in_flight,
                                              "delayed": d.delayed, "missing": d.missing,
                                              "checkedAt": at}},
                      upsert=True)
            for url, (d, at) in found.items()
        ], ordered=False)  # fmt: skip

    @translated
    def depths(self, urls: Iterable[str] | None = None) -> dict[str, tuple[QueueDepth, datetime]]:
        """The last depth checked of these queues (None: of every queue checked)."""
        query = {} if urls is None else {"_id": {"$in": list(urls)}}
        cursor = self._db[DEPTHS].find(query).batch_size(5000)
        return {d["_id"]: (QueueDepth(int(d["visible"]), int(d["inFlight"]), int(d["delayed"]),
                                      bool(d.get("missing", False))),
                           d["checkedAt"]) for d in cursor}  # fmt: skip

    @translated
    def save_waiting(self, since: dict[str, datetime | None]) -> None:
        """Since when each queue's visible messages have waited for a consumer (None: they
        do not), beside its depth check: the backlog's wait (§10). One round trip."""
        if since:
            writes = [UpdateOne({"_id": url}, {"$set": {"waitingSince": at}})
                      for url, at in since.items()]  # fmt: skip
            self._fast[DEPTHS].bulk_write(writes, ordered=False)

    @translated
    def waiting_since(self, urls: Iterable[str] | None = None) -> dict[str, datetime]:
        """The queues whose messages wait for a consumer, and since when."""
        query: dict[str, object] = {"waitingSince": {"$ne": None}}
        if urls is not None:
            query["_id"] = {"$in": list(urls)}
        cursor = self._db[DEPTHS].find(query, {"waitingSince": 1}).batch_size(5000)
        return {d["_id"]: d["waitingSince"] for d in cursor if d.get("waitingSince")}

    @translated
    def save_fleet_need(self, need: FleetNeed, now: datetime) -> None:
        """The leader's figures, for whichever master's API an autoscaler asks."""
        self._fast[FLEET].update_one({"_id": "need"},
                                     {"$set": {**need.to_json(), "updatedAt": now}}, upsert=True)

    @translated
    def fleet_need(self) -> tuple[FleetNeed, datetime] | None:
        doc = self._db[FLEET].find_one({"_id": "need"})
        return None if doc is None else (FleetNeed.from_json(doc), doc["updatedAt"])
