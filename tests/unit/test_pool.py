"""ConsumerPool: each slot's life from a table, and spawning, reuse, recycling, reaping,
stalls and memory, with stand-in processes (no servers, no processes)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest

from orchestrator import config
from orchestrator.metrics import Meter
from orchestrator.models import Assignment, QueueRecord
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason
from orchestrator.roles.worker.pool import (
    STALL_SECONDS,
    TRANSITIONS,
    ConsumerPool,
    InvalidTransition,
    SlotEvent,
    SlotState,
    transition,
)
from tests.unit.stubs import Spawner, StubProcess

S, E = SlotState, SlotEvent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALLOWED = [
    (S.IDLE, E.ASSIGN, S.BUSY),
    (S.BUSY, E.STOP, S.STOPPING),
    (S.STOPPING, E.STOP, S.STOPPING),
    (S.BUSY, E.DONE, S.IDLE),
    (S.STOPPING, E.DONE, S.IDLE),
    (S.IDLE, E.RETIRE, S.RETIRING),
    (S.BUSY, E.RETIRE, S.RETIRING),
    (S.STOPPING, E.RETIRE, S.RETIRING),
    (S.RETIRING, E.RETIRE, S.RETIRING),
    (S.BUSY, E.KILL, S.KILLED),
    (S.STOPPING, E.KILL, S.KILLED),
    (S.KILLED, E.DONE, S.KILLED),
    (S.RETIRING, E.DONE, S.RETIRING),
]


@pytest.mark.parametrize(("state", "event", "after"), ALLOWED)
def test_a_slot_moves_as_the_table_says(state: SlotState, event: SlotEvent,
                                        after: SlotState) -> None:  # fmt: skip
    assert transition(state, event) is after


FORBIDDEN = [(s, e) for s, e in itertools.product(SlotState, SlotEvent)
             if (s, e, TRANSITIONS.get((s, e))) not in ALLOWED]  # fmt: skip


@pytest.mark.parametrize(("state", "event"), FORBIDDEN)
def test_every_other_move_is_refused(state: SlotState, event: SlotEvent) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, event)


def test_the_forbidden_moves_include_the_ones_that_would_lose_a_job() -> None:
    assert (S.BUSY, E.ASSIGN) in FORBIDDEN  # two jobs on one consumer
    assert (S.RETIRING, E.ASSIGN) in FORBIDDEN  # a job for a consumer on its way out
    assert (S.KILLED, E.ASSIGN) in FORBIDDEN  # a job for a consumer being killed
    assert (S.IDLE, E.KILL) in FORBIDDEN  # nothing to kill it for


# --- the pool -----------------------------------------------------------------------------


def make_pool(**overrides: str) -> tuple[ConsumerPool, Spawner]:
    settings = config.load("development", {"CONSUMER_USAGE_LIMIT": "2", **overrides})
    spawner = Spawner()
    return ConsumerPool(settings, spawner, Meter(), random.Random(1)), spawner


def queue(name: str = "q") -> QueueRecord:
    return QueueRecord(name, f"http://sqs/{name}", 4, "app:handle", id="0" * 24)


def job(n: int, name: str = "q") -> Assignment:
    return Assignment(f"http://sqs/{name}", "0" * 24, name, "w1", f"{n:024x}", T0)


def done(slot_process: StubProcess, job_id: str, reason: Reason = Reason.DRAINED) -> None:
    slot_process.report(protocol.Done(job_id, 3, 0, reason))


def test_an_idle_consumer_is_reused_and_one_past_its_usage_limit_is_recycled() -> None:
    pool, spawner = make_pool()
    slot = pool.acquire(0.0)
    assert slot is not None and len(spawner.made) == 1
    limit = slot.usage_limit  # 2 plus jitter
    for n in range(limit):
        assert pool.acquire(n) is slot  # the same consumer, once idle again
        pool.assign(slot, job(n), queue(), float(n))
        assert isinstance(spawner.made[0].channel.messages()[-1], protocol.Assign)
        done(spawner.made[0], f"{n:024x}")
        [report] = pool.receive(slot, float(n))
        assert isinstance(report, protocol.Done)
        pool.done(slot, abandoned=False)
    assert slot.state is S.RETIRING  # worn out: asked to exit
    assert isinstance(spawner.made[0].channel.messages()[-1], protocol.Exit)
    assert pool.meter.take()["fleet"]["consumerRestartsRecycled"] == 1
    assert pool.acquire(10.0) is not slot and len(spawner.made) == 2


def test_stop_is_sent_once_and_settings_only_when_they_change() -> None:
    pool, spawner = make_pool()
    slot = pool.acquire(0.0)
    assert slot is not None
    pool.assign(slot, job(1), queue(), 0.0)
    assert not pool.relay(slot, protocol.Live.of(queue()))  # unchanged: nothing sent
    assert pool.relay(slot, protocol.Live(concurrency=9))
    pool.stop(slot, Reason.FENCED)
    pool.stop(slot, Reason.RELEASED)
    sent = spawner.made[0].channel.messages()
    assert [type(m).__name__ for m in sent] == ["Assign", "Retune", "Stop"]
    assert sent[-1] == protocol.Stop(f"{1:024x}", Reason.FENCED)
    assert not pool.relay(slot, protocol.Live(concurrency=7))  # stopping: no more settings


def test_a_death_during_a_job_is_reported_and_makes_the_next_spawn_wait() -> None:
    pool, spawner = make_pool()
    for n in range(3):
        slot = pool.acquire(100.0 * n)
        assert slot is not None, f"spawn {n} refused"
        pool.assign(slot, job(n), queue(), 100.0 * n)
        spawner.made[-1].exit(-9)
        [(dead, status)] = pool.exited()
        death = pool.remove(dead, status, 100.0 * n, count_death=True)
        assert (death.job, death.how, death.expected) == (job(n), "signal SIGKILL", False)
    assert pool.acquire(200.0) is None  # third death in a row: backing off
    assert pool.next_spawn_at > 200.0
    pool.started()  # a consumer got going: no more waiting after the next death
    assert pool.spawn_failures == 0


def test_a_retired_consumer_that_exits_cleanly_is_no_death() -> None:
    pool, spawner = make_pool()
    slot = pool.acquire(0.0)
    assert slot is not None
    pool.retire_idle()
    spawner.made[0].exit(0)
    [(gone, status)] = pool.exited()
    death = pool.remove(gone, status, 1.0, count_death=True)
    assert death.expected and pool.slots == {} and pool.meter.take() == {}


def test_a_consumer_silent_for_the_stall_time_is_killed_with_its_reason() -> None:
    pool, spawner = make_pool()
    slot = pool.acquire(0.0)
    assert slot is not None
    pool.assign(slot, job(1), queue(), 0.0)
    spawner.made[0].report(protocol.Progress(f"{1:024x}", 1, 0))
    pool.receive(slot, 20.0)  # a report: alive at 20
    pool.watch(20.0 + STALL_SECONDS)
    assert slot.state is S.BUSY
    pool.watch(20.1 + STALL_SECONDS)
    assert slot.state is S.KILLED and slot.kill_reason == "stalled: no report for 30 s"
    assert not spawner.made[0].tree_killed  # its handler processes go with its channel


@pytest.mark.parametrize(("rss", "state", "tree_killed"), [
    (100.0, S.BUSY, False), (600.0, S.STOPPING, False), (1100.0, S.KILLED, True),
])  # fmt: skip
def test_memory_over_the_limit_stops_the_job_and_twice_over_kills(
    rss: float, state: SlotState, tree_killed: bool
) -> None:
    pool, spawner = make_pool(CONSUMER_MAX_RSS_MB="512")
    slot = pool.acquire(0.0)
    assert slot is not None
    pool.assign(slot, job(1), queue(), 0.0)
    spawner.made[0].rss_mb = rss
    pool.watch_memory()
    assert slot.state is state and spawner.made[0].tree_killed is tree_killed
    if state is S.STOPPING:
        assert spawner.made[0].channel.messages()[-1] == protocol.Stop(f"{1:024x}",
                                                                        Reason.MEMORY)
        spawner.made[0].rss_mb = 100.0
        pool.done(slot, abandoned=False)  # replaced once its job ended
        assert slot.state is S.RETIRING


def test_a_consumer_that_abandoned_handlers_exits_by_itself() -> None:
    pool, spawner = make_pool()
    slot = pool.acquire(0.0)
    assert slot is not None
    pool.assign(slot, job(1), queue(), 0.0)
    pool.done(slot, abandoned=True)
    assert slot.state is S.RETIRING
    assert not isinstance(spawner.made[0].channel.messages()[-1], protocol.Exit)


def test_a_report_that_is_not_ours_is_logged_and_skipped() -> None:
    pool, spawner = make_pool()
    slot = pool.acquire(0.0)
    assert slot is not None
    spawner.made[0].channel.inbox += [{"type": "hello"}, protocol.encode(protocol.Exit())]
    assert pool.receive(slot, 1.0) == []


@pytest.mark.parametrize("how", ["kill", "retire"])
def test_a_done_that_crosses_a_kill_or_an_exit_keeps_its_outcome(how: str) -> None:
    """The consumer reported its job done just before we killed it (stalled, memory) or
    told it to exit (shutdown): the outcome is the one it reported; its exit follows."""
    pool, spawner = make_pool(CONSUMER_MAX_RSS_MB="512")
    slot = pool.acquire(0.0)
    assert slot is not None
    pool.assign(slot, job(1), queue(), 0.0)
    if how == "kill":
        spawner.made[0].rss_mb = 2000.0
        pool.watch_memory()
    else:
        pool.retire(slot)
    state = slot.state
    assert pool.done(slot, abandoned=False) == job(1)
    assert slot.state is state and slot.job is None
    spawner.made[0].exit(-9 if how == "kill" else 0)
    [(gone, status)] = pool.exited()
    assert pool.remove(gone, status, 1.0, count_death=True).job is None  # closed once
