"""QueueCache: the queue documents a master keeps in memory, so that a cycle reads only
what changed (at 100,000 queues a whole read takes from half a second on MongoDB to
seven on the embedded server: longer than a cycle, or a call's time budget).

- Changes: each cycle reads the ids and `updatedAt` stamps of the documents stamped
  within OVERLAP before its previous look (every write sets the stamp; OVERLAP covers
  writers whose clocks run behind the master's), then the documents whose stamp is new.
- Scans: a thread of their own reads the documents whole in `_id` order, a page at a
  time through one cursor, and each cycle takes in the pages read since the last one
  (waiting for them, within a budget, only until every queue is known): the first scan
  fills the cache, one every RESCAN_SECONDS drops the queues deleted since. A scan whose
  read failed goes on from its last page taken in, with the next cycle.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timedelta

from orchestrator.backends.protocols import MasterStore
from orchestrator.models import QueueRecord

PAGE = 2000  # queue documents per read of a scan
RESCAN_SECONDS = 300.0
OVERLAP = timedelta(seconds=60)


class _Reader:
    """Reads the queues after the id `after`, page by page, on a thread of its own: at
    100,000 queues the embedded server spends 1.7 s on a scan's first page, which no
    cycle should wait for. The pages, then None (the end) or the error that stopped it."""

    def __init__(self, store: MasterStore, after: str | None) -> None:
        self.pages: queue.Queue[list[QueueRecord] | Exception | None] = queue.Queue()
        threading.Thread(target=self._read, args=(store, after), name="queue-scan",
                         daemon=True).start()  # fmt: skip

    def _read(self, store: MasterStore, after: str | None) -> None:
        try:
            for page in store.queue_pages_by_id(after, PAGE):
                self.pages.put(page)
            self.pages.put(None)
        except Exception as exc:  # raised again by the cycle that takes it
            self.pages.put(exc)


class QueueCache:
    """The queues by id, as of the last refresh."""

    def __init__(self, store: MasterStore) -> None:
        self.store = store
        self.by_id: dict[str, QueueRecord] = {}
        self.whole = False  # a scan has finished: every queue is known
        self.polled_at: datetime | None = None  # the previous look for changes
        self.scan_started: datetime | None = None
        self.scan_after: str | None = None  # a running scan's position (the last _id taken)
        self.scan_seen: set[str] | None = None  # the ids a running scan has met (None: none runs)
        self.reader: _Reader | None = None  # the running scan's reads
        self.rung: list[QueueRecord] = []  # doorbells rung since take_rung

    def refresh(self, now: datetime, wait: float) -> list[QueueRecord]:
        """The queues now: what changed since the last look, and the pages a running scan
        has read; until every queue is known, waiting up to `wait` seconds for them."""
        if self.polled_at is not None:
            self._read_changes(self.polled_at - OVERLAP)
        self.polled_at = now
        self._scan(now, 0.0 if self.whole else wait)
        return list(self.by_id.values())

    def take_rung(self) -> list[QueueRecord]:
        """The queues whose doorbell a send rang since the last call (§3)."""
        rung, self.rung = self.rung, []
        return rung

    def forget(self, queue_id: str) -> None:
        """A queue found deleted before the next scan would drop it."""
        self.by_id.pop(queue_id, None)

    def _read_changes(self, since: datetime) -> None:
        # By id and stamp only: the documents themselves are read for those whose stamp
        # is not the one already held.
        seen = self.store.queue_stamps_since(since)
        changed = [i for i, stamp in seen.items()
                   if i not in self.by_id or self.by_id[i].updated_at != stamp]  # fmt: skip
        if changed:
            fresh = self.store.queues_by_id(changed)
            self.rung.extend(q for i, q in fresh.items() if _rang(q, self.by_id.get(i)))
            self.by_id.update(fresh)
        if self.scan_seen is not None:
            self.scan_seen.update(seen)  # created behind the scan's position: not deleted

    def _scan(self, now: datetime, wait: float) -> None:
        if self.scan_seen is None:
            if self.whole and self.scan_started is not None and (
                    (now - self.scan_started).total_seconds() < RESCAN_SECONDS):  # fmt: skip
                return
            self.scan_seen, self.scan_after, self.scan_started = set(), None, now
        if self.reader is None:
            self.reader = _Reader(self.store, self.scan_after)
        deadline = time.monotonic() + wait
        while True:
            try:
                page = self.reader.pages.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return  # taken in by a later cycle
            if isinstance(page, Exception):
                self.reader = None  # the next cycle reads on from scan_after
                raise page
            if page is None:
                self._end_scan(self.scan_seen)
                return
            for found in page:
                assert found.id is not None
                if _newer(found, self.by_id.get(found.id)):  # not a change taken in since
                    self.by_id[found.id] = found
                self.scan_seen.add(found.id)
            self.scan_after = page[-1].id

    def _end_scan(self, seen: set[str]) -> None:
        """Every id in the collection has been met: the others were deleted."""
        self.by_id = {i: q for i, q in self.by_id.items() if i in seen}
        self.whole, self.scan_seen, self.scan_after, self.reader = True, None, None, None


def _newer(found: QueueRecord, held: QueueRecord | None) -> bool:
    return held is None or held.updated_at is None or (
        found.updated_at is not None and found.updated_at >= held.updated_at)


def _rang(found: QueueRecord, held: QueueRecord | None) -> bool:
    """A send rang its doorbell since the version held (a queue first seen: not a ring;
    it is looked at soon anyway)."""
    return held is not None and found.doorbell_at is not None and (
        held.doorbell_at is None or found.doorbell_at > held.doorbell_at)
