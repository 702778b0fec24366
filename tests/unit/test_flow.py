"""Flow: what may start, in which order, and which SQS calls follow (no servers)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine.batching import WAIT_CAP
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.invoke import Result
from orchestrator.roles.consumer.engine.outgoing import DELETE_MAX_WAIT
from orchestrator.roles.consumer.engine.params import FlowParams
from orchestrator.roles.consumer.engine.receives import Ask
from orchestrator.roles.consumer.engine.running import Work


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def raw(mid: str, group: str | None = None, count: int = 1) -> SqsMessage:
    attributes = {"ApproximateReceiveCount": str(count)}
    if group is not None:
        attributes["MessageGroupId"] = group
    return SqsMessage(mid, f"r-{mid}", mid, attributes)


def flow(clock: Clock | None = None, **options: Any) -> Flow:
    """A Flow built whole, with the production defaults (max_receives included)."""
    settings: dict[str, Any] = {"limit": 2, "fifo": False, "visibility": 30, **options}
    return Flow(FlowParams(**settings), clock=clock or Clock())


def receive(f: Flow, *raws: SqsMessage, asked: int | None = None) -> None:
    """A receive of the messages, as the runner makes one."""
    ask = f.plan_receive() or Ask(asked or max(len(raws), 1), f.clock(), False)
    f.add(ask, list(raws))


def ids(work: Work | None) -> list[str]:
    assert work is not None
    return [h.message_id for h in work.messages]


def ok(work: Work) -> Result:
    return Result(frozenset(), None, 0.01)


def failed(work: Work, *mids: str) -> Result:
    return Result(frozenset(mids or ids(work)), "ValueError: boom", 0.01)


def test_at_most_limit_run_and_a_freed_slot_starts_the_next() -> None:
    f = flow(limit=2)
    receive(f, raw("a"), raw("b"), raw("c"))
    first, second = f.take(), f.take()
    assert ids(first) + ids(second) == ["a", "b"]
    assert f.take() is None  # both slots taken: "c" is held
    assert first is not None
    f.finished(first, ok(first))
    assert ids(f.take()) == ["c"]
    assert [h.message_id for h in f.take_io(0, everything=True).deletes] == ["a"]


def test_a_failure_is_retried_and_counted() -> None:
    f = flow()
    receive(f, raw("a"), raw("b"))
    a, b = f.take(), f.take()
    assert a is not None and b is not None
    f.finished(a, failed(a))
    f.finished(b, ok(b))
    io = f.take_io(0, everything=True)
    assert [(h.message_id, err) for h, err, _ in io.retries] == [("a", "ValueError: boom")]
    assert [h.message_id for h in io.deletes] == ["b"]
    assert f.counts() == (1, 1)


def test_fifo_runs_one_message_per_group_in_order() -> None:
    f = flow(limit=5, fifo=True)
    receive(f, raw("a1", "A"), raw("a2", "A"), raw("b1", "B"), raw("a3", "A"))
    a1, b1 = f.take(), f.take()
    assert (ids(a1), ids(b1)) == (["a1"], ["b1"])
    assert f.take() is None  # A is running a1; B has nothing more: free slots stay free
    assert a1 is not None
    f.finished(a1, ok(a1))
    a2 = f.take()
    assert ids(a2) == ["a2"] and f.take() is None
    assert a2 is not None
    f.finished(a2, ok(a2))
    assert ids(f.take()) == ["a3"]


def test_a_fifo_message_received_again_while_held_runs_once_in_its_place() -> None:
    # moto can give one message to two receives under way at once; SQS, after its
    # visibility ran out. A second copy would run after the group's later messages.
    f = flow(limit=5, fifo=True)
    receive(f, raw("a1", "A"), raw("a2", "A"))
    a1 = f.take()
    again = SqsMessage("a1", "r-a1-again", "a1", {"MessageGroupId": "A",
                                                     "ApproximateReceiveCount": "2"})  # fmt: skip
    receive(f, again, raw("a2", "A"))  # running and held: both already here
    assert a1 is not None and len(f.held) == 1
    f.finished(a1, ok(a1))
    a2 = f.take()
    assert ids(a2) == ["a2"] and a2 is not None
    f.finished(a2, ok(a2))
    assert f.take() is None  # no third run
    deletes = f.take_io(f.clock(), everything=True).deletes
    assert [d.receipt for d in deletes] == ["r-a1-again", "r-a2"]  # the newest receipts


def test_a_fifo_failure_hands_back_its_group_and_holds_no_other() -> None:
    f = flow(limit=5, fifo=True)
    receive(f, raw("a1", "A"), raw("a2", "A"), raw("a3", "A"), raw("b1", "B"), raw("b2", "B"))
    a1, b1 = f.take(), f.take()
    assert a1 is not None and b1 is not None
    f.finished(a1, failed(a1))
    io = f.take_io(0, everything=True)
    assert [h.message_id for h, _, _ in io.retries] == ["a1"]
    assert sorted(h.message_id for h in io.returns) == ["a2", "a3"]  # never run out of order
    f.finished(b1, ok(b1))
    assert ids(f.take()) == ["b2"]
    assert f.take() is None  # nothing of A is held any more: SQS redelivers a1 first


def test_a_batch_waits_for_its_window_then_starts_partial() -> None:
    clock = Clock()
    f = flow(clock, limit=10, batch_size=3, batch_window=1.0)
    receive(f, raw("a"), raw("b"))
    assert f.take() is None
    assert f.window_wait() == pytest.approx(1.0)
    clock.now += 1.0
    work = f.take()
    assert ids(work) == ["a", "b"] and work is not None and work.batch


def test_a_full_batch_starts_at_once_and_counts_its_length_against_the_limit() -> None:
    f = flow(limit=4, batch_size=3, batch_window=5.0)
    receive(f, raw("a"), raw("b"), raw("c"), raw("d"), raw("e"))
    assert ids(f.take()) == ["a", "b", "c"]
    assert f.take() is None  # one slot left: "d" waits (for the window or more slots)


def test_a_batch_result_deletes_the_succeeded_and_retries_the_failed() -> None:
    f = flow(limit=10, batch_size=3)
    receive(f, raw("a"), raw("b"), raw("c"))
    work = f.take()
    assert work is not None
    f.finished(work, failed(work, "b"))
    io = f.take_io(0, everything=True)
    assert [h.message_id for h in io.deletes] == ["a", "c"]
    assert [h.message_id for h, _, _ in io.retries] == ["b"]


def test_a_fifo_batch_keeps_groups_together_and_in_order() -> None:
    f = flow(limit=10, fifo=True, batch_size=10)
    receive(f, raw("a1", "A"), raw("b1", "B"), raw("a2", "A"), raw("b2", "B"), raw("a3", "A"))
    work = f.take()
    assert ids(work) == ["a1", "a2", "a3", "b1", "b2"]
    assert work is not None
    f.finished(work, failed(work, "a2"))
    io = f.take_io(0, everything=True)
    assert [h.message_id for h in io.deletes] == ["a1", "b1", "b2"]
    assert [h.message_id for h, _, _ in io.retries] == ["a2"]
    # a3 ran after a2 failed: not deleted, so that A runs again in order from a2
    assert [h.message_id for h in io.returns] == ["a3"]


def test_close_hands_held_messages_back_and_starts_nothing_more() -> None:
    f = flow(limit=3)
    receive(f, raw("a"), raw("b"))
    running = [f.take()]  # "b" is held: not yet picked up by a handler
    under_way = f.plan_receive()  # a receive that was under way when the run stopped
    assert under_way is not None
    f.close()
    assert f.take() is None
    assert [h.message_id for h in f.take_io(0).returns] == ["b"]
    f.add(under_way, [raw("late")])
    assert [h.message_id for h in f.take_io(0).returns] == ["late"]
    for work in running:
        assert work is not None and not f.idle()
        f.finished(work, ok(work))
    assert f.idle()


def test_a_lowered_limit_hands_back_the_newest_held_beyond_the_new_bound() -> None:
    f = flow(limit=5)
    receive(f, *(raw(f"m{i}") for i in range(10)))
    for _ in range(5):
        assert f.take() is not None
    f.set_limit(2)  # 5 run, 0 slots free: at most prefetch(2) = 2 may be held
    returned = [h.message_id for h in f.take_io(0).returns]
    assert sorted(returned) == ["m7", "m8", "m9"]


def test_a_partial_delete_batch_waits_a_little_for_more() -> None:
    clock = Clock()
    f = flow(clock, limit=5)
    receive(f, raw("a"), raw("b"), raw("c"))
    a, b = f.take(), f.take()
    assert a is not None and b is not None
    f.finished(a, ok(a))
    assert f.take_io(clock.now).deletes == []  # others still run: wait for a fuller batch
    clock.now += DELETE_MAX_WAIT
    assert [h.message_id for h in f.take_io(clock.now).deletes] == ["a"]


def test_drained_after_empty_polls_in_a_row_with_nothing_in_flight() -> None:
    clock = Clock()
    f = flow(clock, drain_empty_polls=2)
    first, second = f.plan_receive(), f.plan_receive()  # two under way at once
    assert first is not None
    f.add(first, [])
    if second is not None:
        f.add(second, [])
    assert not f.drained()  # concurrent empty polls count once
    clock.now += 1
    ask = f.plan_receive()
    assert ask is not None
    f.add(ask, [])
    assert f.drained()


def test_abandoned_work_is_never_deleted_even_if_it_returns() -> None:
    f = flow()
    receive(f, raw("a"))
    work = f.take()
    assert work is not None
    stuck = f.abandon()
    assert [h.message_id for h in stuck] == ["a"]
    f.finished(work, ok(work))
    assert f.take_io(0, everything=True).deletes == []


def test_running_and_held_messages_get_their_visibility_extended() -> None:
    clock = Clock()
    f = flow(clock, limit=1, visibility=10)
    receive(f, raw("a"), raw("b"))
    assert f.take() is not None
    assert f.due_extensions(clock.now) == []
    clock.now += 5  # half the visibility timeout
    assert sorted(f.due_extensions(clock.now)) == ["r-a", "r-b"]
    assert f.due_extensions(clock.now) == []


def test_an_adaptive_flow_halves_on_backoff_and_hands_back_what_it_no_longer_may_hold() -> None:
    clock = Clock()
    f = flow(clock, limit=8, adaptive=True)
    receive(f, *(raw(f"m{i}") for i in range(12)), asked=16)
    works = [f.take() for _ in range(8)]
    assert all(works) and f.take() is None and f.load() == (8, 8)
    first = works[0]
    assert first is not None
    f.finished(first, Result(frozenset(ids(first)), "Backoff: slow down", 0.5, backoff=True))
    assert f.load() == (4, 7)  # halved; the 7 still running finish
    assert f.take() is None  # 7 running > 4: nothing starts
    io = f.take_io(clock(), everything=True)
    assert [(h.message_id, hide) for h, _, hide in io.retries] == [("m0", None)]
    assert io.returns == []  # 4 held: no free slot, but within the new prefetch of 4
    f.finished(works[1], Result(frozenset(), None, 0.5))  # slow handlers: a small hold
    f.finished(works[2], Result(frozenset(ids(works[2])), "Backoff", 0.5, backoff=True))
    clock.now += 1.1  # a second later: halved again, to 2; what it holds is over 2 + 2
    f.finished(works[3], Result(frozenset(ids(works[3])), "Backoff", 0.5, backoff=True))
    assert f.load() == (2, 4)
    assert len(f.take_io(clock(), everything=True).returns) == 2
    clock.now += 1.5
    f.adapt(clock())
    assert f.load()[0] == 3  # a clean second: one more


def test_fast_handlers_hold_more_and_a_lowered_limit_hands_back_beyond_it() -> None:
    """docs/design.md §5: as many held as cover a receive round trip at the handling
    rate, capped at 10 x concurrency; slow handlers keep min(10, concurrency)."""
    clock = Clock()
    f = flow(clock, limit=2)
    receive(f, *(raw(f"m{i}") for i in range(4)))
    assert f.plan_receive() is None  # 2 slots + 2 held: the small hold before any result
    work = f.take()
    assert work is not None
    f.finished(work, Result(frozenset(), None, 0.0001))  # 20,000/s x 20 ms: hold 10 x 2
    ask = f.plan_receive()
    assert ask is not None and ask.count == 10
    f.add(ask, [raw(f"n{i}") for i in range(10)])
    assert len(f.held) == 13  # beyond the 2 free slots and the old hold of 2
    f.set_limit(1)  # 1 free slot + a hold of 10 x 1: the 2 newest go back
    assert [h.message_id for h in f.take_io(clock(), everything=True).returns] == ["n9", "n8"]


def test_a_rate_limited_flow_starts_one_message_per_token() -> None:
    clock = Clock()
    f = flow(clock, limit=5, rate=2.0)
    receive(f, *(raw(f"m{i}") for i in range(5)))
    assert f.take() is not None and f.take() is None  # one token to begin with
    assert f.window_wait() == pytest.approx(0.5)  # the next token, at 2 a second
    clock.now += 0.5
    assert f.take() is not None and f.take() is None


def test_a_slow_rates_wait_is_capped_so_waiting_threads_look_again() -> None:
    """1e-10/s meant a wait of 1e10 s: Condition.wait overflowed and killed every handler
    thread. Every computed wait is capped (a slow token is looked at again meanwhile)."""
    clock = Clock()
    f = flow(clock, limit=5, rate=0.001)
    receive(f, raw("m0"), raw("m1"))
    assert f.take() is not None and f.take() is None
    assert f.window_wait() == WAIT_CAP


def test_a_standard_message_received_again_while_held_or_running_runs_once() -> None:
    """Two receives under way can both get one message (SQS allows it, moto does it): a
    demo of 500 counted 501, one seq starting twice 23 ms apart. The copy takes the
    newer receipt and is counted, never started beside the first."""
    f = flow(limit=5)
    receive(f, raw("m1"), raw("m2"))
    m1 = f.take()
    assert ids(m1) == ["m1"] and m1 is not None
    again = [SqsMessage(mid, f"r-{mid}-again", mid, {"ApproximateReceiveCount": "2"})
             for mid in ("m1", "m2")]  # fmt: skip
    receive(f, *again, raw("m3"))  # m1 runs, m2 is held: both already here
    assert f.duplicates == 2
    started = [ids(w) for w in iter(f.take, None)]
    assert started == [["m2"], ["m3"]]  # m1 is not started a second time
    f.finished(m1, ok(m1))
    deletes = f.take_io(f.clock(), everything=True).deletes
    assert [d.receipt for d in deletes] == ["r-m1-again"]  # the newest receipt


def test_a_rate_limited_fifo_flow_spends_no_token_while_every_group_is_busy() -> None:
    """A handler looking for work while its group still runs starts nothing: it must not
    spend a token either, or a FIFO queue would run below its rate."""
    clock = Clock()
    f = flow(clock, limit=5, fifo=True, rate=1.0)
    receive(f, raw("a1", "A"), raw("a2", "A"))
    a1 = f.take()
    assert ids(a1) == ["a1"] and a1 is not None
    clock.now += 1.0  # the next token
    assert f.take() is None  # A runs a1: a2 waits for it, not for a token
    f.finished(a1, ok(a1))
    assert ids(f.take()) == ["a2"]  # the token is still there
