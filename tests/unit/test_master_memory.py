"""Master.tick on the in-memory backends, with chosen times: leadership, liveness and
assignment without servers."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from orchestrator import config, policy
from orchestrator.backends.memory import MemorySqs, MemoryStore
from orchestrator.errors import ServiceUnavailable
from orchestrator.models import QueueRecord, Share, WorkerRecord
from orchestrator.roles.master.master import Master

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = config.load("development", {"WORKER_TIMEOUT": "10", "LEASE_TTL": "9",
                                       "MASTER_INTERVAL": "1"})  # fmt: skip


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Fleet:
    """Two in-memory backends, queues and workers on them, and masters over them."""

    def __init__(self) -> None:
        self.store, self.sqs = MemoryStore(), MemorySqs()

    def master(self) -> Master:
        return Master(SETTINGS, self.store, self.sqs)

    def queue(self, name: str, messages: int = 0, paused: bool = False) -> QueueRecord:
        url, _ = self.sqs.create_queue(name, visibility_timeout=30)
        if messages:
            self.sqs.send_batch(url, ["x"] * messages)
        return self.store.insert_queue(QueueRecord(name, url, 5, "app:handle", paused=paused))

    def beat(self, worker: str, now: datetime, max_load: int = 5) -> None:
        """The worker heartbeats (its document changes) at `now`."""
        self.store.register_worker(WorkerRecord(worker, "h", 1, T0, now, max_load))

    def placed(self) -> dict[str, str]:
        return {a.queue_name: a.worker for a in self.store.assignments()}


def test_one_master_leads_and_a_standby_takes_over_only_after_the_lease_went_unrenewed() -> None:
    fleet = Fleet()
    m1, m2 = fleet.master(), fleet.master()
    m1.tick(at(0))
    m2.tick(at(0))
    assert (m1.leading, m2.leading) == (True, False)
    for t in range(1, 9):  # m1 renews every LEASE_TTL/3: m2 sees the lease change
        m1.tick(at(t))
        m2.tick(at(t))
    assert not m2.leading
    for t in range(9, 30):  # m1 stopped: m2 waits a whole LEASE_TTL of silence
        m2.tick(at(t))
        if m2.leading:
            break
    lease = fleet.store.lease()
    assert m2.leading and lease is not None and lease.holder == m2.id
    # m1 renewed every LEASE_TTL/3 (0, 3, 6): m2 saw the last change at 6, then waited
    # LEASE_TTL of silence on its own clock, taking over within a cycle of it.
    assert 6 + 9 <= t <= 6 + 9 + 1


def test_queues_with_messages_go_to_the_least_loaded_worker_it_saw_beat() -> None:
    fleet = Fleet()
    for name, count in (("a", 3), ("b", 3), ("empty", 0), ("p", 3)):
        fleet.queue(name, count, paused=name == "p")
    master = fleet.master()
    fleet.beat("w1", at(0), max_load=1)
    fleet.beat("stale", at(0))
    master.tick(at(0))  # first sight: nobody known to be alive yet
    assert fleet.placed() == {}
    fleet.beat("w1", at(1), max_load=1)
    master.tick(at(1))
    assert fleet.placed() == {"a": "w1"}  # w1 is full; w2 not seen yet: b waits
    fleet.beat("w2", at(1.5))
    master.tick(at(1.5))
    fleet.beat("w2", at(2))
    master.tick(at(2))
    # b went to w2 once w2 was seen to beat; never to `stale` (never seen beating),
    # and never the empty or the paused queue
    assert fleet.placed() == {"a": "w1", "b": "w2"}
    assert {j.status for j in fleet.store.job_docs.values()} == {"queued"}


def test_a_worker_silent_for_worker_timeout_is_reaped_and_its_queues_freed() -> None:
    fleet = Fleet()
    fleet.queue("a", 3)
    master = fleet.master()
    for t in range(0, 3):
        fleet.beat("w1", at(t))
        master.tick(at(t))
    [assignment] = fleet.store.assignments()
    for t in range(3, 13):  # w1 stops beating at 2
        master.tick(at(t))
        assert fleet.store.assignments(), f"reaped at {t}, before WORKER_TIMEOUT"
    master.tick(at(13))
    assert "w1" not in fleet.store.worker_docs and fleet.store.assignments() == []
    job = fleet.store.job(assignment.job_id)
    assert job is not None and job.status == "interrupted"
    assert job.end_reason == "worker w1 stopped heartbeating"


def test_a_failed_job_makes_the_next_assignment_wait() -> None:
    fleet = Fleet()
    fleet.queue("bad", 1)
    master = fleet.master()
    fleet.beat("w", at(0))
    master.tick(at(0))
    fleet.beat("w", at(1))
    master.tick(at(1))
    [a] = fleet.store.assignments()
    fleet.store.job_ended(a.job_id, "failed", at(1), handled=0, failed=0, reason="handler_import")
    fleet.store.release(a.job_id)
    fleet.beat("w", at(2))
    master.tick(at(2))  # learns the outcome: waits 2 s
    fleet.beat("w", at(3.9))
    master.tick(at(3.9))
    assert fleet.store.assignments() == []
    fleet.beat("w", at(4))
    master.tick(at(4))
    assert len(fleet.store.assignments()) == 1


def test_mongodb_unreachable_fails_the_cycle_and_the_master_carries_on() -> None:
    fleet = Fleet()
    master = fleet.master()
    master.tick(at(0))
    fleet.store.fail_with = ServiceUnavailable("MongoDB at memory failed: down")
    with pytest.raises(ServiceUnavailable):
        master.tick(at(3))
    assert master.leading  # until its lease may have run out
    fleet.store.fail_with = None
    master.tick(at(4))
    assert master.leading


def test_a_depth_check_that_fails_leaves_the_others_recorded_and_the_cycle_goes_on() -> None:
    fleet = Fleet()
    bad, good = fleet.queue("bad"), fleet.queue("good")
    depth = fleet.sqs.depth

    def failing(url: str) -> object:
        if url == bad.queue_url:
            raise ServiceUnavailable("SQS at memory failed: timeout")
        return depth(url)

    fleet.sqs.depth = failing  # type: ignore[method-assign,assignment]
    master = fleet.master()
    fleet.beat("w", at(0))
    with capture_logs() as logs:
        master.tick(at(0))  # checks run before any worker is seen alive (it shows depths)
        fleet.beat("w", at(1))
        master.tick(at(1))  # the cycle goes on: SQS failing must not hold the lease up
    # Logged once for the outage (master.leading, at INFO, is captured or not depending on
    # the log level an earlier in-process CLI test configured: the test env's is WARNING).
    assert [e["event"] for e in logs if e["event"] != "master.leading"] == [
        "service.unavailable"]
    schedules = master.placement.schedules
    assert schedules[good.queue_url].idle_delay == 2  # found empty: looked at later
    assert schedules.get(bad.queue_url) is None or schedules[bad.queue_url].due(at(1))
    assert master.leading


def test_a_slow_sqs_never_holds_the_cycle_up_and_late_answers_count() -> None:
    """A depth check that hangs (SQS cut off) must not stop the cycle from renewing the
    lease; its answer, when it comes, is used by a later cycle."""
    fleet = Fleet()
    slow = fleet.queue("slow", 2)
    depth, release = fleet.sqs.depth, threading.Event()

    def hanging(url: str) -> object:
        release.wait(10)
        return depth(url)

    fleet.sqs.depth = hanging  # type: ignore[method-assign,assignment]
    master = fleet.master()
    fleet.beat("w", at(0))
    master.tick(at(0))
    fleet.beat("w", at(1))
    started = time.monotonic()
    master.tick(at(1))
    assert time.monotonic() - started < SETTINGS.master_interval  # waited its budget only
    assert fleet.store.assignments() == [] and slow.queue_url in master.placement.checking
    release.set()
    master.placement.checking[slow.queue_url].result(timeout=5)
    fleet.beat("w", at(2))
    master.tick(at(2))
    assert [a.queue_name for a in fleet.store.assignments()] == ["slow"]


# --- priorities, preemption and shards ---------------------------------------------------


def known(fleet: Fleet, master: Master, *workers: str, max_load: int = 1) -> None:
    """The master sees each worker beat twice: known to be alive."""
    for t in (0, 1):
        for w in workers:
            fleet.beat(w, at(t), max_load)
        master.tick(at(t))


def test_when_workers_are_short_the_highest_priority_goes_first() -> None:
    fleet = Fleet()
    for name, priority in (("low", 0), ("mid", 5), ("high", 9)):
        queue = fleet.queue(name, 3)
        fleet.store.update_queue(queue.name, {"priority": priority})
    master = fleet.master()
    known(fleet, master, "w")
    assert fleet.placed() == {"high": "w"}


def test_a_high_priority_queue_that_waited_preempts_the_lowest_lower_once() -> None:
    fleet = Fleet()
    fleet.queue("low", 3)
    master = fleet.master()
    known(fleet, master, "w")
    assert fleet.placed() == {"low": "w"}
    high = fleet.queue("high", 3)
    fleet.store.update_queue("high", {"priority": 9})
    for t in range(2, 7):  # it waits PREEMPT_AFTER (5 s) from its first sight at 2
        fleet.beat("w", at(t), 1)
        master.tick(at(t))
        assert not any(a.yield_requested for a in fleet.store.assignments()), t
    fleet.beat("w", at(7), 1)
    master.tick(at(7))
    [low] = fleet.store.assignments()
    assert low.queue_name == "low" and low.yield_requested
    # The worker lets it go (job completed, reason preempted): high comes next.
    fleet.store.job_ended(low.job_id, "completed", at(7), handled=1, failed=0, reason="preempted")
    fleet.store.release(low.job_id)
    fleet.beat("w", at(8), 1)
    master.tick(at(8))
    assert fleet.placed() == {"high": "w"}
    assert master.placement.schedules[high.queue_url].waiting_since is None


def test_a_queue_is_not_preempted_twice_within_a_quarter_of_the_assignment_time() -> None:
    fleet = Fleet()
    fleet.queue("low", 3)
    master = fleet.master()
    known(fleet, master, "w")
    master.placement.schedules[fleet.store.assignments()[0].queue_url] = policy.QueueSchedule(
        assigned_at=at(0), preempted_at=at(0))  # preempted a moment ago
    fleet.queue("high", 3)
    fleet.store.update_queue("high", {"priority": 9})
    for t in range(2, 20):
        fleet.beat("w", at(t), 1)
        master.tick(at(t))
    assert not fleet.store.assignments()[0].yield_requested  # 75 s must pass first


def test_a_backlog_its_shard_does_not_drain_gets_a_shard_granted_once_the_first_shrank() -> None:
    fleet = Fleet()
    queue = fleet.queue("hot", 200)
    fleet.store.update_queue("hot", {"concurrency": 6, "max_shards": 3})
    master = fleet.master()
    known(fleet, master, "w1", "w2", max_load=2)
    [first] = fleet.store.assignments()
    fleet.sqs.receive(queue.queue_url, 10, 0)  # 10 in flight: its shard runs flat out
    for t in (2, 3):
        fleet.beat("w1", at(t), 2)
        fleet.beat("w2", at(t), 2)
        master.tick(at(t))
    shards = {a.shard: a for a in fleet.store.assignments()}
    assert sorted(shards) == [0, 1] and shards[1].worker != shards[0].worker
    assert shards[0].share == Share(3, None, granted=True)  # lowered at once
    assert shards[1].share == Share(3, None, granted=False)  # waits for the first to shrink
    fleet.store.job_progress(first.job_id, 0, 0, at(4), effective=6, running=6)  # not yet
    for t in (4, 5, 6, 7):
        fleet.beat("w1", at(t), 2)
        fleet.beat("w2", at(t), 2)
        master.tick(at(t))
    assert not fleet.store.assigned[(queue.queue_url, 1)].share.granted  # type: ignore[union-attr]
    fleet.store.job_progress(first.job_id, 0, 0, at(8), effective=3, running=3)
    fleet.beat("w1", at(8), 2)
    fleet.beat("w2", at(8), 2)
    master.tick(at(8))
    assert fleet.store.assigned[(queue.queue_url, 1)].share == Share(3, None, granted=True)


def test_when_a_shard_ends_the_others_get_its_share_back() -> None:
    fleet = Fleet()
    queue = fleet.queue("hot", 1)
    fleet.store.update_queue("hot", {"concurrency": 6, "max_shards": 2})
    zero = fleet.store.assign(queue, "w1", at(0), 0, Share(3, None))
    one = fleet.store.assign(queue, "w2", at(0), 1, Share(3, None))
    assert zero and one
    master = fleet.master()
    known(fleet, master, "w1", "w2", max_load=2)
    fleet.store.release(one)
    fleet.beat("w1", at(2), 2)
    fleet.beat("w2", at(2), 2)
    master.tick(at(2))
    assert fleet.store.assigned[(queue.queue_url, 0)].share is None  # the whole queue again


def test_a_workers_load_is_charted_as_soon_as_it_is_seen_and_again_when_it_changes() -> None:
    fleet = Fleet()
    master = fleet.master()
    fleet.beat("w1", at(0))
    master.tick(at(0))  # not yet known to be alive: nothing to chart
    for t in (1, 2):
        fleet.beat("w1", at(t))
        master.tick(at(t))
    fleet.queue("a", 3)
    for t in (3, 4):
        fleet.beat("w1", at(t))
        master.tick(at(t))
    loads = [(when, points) for when, _, _, points in fleet.store.series_points if points]
    # One point when w1 was first seen alive, one when it took `a`: within one minute.
    assert loads == [(at(1), {"w1": 0}), (at(3), {"w1": 1})]


def test_with_no_worker_the_leader_still_watches_depths_at_an_idle_queues_cost() -> None:
    """A backlog must show (API, /metrics) exactly when every worker is down."""
    fleet = Fleet()
    busy, empty = fleet.queue("busy", 4), fleet.queue("empty")
    master = fleet.master()
    checks: dict[str, list[float]] = {busy.queue_url: [], empty.queue_url: []}
    depth = fleet.sqs.depth

    def counted(url: str) -> object:
        checks[url].append(now)
        return depth(url)

    fleet.sqs.depth = counted  # type: ignore[method-assign,assignment]
    for now in range(0, 3601):  # an hour of cycles, MASTER_INTERVAL 1 s, no worker at all
        master.tick(at(now))
        if now == 0:
            saved = fleet.store.depth_docs
            assert saved[busy.queue_url][0].visible == 4 and saved[empty.queue_url][0].visible == 0
    assert fleet.placed() == {}
    idle_max = SETTINGS.idle_check_max
    for url, times in checks.items():  # after the first backoff: ≤ 120 an hour
        steady = [t for t in times if t >= 600]
        assert len(steady) <= 3000 / idle_max + 1, (url, len(steady))
    gaps = [b - a for a, b in itertools.pairwise(checks[busy.queue_url])]
    assert set(gaps) == {idle_max}  # the backlog is looked at on the idle schedule


def test_a_queue_that_waited_for_room_is_placed_as_soon_as_a_worker_appears() -> None:
    fleet = Fleet()
    fleet.queue("busy", 4)
    master = fleet.master()
    for now in range(0, 4):
        master.tick(at(now))  # no worker: watched, next look at IDLE_CHECK_MAX
    fleet.beat("w", at(4))
    master.tick(at(4))  # first sight of the worker
    fleet.beat("w", at(5))
    master.tick(at(5))  # it beat: alive, and the waiting queue goes to it at once
    assert fleet.placed() == {"busy": "w"}


def test_the_leader_writes_what_the_fleet_needs_for_autoscalers() -> None:
    fleet = Fleet()
    for name in ("a", "b", "c"):
        fleet.queue(name, 3)
    master = Master(config.load("development", {"MAX_LOAD": "1"}), fleet.store, fleet.sqs)
    fleet.beat("w", at(0), max_load=1)
    master.tick(at(0))
    fleet.beat("w", at(1), max_load=1)
    master.tick(at(1))  # one queue runs on w; two wait for room
    assert len(fleet.placed()) == 1
    assert fleet.store.need is not None
    need, when = fleet.store.need
    assert (need.live_workers, need.capacity, need.wanted, need.desired_workers) == (1, 1, 3, 3)
    assert when == at(1)


def test_the_leader_writes_since_when_queues_wait_for_room_and_clears_it_once_served() -> None:
    fleet = Fleet()
    for name in ("a", "b"):
        fleet.queue(name, 3)
    master = Master(config.load("development", {"MAX_LOAD": "1"}), fleet.store, fleet.sqs)
    fleet.beat("w", at(0), max_load=1)
    master.tick(at(0))
    fleet.beat("w", at(1), max_load=1)
    master.tick(at(1))  # one runs on w; the other waits, since the first check found no room
    [(running, _)] = fleet.placed().items()
    urls = {q.name: q.queue_url for q in fleet.store.list_queues()}
    other = next(name for name in urls if name != running)
    assert fleet.store.waits == {urls[running]: None, urls[other]: at(0)}
    [held] = fleet.store.assignments()
    fleet.store.release(held.job_id)  # w's queue ended: room again
    fleet.beat("w", at(2), max_load=1)
    master.tick(at(2))
    assert fleet.placed() == {other: "w"}
    assert fleet.store.waits[urls[other]] is None  # served: it waits no more


def test_a_rung_doorbell_has_an_idle_queue_looked_at_in_the_next_cycle() -> None:
    fleet = Fleet()
    quiet = fleet.queue("quiet")
    assert quiet.id is not None
    master = fleet.master()
    for now in range(0, 40):  # empty: looked at after 2, 4, 8, 16 s, then 32 s later
        fleet.beat("w", at(now))
        master.tick(at(now))
    next_look = master.placement.schedule(quiet.queue_url).check_at
    assert next_look is not None and next_look > at(50)
    fleet.sqs.send_batch(quiet.queue_url, ["x"])  # sent around the product: no ring
    fleet.beat("w", at(40))
    master.tick(at(40))
    assert fleet.placed() == {}  # it waits for its idle schedule
    fleet.store.ring_doorbell(quiet.id, at(40.5))  # what `queue send` does after sending
    fleet.beat("w", at(41))
    master.tick(at(41))
    assert fleet.placed() == {"quiet": "w"}


@pytest.mark.parametrize(("wanted", "max_load", "desired"),
                         [(0, 5, 1), (1, 5, 1), (5, 5, 1), (6, 5, 2), (3, 1, 3), (11, 5, 3)])
def test_desired_workers(wanted: int, max_load: int, desired: int) -> None:
    assert policy.desired_workers(wanted, max_load) == desired
