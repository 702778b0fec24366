"""The `metrics` collection: counters summed over every process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from orchestrator import metrics
from orchestrator.backends.store.base import (
    METRICS,
    _short,
    translated,
)
from orchestrator.backends.store.series import SeriesDocs
from orchestrator.errors import MetricsPartlyWritten, ServiceUnavailable
from orchestrator.metrics import Deltas, Meter, Totals
from orchestrator.models import (
    utcnow,
)


class MetricDocs(SeriesDocs):  # its counts also feed the charts
    """The `metrics` collection: counters summed over every process."""

    @translated
    def add_metrics(self, deltas: Deltas, now: datetime) -> None:
        """Add a Meter's counts to the fleet's sums: one `$inc` per document, one round trip."""
        writes = metrics.to_writes(deltas, now)
        if not writes:
            return
        try:
            self._fast[METRICS].bulk_write(
                [UpdateOne(w.filter, w.update, upsert=True) for w in writes], ordered=False
            )
        except BulkWriteError as exc:  # some documents were written: only the rest are kept
            failed = [writes[e["index"]] for e in exc.details.get("writeErrors", [])]
            message = self.scrub(f"MongoDB at {self.address} refused some metrics: {_short(exc)}")
            raise MetricsPartlyWritten(message, metrics.unwritten(failed)) from exc
        self._chart(deltas, now)

    def _chart(self, deltas: Deltas, now: datetime) -> None:
        """The same counts into this minute's chart points; a point lost to an error costs
        a chart a dip, never a count (the totals above are written)."""
        counts = {q: (int(c["handled"]), int(c["failed"]))
                  for q, c in deltas.get("queues", {}).items()}  # fmt: skip
        if not counts:
            return
        with contextlib.suppress(ServiceUnavailable):
            self.add_series(now, counts=counts)

    def flush_meter(self, meter: Meter) -> None:
        """Write what `meter` counted; on failure it keeps the counts for the next flush."""
        meter.flush(lambda deltas: self.add_metrics(deltas, utcnow()))

    @translated
    def metric_totals(self, queues: Iterable[str] | None = None) -> Totals:
        """The fleet's sums; with `queues`, only those queues' (a page of the API's)."""
        query = {} if queues is None else {"_id": {"$in": [f"queue:{q}" for q in queues]}}
        return metrics.totals(self._db[METRICS].find(query))

