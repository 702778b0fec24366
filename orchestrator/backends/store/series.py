"""The `series` collection: a minute's figures for the dashboard's charts, kept 24 h.

One document per queue (or worker) and minute: messages handled and failed (added by
every process that counts them), the queue's depth and a worker's load (set by the
leading master). A TTL index on `minute` purges them after a day.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne

from orchestrator.backends.store.base import SERIES, Connection, translated

SERIES_TTL_SECONDS = 86_400


def minute_of(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def _doc(kind: str, name: str, minute: datetime, update: dict[str, Any]) -> UpdateOne:
    return UpdateOne(
        {"_id": f"{kind}|{name}|{minute:%Y%m%d%H%M}"},
        {**update, "$setOnInsert": {"kind": kind, "name": name, "minute": minute}},
        upsert=True,
    )


class SeriesDocs(Connection):
    """`{_id: "queue|NAME|YYYYmmddHHMM", kind, name, minute, handled, failed, depth, load}`."""

    @translated
    def add_series(
        self,
        now: datetime,
        counts: dict[str, tuple[int, int]] | None = None,
        depths: dict[str, int] | None = None,
        loads: dict[str, int] | None = None,
    ) -> None:
        """This minute's counts by queue (handled, failed: added), depths by queue (set: the
        minute's last stands) and loads by worker (the minute's peak: jobs are often shorter
        than a minute, and a chart of each minute's last load would miss them)."""
        minute = minute_of(now)
        writes = [_doc("queue", q, minute, {"$inc": {"handled": h, "failed": f}})
                  for q, (h, f) in (counts or {}).items()]  # fmt: skip
        writes += [_doc("queue", q, minute, {"$set": {"depth": d}})
                   for q, d in (depths or {}).items()]  # fmt: skip
        writes += [_doc("worker", w, minute, {"$max": {"load": n}})
                   for w, n in (loads or {}).items()]  # fmt: skip
        if writes:
            self._fast[SERIES].bulk_write(writes, ordered=False)

    @translated
    def series(self, kind: str, names: Iterable[str], now: datetime,
               minutes: int = 60) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
        """The last `minutes` minutes of these queues or workers, oldest first."""
        since = minute_of(now) - timedelta(minutes=minutes - 1)
        query = {"kind": kind, "name": {"$in": list(names)}, "minute": {"$gte": since}}
        out: dict[str, list[dict[str, Any]]] = {}
        for doc in self._db[SERIES].find(query).sort("minute", 1):
            out.setdefault(doc["name"], []).append(doc)
        return out
