"""The pure policies, from tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import policy
from orchestrator.policy import WorkerLoad

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def w(id_: str, load: int, max_load: int = 5, age: int = 0) -> WorkerLoad:
    return WorkerLoad(id_, load, max_load, T0 - timedelta(seconds=age))


@pytest.mark.parametrize(
    ("workers", "chosen"),
    [
        ([], None),
        ([w("a", 5)], None),  # full
        ([w("a", 5), w("b", 6, 6)], None),  # all full, whatever their max
        ([w("a", 0)], "a"),
        ([w("a", 2), w("b", 1)], "b"),  # fewest assignments
        ([w("a", 1), w("b", 1, age=5)], "b"),  # tie: oldest heartbeat first
        ([w("b", 1), w("a", 1)], "a"),  # tie on heartbeat too: id
        ([w("a", 4, 4), w("b", 4, 10)], "b"),  # a is at its own max
        ([w("a", 0, 1), w("b", 3)], "a"),
    ],
)
def test_pick_worker(workers: list[WorkerLoad], chosen: str | None) -> None:
    assert policy.pick_worker(workers) == chosen


@pytest.mark.parametrize(
    ("previous", "maximum", "idle_for", "delay"),
    [
        (None, 30, 0, 1),  # busy a moment ago: every second
        (1, 30, 59, 1),
        (1, 30, 61, 2),  # idle for a minute: doubling
        (2, 30, 65, 4),
        (16, 30, 100, 30),
        (30, 30, 1000, 30),
        (None, 30, None, 2),  # never seen busy: straight to doubling
        (2, 30, None, 4),
        (None, 0.5, 0, 0.5),
        (None, 0.5, None, 0.5),
    ],
)
def test_idle_backoff(
    previous: float | None, maximum: float, idle_for: float | None, delay: float
) -> None:
    assert policy.next_idle_delay(previous, maximum, idle_for) == delay


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (50, 60)]
)
def test_failed_job_delay(failures: int, delay: float) -> None:
    assert policy.failed_job_delay(failures) == delay


@pytest.mark.parametrize(
    ("count", "visibility"),
    [(0, 1), (1, 1), (2, 2), (3, 4), (5, 16), (10, 512), (11, 900), (1000, 900)],
)
def test_retry_visibility(count: int, visibility: int) -> None:
    assert policy.retry_visibility(count) == visibility


@pytest.mark.parametrize(
    ("empty", "in_flight", "threshold", "drained"),
    [(0, 0, 2, False), (1, 0, 2, False), (2, 0, 2, True), (5, 1, 2, False), (1, 0, 1, True)],
)
def test_is_drained(empty: int, in_flight: int, threshold: int, drained: bool) -> None:
    assert policy.is_drained(empty, in_flight, threshold) is drained


@pytest.mark.parametrize(
    ("base", "jitter", "limit"), [(5, 0.0, 5), (5, 0.99, 7), (4, 0.5, 5), (1, 0.99, 1)]
)
def test_usage_limit_jitter(base: int, jitter: float, limit: int) -> None:
    assert policy.usage_limit(base, jitter) == limit


def test_usage_limits_spread_over_consumers() -> None:
    limits = {policy.usage_limit(10, j / 100) for j in range(100)}
    assert min(limits) == 10 and max(limits) == 15


@pytest.mark.parametrize(
    ("uses", "limit", "rss", "recycle"),
    [(4, 5, 100, False), (5, 5, 100, True), (1, 5, 600, True), (1, 5, 512, False)],
)
def test_needs_recycling(uses: int, limit: int, rss: float, recycle: bool) -> None:
    assert policy.needs_recycling(uses, limit, rss, 512) is recycle


@pytest.mark.parametrize(
    ("rss", "action"),
    [(100, None), (200, None), (200.1, "stop"), (399.9, "stop"), (400, "kill"), (5000, "kill")],
)
def test_memory_action(rss: float, action: str | None) -> None:
    assert policy.memory_action(rss, 200) == action


def state(**fields: Any) -> policy.FlowState:
    base: dict[str, Any] = {"limit": 5, "running": 0, "held": 0, "receiving": 0, "receives": 0,
                            "backlog": False, "handler_s": 0.0, "rtt_s": 0.01}  # fmt: skip
    return policy.FlowState(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "max_receives", "expected"),
    [
        ({}, 1, 10),  # nothing in flight: a full batch fits (5 slots + 5 held)
        ({"running": 5, "held": 5}, 1, 0),  # full: slots busy and prefetch held
        ({"limit": 1}, 1, 2),  # 1 slot + 1 held
        ({"limit": 100, "running": 100}, 1, 10),  # prefetch is at most one batch
        ({"receives": 1, "receiving": 5}, 1, 0),  # one poll at a time ...
        ({"receives": 1, "receiving": 10, "limit": 20, "backlog": True}, 2, 10),  # ... or backlog
        ({"receives": 1, "receiving": 10, "limit": 20}, 2, 0),  # no backlog: one poll
        # All 5 slots busy, nothing held or coming: the next free slot would find nothing.
        # 300 ms handlers: a round trip with one slot idle costs < 2 % of their time, and
        # waiting for it makes the receive one fuller (6, not 5): wait.
        ({"running": 5, "handler_s": 0.3}, 1, 0),
        ({"running": 4, "handler_s": 0.3}, 1, 6),  # a slot is idle: ask at once
        # 50 ms handlers: that idle round trip would cost 3 %: ask for the prefetch now
        ({"running": 5, "handler_s": 0.05}, 1, 5),
        ({"running": 5}, 1, 5),  # instant handlers: likewise
        ({"running": 5, "held": 1, "handler_s": 0.05}, 1, 0),  # held ones cover the next free
        ({"running": 7, "handler_s": 0.05}, 1, 0),  # over a lowered limit: not yet
    ],
)
def test_receive_size(fields: dict[str, Any], max_receives: int, expected: int) -> None:
    assert policy.receive_size(state(**fields), max_receives) == expected


@pytest.mark.parametrize(
    ("limit", "handler_s", "rtt_s", "visibility_s", "expected"),
    [
        (10, 0.0, 0.02, 30, 10),  # no handler finished yet: min(10, limit)
        (3, 0.0, 0.02, 30, 3),
        (10, 0.05, 0.02, 30, 10),  # 50 ms handlers: 4 per round trip, the small hold
        (5, 0.3, 0.02, 30, 5),  # slow handlers: unchanged
        (10, 0.005, 0.02, 30, 40),  # 5 ms: 2,000/s x 20 ms round trip
        (10, 0.0001, 0.02, 30, 100),  # instant: capped at 10 x limit
        (2, 0.0001, 0.02, 30, 20),
        (10, 0.005, 0.02, 0.01, 10),  # 2,000/s over half of 10 ms: never below the base
        (100, 0.01, 0.5, 1, 1000),  # 10,000/s x 0.5 s round trip = 5,000: 10 x limit
        (100, 0.01, 0.5, 0.1, 500),  # but half the visibility covers only 500
    ],
)
def test_fast_handlers_hold_what_covers_a_round_trip(
        limit: int, handler_s: float, rtt_s: float, visibility_s: float, expected: int) -> None:
    assert policy.prefetch(limit, handler_s, rtt_s, visibility_s) == expected


def test_fast_handlers_keep_full_batches_coming_while_every_slot_is_busy() -> None:
    fast = {"limit": 10, "running": 10, "handler_s": 0.0001, "rtt_s": 0.02, "backlog": True}
    # 10 slots busy, 40 held, 30 coming: 100 may be held, so a fifth receive of 10 starts
    assert policy.receive_size(state(**fast, held=40, receiving=30, receives=3), 8) == 10
    assert policy.receive_size(state(**fast, held=60, receiving=40, receives=4), 8) == 0
    # the same queue with 50 ms handlers holds one batch and asks for nothing more
    assert policy.receive_size(state(**{**fast, "handler_s": 0.05}, held=10), 8) == 0


@pytest.mark.parametrize(("failures", "base", "cap", "wait"), [
    (1, 1, 30, 1), (2, 1, 30, 2), (5, 1, 30, 16), (6, 1, 30, 30), (0, 1, 30, 1),
    (1, 0.5, 30, 0.5), (4, 0.5, 30, 4), (1, 2, 60, 2), (10_000, 2, 60, 60),
])  # fmt: skip
def test_backoff_doubles_from_base_to_cap(failures: int, base: float, cap: float,
                                          wait: float) -> None:  # fmt: skip
    assert policy.backoff(failures, base, cap) == wait


T = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def test_a_queue_schedule_from_first_check_to_a_failed_job_and_back() -> None:
    s = policy.QueueSchedule()
    assert s.due(T) and s.overdue_key() == policy.NEVER  # never looked at: first
    s = policy.checked(s, T, has_messages=False, idle_max=30)
    assert (s.check_at, s.idle_delay, s.due(at(1.9)), s.due(at(2))) == (at(2), 2, False, True)
    s = policy.checked(s, at(2), has_messages=False, idle_max=30)
    assert s.idle_delay == 4
    s = policy.checked(s, at(6), has_messages=True, idle_max=30)
    assert (s.check_at, s.idle_delay) == (None, None)  # work: may be assigned at once
    s = policy.assigned(s, at(6), "job1")
    assert (s.job_id, s.fairness_key()) == ("job1", at(6))
    s = policy.seen_assigned(s)
    s = policy.released(s, at(10), failed=True)
    assert (s.job_id, s.failures, s.check_at) == (None, 1, at(12))  # 2 s after a failure
    s = policy.released(policy.assigned(s, at(12), "job2"), at(13), failed=True)
    assert (s.failures, s.check_at) == (2, at(17))  # then 4 s
    s = policy.released(policy.assigned(s, at(17), "job3"), at(18), failed=False)
    assert s.failures == 0
    s = policy.checked(s, at(18), has_messages=False, idle_max=30)
    assert s.idle_delay == 1  # busy a moment ago: looked at every second for a minute
