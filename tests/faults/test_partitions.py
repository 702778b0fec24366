"""Partial failures between hosts, each host a network namespace (tests/faults/net.py).

Test settings: HEARTBEAT_INTERVAL 0.5 s, WORKER_TIMEOUT 5 s (a worker fences itself
after 3.5 s without a heartbeat), LEASE_TTL 4 s. Every scenario ends with the
ledger's checks: nothing lost, duplicates only of messages in flight at the fault,
never two hosts running one queue's handlers at once, nothing left open.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Cluster, check_ledger, event_time
from tests.process.conftest import holds_for, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.faults]
SLOW = "tests.handlers:slow_record"


def owner(cluster: Cluster, queue: str) -> str | None:
    """The host whose worker holds the queue's assignment."""
    worker = next((a.worker for a in cluster.store.assignments() if a.queue_name == queue), None)
    hosts = {d.events("worker.registered")[0]["worker_id"]: host
             for host, d in cluster.daemons.items() if d.events("worker.registered")}  # fmt: skip
    return hosts.get(worker) if worker else None


def busy_queue(cluster: Cluster, name: str, count: int) -> None:
    """A queue of `count` 100 ms messages; a message a handler started and did not
    delete is back within 10 s."""
    cluster.admin.create(name, handler=SLOW, concurrency=2, visibility_timeout=10)
    cluster.admin.send(name, count, body=None)


def lasts(cluster: Cluster, start: float, seconds: float) -> None:
    """Hold the fault until `seconds` after `start`, every daemon staying up."""
    holds_for(lambda: all(d.proc.poll() is None for d in cluster.daemons.values()),
              max(0.0, start + seconds - time.time()), "every daemon stays up")  # fmt: skip


def running_on(cluster: Cluster, queue: str, host: str, after: float = 0.0) -> bool:
    """Whether `host` started a handler of `queue` after `after` (wall clock)."""
    return any(r["queue"] == queue and r["host"] == host and r["start"] > after
               for r in cluster.ledger())  # fmt: skip


def test_a_worker_cut_from_mongodb_fences_itself_and_its_queue_moves(cluster: Cluster) -> None:
    cluster.start("m1", "M")
    w1 = cluster.start("w1", "W")
    busy_queue(cluster, "a", 400)
    wait_for(lambda: owner(cluster, "a") == "w1" and running_on(cluster, "a", "w1"), 60,
             "w1 to run the queue")  # fmt: skip
    w2 = cluster.start("w2", "W")
    wait_for(lambda: w2.events("worker.registered"), 30, "w2 to register")

    cut = time.time()
    cluster.net.cut("w1", "mongo")  # w1 still reaches SQS
    [fenced] = wait_for(lambda: w1.events("worker.fenced"), 15, "w1 to fence itself")
    wait_for(lambda: running_on(cluster, "a", "w2", cut), 30, "the queue to move to w2")
    cluster.net.heal("w1", "mongo")
    healed = time.time()

    wait_for(lambda: w1.events("worker.declared_dead"), 30, "w1 to learn it was declared dead")
    check_ledger(cluster, {"a": 400}, cut, healed)
    # It never ran its old job again: whatever w1 ran after rejoining belongs to a job it
    # was given after the heal (a slow run may see the queue come back to w1 once w2's
    # job ends after ASSIGNMENT_MAX_SECONDS; its consumer process may be the old one).
    late = [r["start"] for r in cluster.ledger() if r["host"] == "w1" and r["start"] > healed + 1]
    w1_ids = {e["worker_id"] for e in w1.events("worker.registered")}
    rejoined = [j.started_at.timestamp() for j in cluster.store.jobs(limit=1000)
                if j.queue_name == "a" and j.worker_id in w1_ids and j.started_at
                and j.created_at.timestamp() > healed]  # fmt: skip
    assert not late or (rejoined and min(rejoined) <= min(late)), \
        "w1 ran its old assignment after rejoining"
    assert fenced["silent_seconds"] <= 3.5 + 0.5


def test_a_worker_cut_from_sqs_backs_off_heartbeats_on_and_resumes(cluster: Cluster) -> None:
    master = cluster.start("m1", "M")
    w1 = cluster.start("w1", "W")
    busy_queue(cluster, "b", 200)
    wait_for(lambda: running_on(cluster, "b", "w1"), 60, "w1 to run the queue")

    cut = time.time()
    cluster.net.cut("w1", "sqs")
    wait_for(lambda: [e for e in w1.events("service.unavailable") if e.get("role") == "consumer"],
             20, "the consumer to report SQS unavailable")  # fmt: skip
    holds_for(lambda: not master.events("worker.dead"), 10, "w1 is not judged dead")  # 2 x 5 s
    cluster.net.heal("w1", "sqs")
    healed = time.time()

    check_ledger(cluster, {"b": 200}, cut, healed)
    assert not w1.events("worker.fenced") and not w1.events("consumer.stalled")


