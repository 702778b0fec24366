"""The `locks` collection: named locks with an expiry, one operation at a time fleet-wide.

A lock is `{_id: name, holder, expiresAt}`: taken by an insert (the unique `_id` lets one
of two takers win), taken over from a holder whose expiry has passed by a
compare-and-swap on that holder, renewed and released only by its holder. Expiry is
judged on the taker's clock, filtered here (the TTL index only clears leftovers, lazily
on the embedded server: docs/design.md §13). Writes wait for a majority and reads see
what a majority has, like the lease's: a lock a failover undid would let two run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from orchestrator.backends.store.base import LOCKS, Connection, translated

TAKE_ATTEMPTS = 3  # a lock may change between our insert, read and swap; then look again


class LockDocs(Connection):
    """The `locks` collection."""

    @property
    def _locks(self) -> Collection[dict[str, Any]]:
        return self._coordinating(LOCKS)

    @translated
    def take_lock(self, name: str, holder: str, now: datetime,
                  expires: datetime) -> tuple[str, datetime] | None:  # fmt: skip
        """Take the lock `name` until `expires` when it is free or its expiry has passed
        by `now`: None when taken, else who holds it and until when."""
        held: tuple[str, datetime] | None = None
        for _ in range(TAKE_ATTEMPTS):
            try:
                self._locks.insert_one({"_id": name, "holder": holder, "expiresAt": expires})
                return None
            except DuplicateKeyError:
                pass
            doc = self._locks.find_one({"_id": name})
            if doc is None:  # released (or purged) meanwhile: insert again
                continue
            held = (str(doc["holder"]), doc["expiresAt"])
            if held[1] > now:
                return held
            swapped = self._locks.update_one({"_id": name, "holder": held[0]},
                                             {"$set": {"holder": holder, "expiresAt": expires}})
            if swapped.matched_count == 1:
                return None
        assert held is not None  # every attempt found a document
        return held

    @translated
    def renew_lock(self, name: str, holder: str, expires: datetime) -> bool:
        """Move the expiry of a lock `holder` holds; False if it holds it no more."""
        result = self._locks.update_one({"_id": name, "holder": holder},
                                        {"$set": {"expiresAt": expires}})  # fmt: skip
        return result.matched_count == 1

    @translated
    def release_lock(self, name: str, holder: str) -> None:
        self._locks.delete_one({"_id": name, "holder": holder})
