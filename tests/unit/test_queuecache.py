"""QueueCache: a master reads the queue documents whole once, then only what changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.backends.memory import MemoryStore
from orchestrator.models import QueueRecord
from orchestrator.roles.queuecache import FULL_READ_SECONDS, QueueCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Counting(MemoryStore):
    """Counts the queue documents each read returns."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[int] = []

    def list_queues(self) -> list[QueueRecord]:
        found = super().list_queues()
        self.read.append(len(found))
        return found

    def queues_by_id(self, ids: Any) -> dict[str, QueueRecord]:
        found = super().queues_by_id(ids)
        self.read.append(len(found))
        return found


def test_only_changed_documents_are_read_after_the_first_look() -> None:
    store = Counting()
    for i in range(50):
        store.insert_queue(QueueRecord(f"q{i}", f"u{i}", 5, "app:handle"))
    cache = QueueCache(store)
    assert len(cache.refresh(T0)) == 50 and store.read == [50]
    assert len(cache.refresh(T0 + timedelta(seconds=1))) == 50
    assert store.read == [50]  # nothing new: no document read (their stamps only)
    store.update_queue("q7", {"concurrency": 9})
    found = {q.name: q for q in cache.refresh(T0 + timedelta(seconds=2))}
    assert found["q7"].concurrency == 9 and store.read == [50, 1]


def test_a_deleted_queue_goes_at_the_next_whole_read() -> None:
    store = Counting()
    gone = store.insert_queue(QueueRecord("gone", "u", 5, "app:handle"))
    store.insert_queue(QueueRecord("kept", "v", 5, "app:handle"))
    cache = QueueCache(store)
    cache.refresh(T0)
    assert gone.id is not None
    del store.queues[gone.id]
    assert len(cache.refresh(T0 + timedelta(seconds=1))) == 2  # not known yet
    later = T0 + timedelta(seconds=FULL_READ_SECONDS)
    assert [q.name for q in cache.refresh(later)] == ["kept"]
