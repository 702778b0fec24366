"""The `meta` collection's schema document: which layout of the collections a database has.

`{_id: "schema", version: N}`. SCHEMA_VERSION is the layout this code reads and writes.
A database at a higher version was upgraded by a newer orchestrator: this one refuses it
(SchemaTooNew, exit 2) before writing anything, rather than write documents the newer
code does not expect. A database at a lower version is upgraded: its migrations run,
then the number is raised. The number is never lowered. docs/mongodb.md, "Upgrades".
"""

from __future__ import annotations

from pymongo.errors import DuplicateKeyError

from orchestrator import __version__
from orchestrator.backends.store.base import META, Connection, translated
from orchestrator.errors import SchemaTooNew

# 1: the layout of orchestrator 0.1 (queues, assignments unique on {queueUrl, shard},
# workers, jobs, leases, metrics, failures, series, depths).
SCHEMA_VERSION = 1
SCHEMA_ID = "schema"


class SchemaDocs(Connection):
    """`{_id: "schema", version}` in `meta`: the layout of this database's collections."""

    @translated
    def schema_version(self) -> int | None:
        """The version recorded in the database; None before any orchestrator recorded one."""
        doc = self._db[META].find_one({"_id": SCHEMA_ID})
        return None if doc is None else int(doc["version"])

    def check_schema(self) -> int | None:
        """The recorded version, or SchemaTooNew if it is newer than this code knows."""
        found = self.schema_version()
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaTooNew(self._db.name, found, SCHEMA_VERSION, __version__)
        return found

    @translated
    def record_schema(self, found: int | None) -> None:
        """Record SCHEMA_VERSION over `found` (what check_schema returned): insert it when
        there is none, raise a lower one after migrating. Majority: an older orchestrator
        must not start against a layout whose number a failover undid."""
        if found is None:
            try:
                self._majority[META].insert_one({"_id": SCHEMA_ID, "version": SCHEMA_VERSION})
            except DuplicateKeyError:
                self.check_schema()  # another process was first: it may be a newer one
        elif found < SCHEMA_VERSION:
            self._migrate(found)
            # Conditional: a newer process may have raised it further meanwhile.
            self._majority[META].update_one(
                {"_id": SCHEMA_ID, "version": {"$lt": SCHEMA_VERSION}},
                {"$set": {"version": SCHEMA_VERSION}},
            )

    def _migrate(self, found: int) -> None:
        """Bring the collections from layout `found` to SCHEMA_VERSION. There are no
        migrations yet (1 is the first layout). A migration added here must be safe to run
        twice: several processes may start at once, and the number is written after it."""
