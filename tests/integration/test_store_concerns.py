"""Write and read concerns, as the commands the store sends show them (docs/mongodb.md).

The embedded server accepts the concerns and ignores them (a single server has no
failover to show); what is checked here is that each command carries the right one,
recorded by a real pymongo CommandListener, and that the server accepts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import monitoring

from orchestrator.backends.store import Store
from orchestrator.config import Endpoints, Settings
from orchestrator.metrics import Meter
from orchestrator.models import ConsumerStats, QueueRecord, Share, utcnow

pytestmark = pytest.mark.timeout(60)

MAJORITY = {"w": "majority"}


class Recorder(monitoring.CommandListener):
    """Every command a client starts, as sent."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def sent(self, name: str, collection: str) -> list[dict[str, Any]]:
        """The commands `name` (insert, update, delete, find…) on `collection`, then forget
        everything recorded so far."""
        found = [c for n, c in self.commands if n == name and c.get(name) == collection]
        self.commands.clear()
        return found


@pytest.fixture
def recorded(settings: Settings, endpoints: Endpoints) -> Iterator[tuple[Store, Recorder]]:
    recorder = Recorder()
    store = Store(endpoints.mongodb_uri, settings.mongodb_name,
                  job_ttl_days=settings.job_ttl_days, listeners=[recorder])  # fmt: skip
    store.ensure_indexes()
    recorder.commands.clear()
    yield store, recorder
    store.close()


def concerns(commands: list[dict[str, Any]]) -> list[Any]:
    assert commands, "no such command was sent"
    return [c.get("writeConcern") for c in commands]


def test_lease_writes_wait_for_a_majority_and_the_lease_is_read_from_one(
    recorded: tuple[Store, Recorder],
) -> None:
    store, rec = recorded
    later = utcnow() + timedelta(seconds=30)
    assert store.create_lease("m1", later)
    assert concerns(rec.sent("insert", "leases")) == [MAJORITY]
    assert store.renew_lease("m1", later)
    assert concerns(rec.sent("update", "leases")) == [MAJORITY]
    lease = store.lease()
    assert lease is not None and lease.holder == "m1"
    [find] = rec.sent("find", "leases")
    assert find["readConcern"] == {"level": "majority"}
    assert store.take_lease("m2", "m1", lease.version, later)
    assert concerns(rec.sent("update", "leases")) == [MAJORITY]
    store.drop_lease("m2")
    assert concerns(rec.sent("delete", "leases")) == [MAJORITY]
    assert store.lease() is None


def test_lock_writes_wait_for_a_majority_and_locks_are_read_from_one(
    recorded: tuple[Store, Recorder],
) -> None:
    store, rec = recorded
    now = utcnow()
    later = now + timedelta(seconds=30)
    assert store.take_lock("dlq:q", "a", now, later) is None
    assert concerns(rec.sent("insert", "locks")) == [MAJORITY]
    assert store.take_lock("dlq:q", "b", now, later) == ("a", later)
    [find] = rec.sent("find", "locks")
    assert find["readConcern"] == {"level": "majority"}
    assert store.renew_lock("dlq:q", "a", later)
    assert concerns(rec.sent("update", "locks")) == [MAJORITY]
    store.release_lock("dlq:q", "a")
    assert concerns(rec.sent("delete", "locks")) == [MAJORITY]


