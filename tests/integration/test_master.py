"""Master.tick driven with chosen times against the real servers."""

from __future__ import annotations

import dataclasses
import socket
from datetime import datetime, timedelta

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.errors import ServiceUnavailable
from orchestrator.models import WorkerRecord, utcnow
from orchestrator.roles.master import placement
from orchestrator.roles.master.master import Master
from orchestrator.roles.master.placement import RESYNC_AFTER


@pytest.fixture(autouse=True)
def patient_checks(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """A tick waits up to 10 s for its queue scan and depth checks (not a part of the
    test's MASTER_INTERVAL): these tests drive single ticks and must see the answers
    however loaded the machine is (a daemon's next cycle would collect late ones)."""
    monkeypatch.setattr(placement, "SCAN_BUDGET", 10 / settings.master_interval)
    monkeypatch.setattr(placement, "CHECK_BUDGET", 10 / settings.master_interval)


def admin_for(settings: Settings, store: Store, sqs: Sqs) -> QueueAdmin:
    return QueueAdmin(settings, lambda: store, lambda: sqs)


def worker(
    store: Store, id_: str, age: float = 0, max_load: int = 5, at: datetime | None = None
) -> None:
    """A worker document whose last heartbeat was `age` seconds before `at` (default now)."""
    beat = (at or utcnow()) - timedelta(seconds=age)
    store.register_worker(WorkerRecord(id_, "h", 1, beat, beat, max_load))


def known_alive(master: Master, now: datetime, ages: dict[str, float], max_load: int = 5) -> None:
    """Register workers (id → heartbeat age at `now`) and let `master` see each of them
    beat once: a master assigns only to workers it has seen beating (not by comparing
    their clocks with its own)."""
    for id_, age in ages.items():
        worker(master.store, id_, age + 0.001, max_load, at=now)
    master.tick(now)  # first sight: present, not yet known to be alive
    for id_, age in ages.items():
        worker(master.store, id_, age, max_load, at=now)


def due(master: Master, url: str) -> datetime:
    """When the master looks at the queue's depth next."""
    check_at = master.placement.schedules[url].check_at
    assert check_at is not None
    return check_at


def test_assigns_non_empty_queues_to_the_least_loaded_worker(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    for name in ("full1", "full2", "empty"):
        admin.create(name)
    admin.send("full1", 3)
    admin.send("full2", 3)
    master = Master(settings, store, sqs)
    now = utcnow()
    known_alive(master, now, {"w-old": 1, "w-new": 0})
    master.tick(now)
    placed = {a.queue_name: a.worker for a in store.assignments()}
    # Ties go to the oldest heartbeat, then loads even out.
    assert placed == {"full1": "w-old", "full2": "w-new"}
    assert {j.status for j in store.jobs()} == {"queued"}
    empty = admin.store.get_queue("empty").queue_url
    assert master.placement.schedules[empty].idle_delay == 2  # never busy


def test_empty_queue_is_checked_less_and_less_often(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    settings = dataclasses.replace(settings, idle_check_max=8)
    admin = admin_for(settings, store, sqs)
    url = admin.create("idle").queue_url
    master = Master(settings, store, sqs)
    now = utcnow()
    known_alive(master, now, {"w": 0.5})
    delays = []
    for _ in range(5):
        worker(store, "w", at=now)  # alive at the simulated time
        master.tick(now)
        delays.append(master.placement.schedules[url].idle_delay)
        now = due(master, url)  # tick exactly when the next check is due
    assert delays == [2, 4, 8, 8, 8]  # doubling up to IDLE_CHECK_MAX
    sqs.send_batch(url, ["x"])  # around the product: no doorbell (queue send rings it)
    worker(store, "w", at=now)
    master.tick(now - timedelta(seconds=0.5))  # not due yet: not looked at
    assert store.assignments() == []
    master.tick(now)
    [a] = store.assignments()
    # looked at again as soon as the assignment ends
    assert master.placement.schedules[url].check_at is None

    # The job ends and the queue is empty again: it was busy a moment ago, so for a
    # minute it is checked every second (work often comes back soon), then doubling.
    store.job_ended(a.job_id, "completed", now, handled=1, failed=0, reason="drained")
    store.release(a.job_id)
    sqs.purge(url)
    released = now
    delays = []
    while now - released < timedelta(seconds=70):
        worker(store, "w", at=now)
        master.tick(now)
        delays.append(master.placement.schedules[url].idle_delay)
        now = due(master, url)
    assert set(delays[:55]) == {1} and delays[-3:] == [2, 4, 8]


def test_paused_queues_and_full_workers_get_nothing(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    for name in ("a", "b", "p"):
        admin.create(name)
        admin.send(name, 1)
    admin.set_paused("p", True)
    master, now = Master(settings, store, sqs), utcnow()
    known_alive(master, now, {"small": 0}, max_load=1)
    master.tick(now)
    assert [a.queue_name for a in store.assignments()] == ["a"]  # b waits for capacity


def test_dead_worker_is_reaped_and_its_queue_reassigned(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    queue = admin.create("q")
    admin.send("q", 1)
    now = utcnow()
    worker(store, "dead", at=now)
    worker(store, "alive", at=now)
    job_id = store.assign(queue, "dead", now)
    master = Master(settings, store, sqs)
    master.tick(now)  # a new master first watches for WORKER_TIMEOUT before judging
    assert {w.id for w in store.workers()} == {"dead", "alive"}
    later = now + timedelta(seconds=settings.worker_timeout + 1)
    worker(store, "alive", at=later)  # it beat; "dead" did not
    master.tick(later)
    assert [w.id for w in store.workers()] == ["alive"]
    old = store.job(job_id or "")
    assert (
        old
        and old.status == "interrupted"
        and "dead stopped heartbeating" in (old.end_reason or "")
    )
    assert [(a.queue_name, a.worker) for a in store.assignments()] == [("q", "alive")]


def test_after_its_own_outage_a_master_waits_before_reaping(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    now = utcnow()
    master = Master(settings, store, sqs)
    worker(store, "w", at=now)
    master.tick(now)
    master.outage()  # MongoDB was unreachable: heartbeats could not be written either
    later = now + timedelta(seconds=settings.worker_timeout + 1)
    master.tick(later)
    assert [w.id for w in store.workers()] == ["w"]  # not declared dead yet
    master.tick(later + timedelta(seconds=settings.worker_timeout))
    assert store.workers() == []  # still silent after a full watched timeout


def test_only_the_lease_holder_assigns(settings: Settings, store: Store, sqs: Sqs) -> None:
    admin = admin_for(settings, store, sqs)
    admin.create("q")
    admin.send("q", 1)
    worker(store, "w")
    leader, standby = Master(settings, store, sqs), Master(settings, store, sqs)
    now = utcnow()
    leader._lead(now)
    standby.tick(now)
    assert store.assignments() == [] and not standby.leading
    leader.resign()
    worker(store, "w")  # a heartbeat the standby sees
    standby.tick(now + timedelta(seconds=settings.lease_ttl / 3))  # its next renewal
    assert standby.leading and len(store.assignments()) == 1


def test_leader_steps_down_when_another_took_the_expired_lease(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    master = Master(settings, store, sqs)
    now = utcnow()
    assert master._lead(now)
    store.drop_lease(master.id)  # its lease expired and another master took it
    store.create_lease("usurper", now + timedelta(seconds=settings.lease_ttl * 2))
    assert not master._lead(now + timedelta(seconds=settings.lease_ttl + 1))


def test_leader_that_cannot_renew_stops_before_its_lease_expires(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    master = Master(settings, store, sqs)
    now = utcnow()
    assert master._lead(now)
    with socket.socket() as s:  # MongoDB unreachable: a real client on a closed port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    master.store = Store(f"mongodb://127.0.0.1:{port}/", "x", job_ttl_days=1, timeout_ms=200)
    ttl = settings.lease_ttl
    with pytest.raises(ServiceUnavailable):  # the cycle fails: the loop backs off
        master._lead(now + timedelta(seconds=ttl / 3))
    assert master.leading  # renewal failed, the lease is still good
    with pytest.raises(ServiceUnavailable):
        master._lead(now + timedelta(seconds=ttl * 0.8))
    assert not master.leading  # it stopped before the lease can expire


def test_a_queue_whose_job_failed_is_retried_with_backoff(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    admin.create("bad")
    admin.send("bad", 1)
    master = Master(settings, store, sqs)
    now = utcnow()
    known_alive(master, now, {"w": 0.5})
    waits = []
    for _ in range(3):
        worker(store, "w", at=now)
        master.tick(now)
        [a] = store.assignments()
        store.job_ended(a.job_id, "failed", now, handled=0, failed=0, reason="handler_import")
        store.release(a.job_id)  # what the worker does after a failed job
        master.tick(now)  # learns the outcome
        waits.append(master.placement.schedules[a.queue_url].idle_delay)
        early = due(master, a.queue_url) - timedelta(seconds=0.1)
        worker(store, "w", at=early)
        master.tick(early)
        assert store.assignments() == []  # not before the backoff is over
        now = due(master, a.queue_url)
    assert waits == [2, 4, 8]


def test_orphaned_open_jobs_are_closed(settings: Settings, store: Store, sqs: Sqs) -> None:
    admin = admin_for(settings, store, sqs)
    queue = admin.create("q")
    job_id = store.assign(queue, "gone", utcnow())
    assert job_id
    store.release(job_id)  # as if a worker crashed between its two writes
    later = utcnow() + timedelta(seconds=2 * settings.worker_timeout + 1)
    Master(settings, store, sqs).tick(later)
    job = store.job(job_id)
    assert job and job.status == "interrupted" and "orphaned" in (job.end_reason or "")


def test_a_queue_sqs_lost_is_recreated_once_it_has_been_missing_for_a_while(
    settings: Settings, store: Store, sqs: Sqs, daemon_sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    queue = admin.create("synced", dlq=True)
    master = Master(settings, store, daemon_sqs)  # what it calls is checked: docs/iam
    now = utcnow()
    known_alive(master, now, {"w": 0})  # queues are looked at when a worker could take them
    master.tick(now)
    sqs.delete_queue(queue.queue_url)  # SQS lost the queue (a restart without its data)
    sqs.delete_queue(queue.dlq_url or "")
    later = check_again(master, queue.queue_url, now)
    assert queue.queue_url not in sqs.list_queue_urls()  # not at once: it may be a delete
    check_again(master, queue.queue_url, later + timedelta(seconds=RESYNC_AFTER))
    assert {queue.queue_url, queue.dlq_url} <= set(sqs.list_queue_urls())


def test_a_queue_being_deleted_is_not_brought_back(
    settings: Settings, store: Store, sqs: Sqs, daemon_sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    queue = admin.create("deleting")
    master = Master(settings, store, daemon_sqs)  # what it calls is checked: docs/iam
    now = utcnow()
    known_alive(master, now, {"w": 0})
    master.tick(now)
    sqs.delete_queue(queue.queue_url)  # `queue delete`: SQS first …
    later = check_again(master, queue.queue_url, now)
    store.delete_queue("deleting")  # … then the document, while the master looks
    check_again(master, queue.queue_url, later + timedelta(seconds=RESYNC_AFTER))
    assert queue.queue_url not in sqs.list_queue_urls()
    assert all(q.name != "deleting" for q in master.placement.cache.by_id.values())


def check_again(master: Master, url: str, after: datetime) -> datetime:
    """Tick at the queue's next depth check after `after`; that time."""
    at = max(after, due(master, url)) + timedelta(milliseconds=1)
    master.tick(at)
    return at


def test_a_fresh_master_assigns_nothing_to_a_worker_already_silent_too_long(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    admin = admin_for(settings, store, sqs)
    admin.create("waiting")
    admin.send("waiting", 2)
    # left behind by a killed daemon: not reaped yet (the master has not watched it for
    # WORKER_TIMEOUT), but not known to be alive either
    worker(store, "w-stale", age=settings.worker_timeout + 1)
    master = Master(settings, store, sqs)
    master.tick(utcnow())
    assert store.assignments() == []
    worker(store, "w-live")
    master.tick(utcnow())
    assert store.assignments() == []  # present, but not yet seen to beat
    worker(store, "w-live")  # a heartbeat
    master.tick(utcnow())
    assert [a.worker for a in store.assignments()] == ["w-live"]