def test_the_leader_cut_from_mongodb_hands_over_within_the_lease(cluster: Cluster) -> None:
    m1 = cluster.start("m1", "M")
    wait_for(lambda: m1.events("master.leading"), 30, "m1 to lead")
    m2 = cluster.start("m2", "M")
    wait_for(lambda: m2.events("master.started"), 30, "m2 to stand by")
    cluster.start("w1", "W")
    busy_queue(cluster, "c", 200)
    wait_for(lambda: running_on(cluster, "c", "w1"), 60, "the queue to run")

    cut = time.time()
    cluster.net.cut("m1", "mongo")
    [took] = wait_for(lambda: m2.events("master.leading"), 4 + 5, "m2 to lead")
    lead_after = event_time(took) - cut
    assert lead_after <= 4 + 2, f"m2 led {lead_after:.1f} s after the cut (LEASE_TTL 4)"
    # m1 stopped assigning before its lease could have run out: its last assignment
    # came before the cut, and no queue was ever assigned twice (the unique index).
    assert all(event_time(e) < cut + 4 for e in m1.events("queue.assigned"))
    busy_queue(cluster, "d", 50)  # new work is assigned by the new leader
    wait_for(lambda: m2.events("queue.assigned"), 30, "m2 to assign new work")
    cluster.net.heal("m1", "mongo")
    healed = time.time()
    wait_for(lambda: m1.events("master.standby") or m1.events("master.lease_lost"), 30,
             "m1 to step down")  # fmt: skip
    holds_for(lambda: len(m1.events("master.leading")) == 1, 5, "m1 stands by once healed")
    check_ledger(cluster, {"c": 200, "d": 50}, cut, healed)


def test_the_leader_cut_from_sqs_keeps_the_lead_and_its_queues_run(cluster: Cluster) -> None:
    """The choice: a leader that cannot reach SQS keeps the lease (SQS down for everyone
    must not make masters trade the lease back and forth); running assignments carry
    on, because workers reach SQS themselves; new queues wait for the link."""
    m1 = cluster.start("m1", "M")
    wait_for(lambda: m1.events("master.leading"), 30, "m1 to lead")
    m2 = cluster.start("m2", "M")
    cluster.start("w1", "W")
    busy_queue(cluster, "e", 300)
    wait_for(lambda: running_on(cluster, "e", "w1"), 60, "the queue to run")

    cut = time.time()
    cluster.net.cut("m1", "sqs")
    busy_queue(cluster, "f", 30)  # a new queue: m1's depth checks of it fail while cut
    wait_for(lambda: m1.events("service.unavailable"), 20, "m1 to find SQS unreachable")
    holds_for(lambda: running_on(cluster, "e", "w1", time.time() - 2), 10,
              "the assigned queue keeps running")  # fmt: skip
    assert not m2.events("master.leading") and not m1.events("master.lease_lost")
    assert not [a for a in cluster.store.assignments() if a.queue_name == "f"]  # it waits
    cluster.net.heal("m1", "sqs")
    healed = time.time()
    check_ledger(cluster, {"e": 300, "f": 30}, cut, healed)


def test_a_worker_host_isolated_for_30_s(cluster: Cluster) -> None:
    master = cluster.start("m1", "M")
    w1 = cluster.start("w1", "W")
    busy_queue(cluster, "g", 450)
    wait_for(lambda: running_on(cluster, "g", "w1"), 60, "w1 to run the queue")
    cluster.start("w2", "W")

    cut = time.time()
    cluster.net.isolate("w1")
    wait_for(lambda: master.events("worker.dead"), 15, "the master to judge w1 dead")
    wait_for(lambda: running_on(cluster, "g", "w2", cut), 30, "w2 to take the queue")
    lasts(cluster, cut, 30)
    cluster.net.rejoin("w1")
    healed = time.time()
    wait_for(lambda: w1.events("worker.declared_dead"), 30, "w1 to learn it was replaced")
    check_ledger(cluster, {"g": 450}, cut, healed)


def test_the_mongodb_host_isolated_for_30_s(cluster: Cluster) -> None:
    cluster.start("m1", "M")
    w1 = cluster.start("w1", "W")
    busy_queue(cluster, "h", 250)
    wait_for(lambda: running_on(cluster, "h", "w1"), 60, "the queue to run")

    cut = time.time()
    cluster.net.isolate("mongo")
    wait_for(lambda: w1.events("worker.fenced"), 15, "the worker to fence itself")
    lasts(cluster, cut, 30)
    cluster.net.rejoin("mongo")
    healed = time.time()
    wait_for(lambda: running_on(cluster, "h", "w1", healed), 60, "work to resume")
    check_ledger(cluster, {"h": 250}, cut, healed)

