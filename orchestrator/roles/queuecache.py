"""QueueCache: the queue documents a master keeps in memory, so that a cycle reads only
what changed (at 100,000 queues a whole read takes seconds).

Each cycle reads the ids and `updatedAt` stamps of the documents stamped no earlier than
a minute before the newest stamp it has seen (every write sets it; the minute covers
writers whose clocks lag the others'), then the documents whose stamp is new to it; a
whole read every FULL_READ_SECONDS also drops deleted queues.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from orchestrator.backends.protocols import MasterStore
from orchestrator.models import QueueRecord

FULL_READ_SECONDS = 300.0
OVERLAP = timedelta(seconds=60)


class QueueCache:
    """The queues by id, as of the last refresh."""

    def __init__(self, store: MasterStore) -> None:
        self.store = store
        self.by_id: dict[str, QueueRecord] = {}
        self.read_at: datetime | None = None  # the last whole read (the master's clock)
        self.newest: datetime | None = None  # the newest updatedAt seen (the writers' clocks)

    def refresh(self, now: datetime) -> list[QueueRecord]:
        """The queues now, read whole at first and every FULL_READ_SECONDS."""
        whole = self.read_at is None or (now - self.read_at).total_seconds() >= FULL_READ_SECONDS
        if whole or self.newest is None:
            found = self.store.list_queues()
            self.by_id = {q.id: q for q in found if q.id is not None}
            self.read_at = now
            stamps = [q.updated_at for q in found if q.updated_at is not None]
        else:
            # What changed in the window, by id and stamp only: the documents themselves
            # are read for those whose stamp is not the one already held.
            seen = self.store.queue_stamps_since(self.newest - OVERLAP)
            changed = [i for i, stamp in seen.items()
                       if i not in self.by_id or self.by_id[i].updated_at != stamp]  # fmt: skip
            self.by_id.update(self.store.queues_by_id(changed) if changed else {})
            stamps = list(seen.values())
        if stamps:
            self.newest = max([*stamps, *([self.newest] if self.newest else [])])
        return list(self.by_id.values())
