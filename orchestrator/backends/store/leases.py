"""The `leases` collection: the master lease.

Every write waits for a majority and the lease is read as a majority has it (MAJORITY in
base.py): a lease a failover undid could leave two masters each believing it leads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from orchestrator.backends.store.base import (
    LEASES,
    Connection,
    translated,
)
from orchestrator.models import Lease


class LeaseDocs(Connection):
    """The `leases` collection: the master lease."""

    @property
    def _leases(self) -> Collection[dict[str, Any]]:
        return self._coordinating(LEASES)

    @translated
    def renew_lease(self, holder: str, expires: datetime) -> bool:
        """Renew the master lease if `holder` holds it. Every renewal changes `version`:
        other masters judge the holder alive by seeing it change (roles/master/master.py)."""
        result = self._leases.update_one(
            {"_id": "master", "holder": holder},
            {"$set": {"expiresAt": expires}, "$inc": {"version": 1}},
        )
        return result.matched_count == 1

    @translated
    def create_lease(self, holder: str, expires: datetime) -> bool:
        """Take the lease when nobody holds one; False if somebody else was first."""
        try:
            self._leases.insert_one(
                {"_id": "master", "holder": holder, "version": 1, "expiresAt": expires}
            )
        except DuplicateKeyError:
            return False
        return True

    @translated
    def take_lease(
        self, holder: str, was_holder: str, was_version: int | None, expires: datetime
    ) -> bool:
        """Take over the lease from a holder that stopped renewing it, if it is still as
        we saw it (holder and version): of two masters taking it at once, one wins."""
        version: Any = was_version if was_version is not None else {"$exists": False}
        result = self._leases.update_one(
            {"_id": "master", "holder": was_holder, "version": version},
            {"$set": {"holder": holder, "expiresAt": expires, "version": (was_version or 0) + 1}},
        )
        return result.matched_count == 1

    @translated
    def drop_lease(self, holder: str) -> None:
        self._leases.delete_one({"_id": "master", "holder": holder})

    @translated
    def lease(self) -> Lease | None:
        doc = self._leases.find_one({"_id": "master"})
        return Lease.from_doc(doc) if doc else None

