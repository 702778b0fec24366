"""The Store's daemon queries (assignments, jobs, workers, lease) on the embedded server."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.backends.store import Store
from orchestrator.models import ConsumerStats, QueueRecord, WorkerRecord, utcnow


def queue(store: Store, name: str = "q") -> QueueRecord:
    return store.insert_queue(QueueRecord(name=name, queue_url=f"http://sqs/{name}",
                                          concurrency=2, handler="m:f"))  # fmt: skip


def test_assign_once_then_release(store: Store) -> None:
    q = queue(store)
    now = utcnow()
    job_id = store.assign(q, "w1", now)
    assert job_id is not None
    assert store.assign(q, "w2", now) is None  # the unique queueUrl index
    [a] = store.assignments("w1")
    assert (a.queue_name, a.job_id, a.queue_id) == ("q", job_id, q.id)
    job = store.job(job_id)
    assert job and job.status == "queued" and job.worker_id == "w1"
    store.release(job_id)  # nx-27017 once matched nothing here (ObjectId equality)
    assert store.assignments() == []
    assert store.assign(q, "w2", now) is not None


def test_job_lifecycle_and_first_end_wins(store: Store) -> None:
    q = queue(store)
    now = utcnow()
    job_id = store.assign(q, "w1", now)
    assert job_id
    store.job_started(job_id, 11, 22, now)
    store.job_progress(job_id, 5, 1, now)
    running = store.job(job_id)
    assert running and (running.status, running.consumer_pid, running.message_count) == (
        "running", 22, 5,
    )  # fmt: skip
    store.job_ended(job_id, "completed", now, handled=9, failed=1, reason="drained")
    store.job_ended(job_id, "failed", now, handled=0, failed=0, reason="late")
    store.job_progress(job_id, 100, 100, now)
    done = store.job(job_id)
    assert done and (done.status, done.message_count, done.end_reason) == (
        "completed",
        9,
        "drained",
    )
    assert store.job_counts() == {"completed": 1}


def test_interrupt_and_release_a_worker(store: Store) -> None:
    now = utcnow()
    jobs = [store.assign(queue(store, n), "dead", now) for n in ("a", "b")]
    store.assign(queue(store, "c"), "alive", now)
    gone = store.release_worker("dead", now, "worker stopped")
    assert sorted(a.queue_name for a in gone) == ["a", "b"]
    assert sorted(a.job_id for a in gone) == sorted(j for j in jobs if j)
    assert [a.worker for a in store.assignments()] == ["alive"]
    assert store.job_counts() == {"interrupted": 2, "queued": 1}
    assert store.interrupt_jobs([j for j in jobs if j], now, "again") == 0  # already closed


def test_worker_heartbeat_keeps_types_and_reports_absence(store: Store) -> None:
    now = utcnow()
    store.register_worker(WorkerRecord("h:1:a", "h", 1, now, now, 5))
    later = now + timedelta(seconds=3)
    stats = [ConsumerStats(9, "q", 31.5, 2.0)]
    assert store.heartbeat("h:1:a", later, stats, "active") is True
    [w] = store.workers()
    assert w.heartbeat_at == later and w.consumers == tuple(stats)
    store.delete_worker("h:1:a")
    assert store.heartbeat("h:1:a", later, [], "active") is False


def test_lease_has_one_holder_and_changes_with_every_renewal(store: Store) -> None:
    expires = utcnow() + timedelta(seconds=10)
    assert store.create_lease("m1", expires) is True
    assert store.create_lease("m2", expires) is False  # one holder
    assert store.renew_lease("m2", expires) is False
    assert store.renew_lease("m1", expires) is True
    lease = store.lease()
    assert lease and (lease.holder, lease.version) == ("m1", 2)  # what standbys watch change
    assert store.take_lease("m2", "m1", 1, expires) is False  # not as m2 last saw it
    assert store.take_lease("m2", "m1", 2, expires) is True
    assert store.take_lease("m3", "m1", 2, expires) is False  # of two takers, one wins
    assert store.renew_lease("m1", expires) is False
    store.drop_lease("m1")  # not the holder: no effect
    assert (lease := store.lease()) and lease.holder == "m2"
    store.drop_lease("m2")
    assert store.lease() is None


def test_a_lease_written_before_versions_can_be_taken_over(store: Store) -> None:
    store._db["leases"].insert_one({"_id": "master", "holder": "old", "expiresAt": utcnow()})
    assert store.take_lease("new", "old", None, utcnow()) is True
    assert (lease := store.lease()) and lease.holder == "new"
