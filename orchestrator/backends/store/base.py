"""The connection every part of the store shares, and the translation of pymongo's errors.

Queries stay within what both real MongoDB (>= 5.0) and the embedded nx-27017
server support (docs/design.md §13): no transactions, no partial indexes,
no `$push` of sub-documents, no reliance on TTL purging on time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, Self, TypeVar

import pymongo
import pymongo.common
from bson import ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.monitoring import CommandListener
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from orchestrator.config import Settings, redact_uri, scrub
from orchestrator.errors import (
    ConfigError,
    ServiceUnavailable,
)

P = ParamSpec("P")
R = TypeVar("R")

QUEUES, ASSIGNMENTS, WORKERS, JOBS, LEASES = "queues", "assignments", "workers", "jobs", "leases"
METRICS = "metrics"  # counters summed over every process (orchestrator/metrics.py)
FAILURES = "failures"  # handlers' failures, for the DLQ browser (TTL JOB_TTL_DAYS)
SERIES = "series"  # a minute's figures per queue and worker, for the charts (TTL 24 h)
DEPTHS = "depths"  # the leading master's latest depth check of each queue
FLEET = "fleet"  # one document, "need": what the fleet needs, by the leader's last cycle
META = "meta"  # {_id: "schema", version}: the layout of the collections (schema.py)
LOCKS = "locks"  # {_id: "dlq:<queue>", holder, expiresAt}: one DLQ operation at a time
LOCK_LEFTOVER_SECONDS = 3600  # a crashed holder's expired lock is purged this much later
INDEX_OPTIONS_CONFLICT = (85, 86)
# Daemons give up on an unreachable server sooner than the CLI: their loops retry
# anyway, and a long wait stalls everything else they do.
DAEMON_TIMEOUT_MS = 2000

# Write concerns (docs/mongodb.md). A write a primary acknowledged alone is undone if
# that primary fails before a secondary copied it. For the lease and the assignments that
# would make two leaders or two consumers of one shard after a failover; for a job's end,
# an outcome reported as written that is lost. Those writes wait for a majority.
# No wtimeout: the client's timeoutMS (Connection) bounds every call, and while it is set
# pymongo leaves wtimeout out of the command (pymongo/_csot.py apply_write_concern), so a
# majority that cannot be reached fails the call as an outage after timeoutMS, like a
# server that does not answer.
MAJORITY = WriteConcern("majority")
# Frequent figures (heartbeats, job progress, metrics, chart points, depths, failures)
# ask for w:1 explicitly: since MongoDB 5.0 a replica set's implicit default is
# majority, and these do not need it; one lost to a failover is rewritten seconds later
# (or, for a metric or a failure record, costs a count, never a message).
FAST = WriteConcern(w=1)
# The lease is read as a majority has it, so that a master never takes over a lease on
# the strength of a write (its own or another's) that a failover could undo.
MAJORITY_READ = ReadConcern("majority")


def _oid(value: str) -> dict[str, list[ObjectId]]:
    """Filter for an ObjectId in a field other than `_id`.

    nx-27017 0.8.1 matches `{field: ObjectId}` in finds but not in updates or
    deletes (they silently match nothing); `$in` works in both, on real MongoDB too.
    """
    return {"$in": [ObjectId(value)]}


def _short(exc: PyMongoError) -> str:
    """The first clause of a pymongo error; its topology descriptions run to pages."""
    text = str(exc)
    for cut in (" (configured timeouts", ", Timeout:", ", full error:"):
        text = text.split(cut)[0]
    return text


def _raised_in_pymongo(exc: BaseException) -> bool:
    """Whether pymongo itself raised `exc`: it lets a few errors of its own escape its
    tree, such as KeyError('payload') when a server without authentication answers a
    login. A KeyError of this module is a bug, and is not translated."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("pymongo")


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Turn pymongo errors into ServiceUnavailable naming the (redacted) server."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, Connection)
        try:
            return method(*args, **kwargs)
        except PyMongoError as exc:
            raise ServiceUnavailable(
                store.scrub(f"MongoDB at {store.address} failed: {_short(exc)}")
            ) from exc
        except (KeyError, TypeError, ValueError) as exc:
            if not _raised_in_pymongo(exc):
                raise
            raise ServiceUnavailable(store.scrub(
                f"MongoDB at {store.address} failed: its answer made no sense to the client "
                f"({type(exc).__name__} {exc}); if MONGODB_URI has credentials, does the "
                "server support authentication?"
            )) from exc

    return wrapper


