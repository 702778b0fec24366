"""QueueCache: a master reads the queue documents whole in pages (on a thread of their
own), then only what changed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.backends.memory import MemoryStore
from orchestrator.errors import ServiceUnavailable
from orchestrator.models import QueueRecord
from orchestrator.roles.master import queuecache
from orchestrator.roles.master.queuecache import RESCAN_SECONDS, QueueCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)


pytestmark = pytest.mark.timeout(30)


class Counting(MemoryStore):
    """Counts the queue documents each read returns; past its first page, a scan reads
    on only once `gate` is open; `broken` fails the next page read once."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.broken = False
        self.scans_after: list[str | None] = []

    def queue_pages_by_id(self, after: str | None, size: int) -> Iterator[list[QueueRecord]]:
        self.scans_after.append(after)
        for i, page in enumerate(super().queue_pages_by_id(after, size)):
            if i > 0:
                self.gate.wait(10)
            if self.broken:
                self.broken = False
                raise ServiceUnavailable("MongoDB at test failed: gone")
            self.read.append(len(page))
            yield page

    def queues_by_id(self, ids: Any) -> dict[str, QueueRecord]:
        found = super().queues_by_id(ids)
        self.read.append(len(found))
        return found


def filled(n: int, stamped: datetime | None = T0 - timedelta(days=1)) -> Counting:
    """`n` queues, last changed at `stamped` (None: now)."""
    store = Counting()
    for i in range(n):
        queue = store.insert_queue(QueueRecord(f"q{i}", f"u{i}", 5, "app:handle"))
        if stamped is not None:
            assert queue.id is not None
            store.queues[queue.id] = replace(queue, updated_at=stamped)
    return store


def test_only_changed_documents_are_read_after_the_first_scan() -> None:
    store = filled(50)
    cache = QueueCache(store)
    assert len(cache.refresh(T0, 1.0)) == 50 and store.read == [50]
    assert len(cache.refresh(T0 + timedelta(seconds=1), 1.0)) == 50
    assert store.read == [50]  # nothing new: no document read (their stamps only)
    store.update_queue("q7", {"concurrency": 9})
    found = {q.name: q for q in cache.refresh(T0 + timedelta(seconds=2), 1.0)}
    assert found["q7"].concurrency == 9 and store.read == [50, 1]


def test_unchanged_documents_stamped_long_ago_are_not_even_listed() -> None:
    # All stamped at once (a bulk import), then quiet: a look for changes covers only
    # the minute before the previous look, so they stop turning up.
    store = filled(20, stamped=None)
    listed: list[int] = []
    since_calls = store.queue_stamps_since
    store.queue_stamps_since = lambda since: listed.append(len(r := since_calls(since))) or r
    cache = QueueCache(store)
    now = datetime.now(UTC)
    cache.refresh(now, 1.0)
    cache.refresh(now + timedelta(seconds=90), 1.0)  # looks back to now - 60 s: all 20
    cache.refresh(now + timedelta(seconds=180), 1.0)  # looks back to now + 30 s: none
    assert listed == [20, 0]


def scanned(cache: QueueCache, now: datetime) -> None:
    """Refresh (starting a scan if one is due) until the scan has ended."""
    deadline = time.monotonic() + 10
    cache.refresh(now, 0.05)
    while cache.scan_seen is not None:
        assert time.monotonic() < deadline, "the scan did not end"
        cache.refresh(now, 0.05)
        now += timedelta(milliseconds=1)


def test_a_cycle_takes_in_what_the_scan_has_read_and_does_not_wait_for_the_rest(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(queuecache, "PAGE", 10)
    store = filled(35)
    store.gate.clear()  # the scan's second page is slow
    cache = QueueCache(store)
    assert len(cache.refresh(T0, 0.5)) == 10 and not cache.whole  # the first page
    store.gate.set()
    assert len(cache.refresh(T0 + timedelta(seconds=1), 5.0)) == 35 and cache.whole
    assert store.read == [10, 10, 10, 5]


def test_a_failed_read_is_the_cycles_error_and_the_scan_goes_on_from_its_last_page(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(queuecache, "PAGE", 10)
    store = filled(25)
    store.gate.clear()
    cache = QueueCache(store)
    cache.refresh(T0, 0.5)  # the first page
    store.broken = True
    store.gate.set()
    with pytest.raises(ServiceUnavailable):
        cache.refresh(T0 + timedelta(seconds=1), 5.0)
    assert len(cache.refresh(T0 + timedelta(seconds=2), 5.0)) == 25 and cache.whole
    first_page_last_id = sorted(store.queues)[9]
    assert store.scans_after == [None, first_page_last_id] and store.read == [10, 10, 5]


def test_a_deleted_queue_goes_at_the_next_scan_and_a_new_one_stays() -> None:
    store = filled(3)
    cache = QueueCache(store)
    cache.refresh(T0, 1.0)
    gone = next(q for q in store.queues.values() if q.name == "q1")
    assert gone.id is not None
    del store.queues[gone.id]
    assert len(cache.refresh(T0 + timedelta(seconds=1), 1.0)) == 3  # not known yet
    later = T0 + timedelta(seconds=RESCAN_SECONDS)
    store.insert_queue(QueueRecord("new", "u-new", 5, "app:handle"))
    scanned(cache, later)  # a rescan: nobody waits for it
    assert sorted(q.name for q in cache.by_id.values()) == ["new", "q0", "q2"]


def test_a_queue_created_behind_a_running_scan_is_not_dropped_when_it_ends(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(queuecache, "PAGE", 2)
    store = filled(4)
    store.gate.clear()
    cache = QueueCache(store)
    cache.refresh(T0, 0.5)  # one page: q0, q1
    early = store.insert_queue(QueueRecord("early", "u-early", 5, "app:handle",
                                           id="000000000000000000000000"))  # fmt: skip
    store.gate.set()
    cache.refresh(T0 + timedelta(seconds=1), 5.0)  # learns it from its stamp; then q2, q3
    assert cache.whole and early.id in cache.by_id
