"""Store against the embedded MongoDB-protocol server, over a real socket."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest

from orchestrator.backends.store import Store
from orchestrator.errors import QueueExists, QueueNotFound, ServiceUnavailable
from orchestrator.models import QueueRecord, utcnow


def record(name: str = "q1", url: str | None = None) -> QueueRecord:
    return QueueRecord(
        name=name, queue_url=url or f"http://sqs/{name}", concurrency=2, handler="m:f"
    )


def index_keys(store: Store, collection: str) -> dict[tuple[str, ...], dict[str, object]]:
    info = store._db[collection].index_information()
    return {tuple(k for k, _ in v["key"]): v for v in info.values()}


def test_indexes_of_the_contract_exist(store: Store) -> None:
    queues = index_keys(store, "queues")
    assert queues[("name",)]["unique"] and queues[("queueUrl",)]["unique"]
    assignments = index_keys(store, "assignments")
    assert assignments[("queueUrl", "shard")]["unique"]  # one assignment per shard (issue 14)
    assert ("queueUrl",) not in assignments
    assert ("worker",) in assignments
    jobs = index_keys(store, "jobs")
    assert ("status", "createdAt") in jobs and ("queueUrl", "status") in jobs
    assert jobs[("lastModified",)]["expireAfterSeconds"] == store.job_ttl_seconds == 5 * 86400
    assert index_keys(store, "locks")[("expiresAt",)]["expireAfterSeconds"] == 3600


def test_the_unique_queue_index_of_assignments_before_shards_is_replaced(store: Store) -> None:
    coll = store._db["assignments"]
    coll.drop_index([("queueUrl", 1), ("shard", 1)])
    coll.create_index("queueUrl", unique=True)  # as a store from before shards made it
    store.ensure_indexes()
    keys = index_keys(store, "assignments")
    assert ("queueUrl",) not in keys and keys[("queueUrl", "shard")]["unique"]
    queue = store.insert_queue(QueueRecord("q", "http://sqs/q", 4, "app:handle"))
    assert store.assign(queue, "w1", utcnow(), shard=0)
    assert store.assign(queue, "w2", utcnow(), shard=1)  # a second shard of the queue
    assert store.assign(queue, "w3", utcnow(), shard=1) is None  # never two of one shard


def test_ensure_indexes_is_idempotent(store: Store) -> None:
    store.ensure_indexes()
    store.ensure_indexes()
    assert len(index_keys(store, "jobs")) == 5  # _id + four


def test_ttl_follows_a_changed_setting(store: Store, endpoints, settings) -> None:  # type: ignore[no-untyped-def]
    other = Store(endpoints.mongodb_uri, settings.mongodb_name, job_ttl_days=1)
    try:
        other.ensure_indexes()
        assert index_keys(other, "jobs")[("lastModified",)]["expireAfterSeconds"] == 86400
    finally:
        other.close()


def test_queue_round_trip_keeps_types(store: Store) -> None:
    created = store.insert_queue(record())
    assert created.id and isinstance(created.created_at, datetime)
    updated = store.update_queue("q1", {"paused": True, "concurrency": 7})
    # The embedded server's fast path would store these as 1 and a string (docs/design.md §13).
    assert updated.paused is True
    assert isinstance(updated.updated_at, datetime) and updated.updated_at.tzinfo is not None
    assert updated.created_at == created.created_at
    assert store.get_queue("q1") == updated
    raw = store._db["queues"].find_one({"name": "q1"})
    assert raw is not None and raw["paused"] is True and isinstance(raw["updatedAt"], datetime)


def test_duplicate_name_or_url_is_refused(store: Store) -> None:
    store.insert_queue(record("a", "http://sqs/shared"))
    with pytest.raises(QueueExists, match="'a' already exists"):
        store.insert_queue(record("a", "http://sqs/other"))
    with pytest.raises(QueueExists):
        store.insert_queue(record("b", "http://sqs/shared"))
    assert [q.name for q in store.list_queues()] == ["a"]


def test_missing_queue(store: Store) -> None:
    assert store.find_queue("nope") is None
    with pytest.raises(QueueNotFound, match="'nope' does not exist"):
        store.get_queue("nope")
    with pytest.raises(QueueNotFound):
        store.update_queue("nope", {"paused": True})
    assert store.delete_queue("nope") is False


def test_list_is_sorted_and_delete_removes(store: Store) -> None:
    for name in ("b", "c", "a"):
        store.insert_queue(record(name))
    assert [q.name for q in store.list_queues()] == ["a", "b", "c"]
    assert store.delete_queue("b") is True
    assert [q.name for q in store.list_queues()] == ["a", "c"]


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store(f"mongodb://u:secret@127.0.0.1:{port}/", "x", job_ttl_days=1, timeout_ms=300)
    with pytest.raises(ServiceUnavailable) as info:
        store.list_queues()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "secret" not in message
    assert "Topology" not in message


def test_a_lock_is_taken_once_renewed_released_and_taken_over_when_expired(
    store: Store,
) -> None:
    from datetime import timedelta

    now = utcnow()
    later = now + timedelta(seconds=60)
    assert store.take_lock("dlq:q", "a", now, later) is None
    assert store.take_lock("dlq:q", "b", now, later) == ("a", later)
    assert store.take_lock("dlq:other", "b", now, later) is None  # locks are per name
    assert store.renew_lock("dlq:q", "a", later + timedelta(seconds=5))
    assert not store.renew_lock("dlq:q", "b", later)
    store.release_lock("dlq:q", "b")  # not b's: stays
    assert store.take_lock("dlq:q", "b", now, later) is not None
    store.release_lock("dlq:q", "a")
    assert store.take_lock("dlq:q", "b", now, later) is None
    # b crashed: its lock has expired by c's clock, and c takes it over; a renewal by b
    # then fails, and so does its release
    after = later + timedelta(seconds=1)
    assert store.take_lock("dlq:q", "c", after, after + timedelta(seconds=60)) is None
    assert not store.renew_lock("dlq:q", "b", after)
    store.release_lock("dlq:q", "b")
    assert store.take_lock("dlq:q", "d", after, after)[0] == "c"  # type: ignore[index]