def test_assignment_writes_and_job_ends_wait_for_a_majority(
    recorded: tuple[Store, Recorder],
) -> None:
    store, rec = recorded
    now = utcnow()
    queue = store.insert_queue(QueueRecord("q", "http://sqs/q", 4, "app:handle"))
    rec.commands.clear()
    job = store.assign(queue, "w1", now)
    assert job is not None
    inserts = [c for n, c in rec.commands if n == "insert"]
    assert {c["insert"] for c in inserts} == {"assignments", "jobs"}  # the job with it
    assert concerns(inserts) == [MAJORITY, MAJORITY]
    rec.commands.clear()
    store.set_share(job, Share(2, None))
    store.request_yield(job, now)
    assert concerns(rec.sent("update", "assignments")) == [MAJORITY, MAJORITY]
    store.job_ended(job, "completed", now, handled=3, failed=0, reason="drained")
    assert concerns(rec.sent("update", "jobs")) == [MAJORITY]
    store.release(job)
    assert concerns(rec.sent("delete", "assignments")) == [MAJORITY]
    assert store.assignments() == [] and store.job(job).status == "completed"  # type: ignore[union-attr]

    second = store.assign(queue, "w1", now)
    assert second is not None
    rec.commands.clear()
    assert [a.job_id for a in store.release_worker("w1", now, "gone")] == [second]
    assert concerns(rec.sent("update", "jobs")) == [MAJORITY]  # interrupt_jobs
    store.release_worker("w1", now, "gone")
    assert concerns(rec.sent("delete", "assignments")) == [MAJORITY]
    assert store.job(second).status == "interrupted"  # type: ignore[union-attr]


def test_frequent_figures_are_written_with_w1(recorded: tuple[Store, Recorder]) -> None:
    """Heartbeats, progress, metrics and chart points: acknowledged by the primary alone
    (explicitly: since MongoDB 5.0 a replica set's own default is a majority)."""
    store, rec = recorded
    now = utcnow()
    queue = store.insert_queue(QueueRecord("q", "http://sqs/q", 4, "app:handle"))
    job = store.assign(queue, "w1", now)
    assert job is not None
    rec.commands.clear()
    store.heartbeat("w1", now, [ConsumerStats(123, "q", 50.0, 1.0)], "active")
    assert concerns(rec.sent("update", "workers")) == [{"w": 1}]
    store.job_progress(job, 5, 1, now)
    assert concerns(rec.sent("update", "jobs")) == [{"w": 1}]
    meter = Meter()
    meter.message("q", 0.01, ok=True)
    store.flush_meter(meter)
    writes = [(n, c) for n, c in rec.commands if n == "update"]
    assert {c["update"] for _, c in writes} == {"metrics", "series"}
    assert concerns([c for _, c in writes]) == [{"w": 1}] * len(writes)


# The commands the role in docs/mongodb.md ("A role with exactly the privileges used")
# authorizes; handshakes, ping and endSessions need no privilege.
GRANTED = {"find", "getMore", "aggregate", "insert", "update", "findAndModify", "delete",
           "createIndexes", "listIndexes", "dropIndexes", "killCursors", "ping", "endSessions"}


def test_the_store_sends_only_commands_the_documented_role_grants(
    settings: Settings, endpoints: Endpoints
) -> None:
    """A new kind of command (distinct, listCollections, a $out stage…) must be added to
    the role in docs/mongodb.md, or a deployment with that role fails where this passes."""
    rec = Recorder()
    store = Store(endpoints.mongodb_uri, settings.mongodb_name,
                  job_ttl_days=settings.job_ttl_days, listeners=[rec])  # fmt: skip
    try:
        store._db["assignments"].create_index("queueUrl", unique=True)  # an outdated index
        rec.commands.clear()
        store.ensure_indexes()  # lists and drops it
        now = utcnow()
        queue = store.insert_queue(QueueRecord("q", "http://sqs/q", 4, "app:handle"))
        store.update_queue("q", {"paused": True})
        job = store.assign(queue, "w1", now)
        assert job is not None
        store.job_counts()
        list(store.queue_pages_by_id(None, 1))
        store.create_lease("m1", now)
        store.lease()
        store.take_lock("dlq:q", "a", now, now)
        store.take_lock("dlq:q", "b", now, now)  # expired: taken over
        store.release_lock("dlq:q", "b")
        store.release_worker("w1", now, "gone")
        store.delete_queue("q")
        store.ping()
        sent = {name for name, _ in rec.commands}
        assert {"listIndexes", "dropIndexes", "findAndModify", "aggregate"} <= sent
        assert sent <= GRANTED, sent - GRANTED
    finally:
        store.close()