class Connection:
    """Owns the MongoDB client and database; every collection's part builds on it."""

    def __init__(self, uri: str, db_name: str, *, job_ttl_days: float, timeout_ms: int = 5000,
                 listeners: Sequence[CommandListener] = ()):  # fmt: skip
        """`listeners`: pymongo command listeners (tests record the commands sent)."""
        self._uri = uri  # only for scrub: never shown
        self.address = redact_uri(uri)
        self.job_ttl_seconds = int(job_ttl_days * 86400)
        try:
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                uri,
                tz_aware=True,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                # One budget per operation, retries and handshakes included: a server that
                # accepts connections but never answers fails the call instead of hanging
                # it (a worker stuck in a heartbeat could not fence itself in time).
                timeoutMS=timeout_ms * 3 // 2,
                appname="orchestrator",
                event_listeners=list(listeners),
            )
        except (PyMongoError, ValueError, OSError) as exc:  # a malformed URI, a missing
            # tlsCAFile: the setting is wrong
            raise ConfigError(f"setting MONGODB_URI is not usable: {scrub(str(exc), uri)}") from exc
        # Three handles on one database, differing only in write concern: `_db` leaves it
        # to the client (the URI's `w`, else the server's default).
        self._db = self._client[db_name]
        self._majority: Database[dict[str, Any]] = self._client.get_database(
            db_name, write_concern=MAJORITY)
        self._fast: Database[dict[str, Any]] = self._client.get_database(
            db_name, write_concern=FAST)

    def _coordinating(self, name: str) -> Collection[dict[str, Any]]:
        """Collection `name` for the documents processes coordinate by (the lease, locks):
        written for a majority and read as a majority has it, so that no failover can undo
        what another process already acted on."""
        return self._majority.get_collection(name, read_concern=MAJORITY_READ)

    @classmethod
    def connect(
        cls, settings: Settings, uri: str, *, timeout_ms: int = 5000, short_lived: bool = False
    ) -> Self:
        """A Store for these settings at `uri` (the embedded server's, or the setting).

        `short_lived` (a CLI command): pymongo's background threads notice a close only
        between sleeps of this many seconds (0.5 by default), and the interpreter's exit
        waits for them: a command would end half a second after its work. A module
        constant, so only for processes whose clients are all short-lived.
        """
        if short_lived:
            pymongo.common.MIN_HEARTBEAT_INTERVAL = 0.02
        return cls(uri, settings.mongodb_name, job_ttl_days=settings.job_ttl_days,
                   timeout_ms=timeout_ms)  # fmt: skip

    def scrub(self, text: str) -> str:
        """`text` (about this client's calls) without the URI's credentials."""
        return scrub(text, self._uri)

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Every call made inside ends within `seconds` from now (failing as an outage
        if it must), whatever its own timeout: a worker must fence itself on time."""
        with pymongo.timeout(max(seconds, 0.001)):
            yield

    @translated
    def ping(self) -> None:
        self._client.admin.command("ping")

    def _replace_index(self, collection: str, old: list[tuple[str, int]],
                       new: list[tuple[str, int]]) -> None:  # fmt: skip
        """Create the unique index `new`, dropping the unique index `old` if it is there."""
        coll = self._db[collection]
        for name, info in coll.index_information().items():
            if [tuple(k) for k in info["key"]] == old and info.get("unique"):
                coll.drop_index(name)
        coll.create_index(new, unique=True)

    def _ensure_ttl(self, collection: str, key: str, seconds: int) -> None:
        coll = self._db[collection]
        try:
            coll.create_index(key, expireAfterSeconds=seconds)
        except OperationFailure as exc:
            if exc.code not in INDEX_OPTIONS_CONFLICT:
                raise
            # JOB_TTL_DAYS changed since the index was made: replace the index.
            for name, info in coll.index_information().items():
                if [k for k, _ in info["key"]] == [key]:
                    coll.drop_index(name)
            coll.create_index(key, expireAfterSeconds=seconds)

