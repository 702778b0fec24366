"""The Flow's parts, each alone, with chosen times and no threads: Limits, Held (FIFO
group order), Batching, Receives, Outgoing, RunningWork, Tally and Handoff (docs/design.md §5)."""

from __future__ import annotations

import threading

import pytest

from orchestrator.metrics import Meter, QueueCounts
from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine.batching import WAIT_CAP, Batching
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.handoff import Handoff
from orchestrator.roles.consumer.engine.held import Held, Received, take_newer
from orchestrator.roles.consumer.engine.invoke import Result
from orchestrator.roles.consumer.engine.limits import Limits
from orchestrator.roles.consumer.engine.outgoing import DELETE_MAX_WAIT, Outgoing
from orchestrator.roles.consumer.engine.params import FlowParams
from orchestrator.roles.consumer.engine.receives import MAX_RECEIVES, Receives
from orchestrator.roles.consumer.engine.running import RunningWork
from orchestrator.roles.consumer.engine.tally import Tally


def raw(mid: str, group: str | None = None, receipt: str | None = None) -> SqsMessage:
    attributes = {"ApproximateReceiveCount": "1"}
    if group is not None:
        attributes["MessageGroupId"] = group
    return SqsMessage(mid, receipt or f"r-{mid}", mid, attributes)


def held(*raws: SqsMessage, fifo: bool = False, at: float = 0.0) -> Held:
    h = Held(fifo)
    for r in raws:
        h.add(h.wrap(r, at, at + 15))
    return h


def mids(messages: list[Received]) -> list[str]:
    return [m.message_id for m in messages]


# --- FlowParams: built whole, production defaults -------------------------------------


def test_params_default_to_what_production_runs() -> None:
    params = FlowParams(limit=4, fifo=False, visibility=30)
    assert params.max_receives == MAX_RECEIVES == 8
    flow = Flow(FlowParams(limit=4, fifo=False, visibility=30, rate=2.0, adaptive=True))
    assert flow.limits.bucket is not None and flow.limits.aimd is not None  # from the start
    with pytest.raises(AttributeError):
        params.limit = 5  # type: ignore[misc]  # frozen: changes go through set_*


# --- Limits ---------------------------------------------------------------------------


def test_limits_hold_the_free_slots_plus_the_prefetch() -> None:
    limits = Limits(5, rate=None, adaptive=False, now=0.0)
    assert (limits.free(2), limits.may_hold(2, prefetch=5)) == (3, 3 + 5)
    assert (limits.free(5), limits.may_hold(5, prefetch=5)) == (0, 5)
    limits.set_concurrency(2)  # lowered below what runs: nothing free, the prefetch only
    assert (limits.free(5), limits.may_hold(5, prefetch=2)) == (-3, 2)


def test_limits_adaptive_halves_on_backoff_and_grows_back_by_one_a_second() -> None:
    limits = Limits(8, rate=None, adaptive=True, now=0.0)
    assert limits.current == 8
    assert limits.outcome(0.5, ok=0, failed=1, backoff=True)
    assert limits.current == 4 and limits.may_hold(4, prefetch=4) == 4
    assert not limits.adapt(1.0)  # not yet a clean second
    assert limits.adapt(1.5) and limits.current == 5
    limits.set_concurrency(3)  # the ceiling: the effective one never above it
    assert limits.current == 3
    limits.set_adaptive(False, 2.0)
    assert limits.current == 3 and not limits.outcome(2.0, 0, 1, True)


def test_limits_rate_spends_tokens_and_caps_a_start_to_a_burst() -> None:
    limits = Limits(10, rate=2.0, adaptive=False, now=0.0)
    assert limits.largest_start() == 2  # a batch is never above a burst
    assert limits.admit(1, 0.0) and not limits.admit(1, 0.0)  # one token to begin with
    assert limits.token_wait(running=0, now=0.0) == pytest.approx(0.5)
    assert limits.token_wait(running=10, now=0.0) is None  # no slot: a token frees none
    limits.set_rate(None, 0.0)
    assert limits.admit(100, 0.0) and limits.largest_start() == 10
    assert limits.token_wait(running=0, now=0.0) is None


# --- Held: FIFO group order ------------------------------------------------------------


def test_held_starts_one_message_per_fifo_group_in_arrival_order() -> None:
    h = held(raw("a1", "A"), raw("b1", "B"), raw("a2", "A"), fifo=True)
    oldest = h.oldest_startable()
    assert h.startable() == 3 and oldest is not None and oldest.message_id == "a1"
    a1 = h.pop(1, whole_groups=False)
    assert mids(a1) == ["a1"] and mids(h.pop(1, whole_groups=False)) == ["b1"]
    assert h.pop(1, whole_groups=False) == []  # A is busy with a1: a2 waits
    assert h.finished(a1, failed=set()) == ([], False)
    assert mids(h.pop(1, whole_groups=False)) == ["a2"]


def test_held_hands_back_a_failed_groups_rest_and_says_when_a_group_emptied() -> None:
    h = held(raw("a1", "A"), raw("a2", "A"), raw("a3", "A"), raw("b1", "B"), fifo=True)
    a1, b1 = h.pop(1, whole_groups=False) + h.pop(1, whole_groups=False)
    back, emptied = h.finished([a1], failed={"A"})
    assert mids(back) == ["a2", "a3"] and not emptied and len(h) == 0
    assert h.finished([b1], failed=set()) == ([], True)  # B has nothing held: delete now


def test_held_batches_keep_groups_together_and_hand_backs_take_the_newest() -> None:
    h = held(raw("a1", "A"), raw("b1", "B"), raw("a2", "A"), raw("b2", "B"), fifo=True)
    assert mids(h.take_newest(1)) == ["b2"]  # a group's tail goes first
    assert mids(h.pop(10, whole_groups=True)) == ["a1", "a2", "b1"]


def test_a_message_received_again_keeps_its_place_and_takes_the_newer_receipt() -> None:
    h = held(raw("m1"), raw("m2"))
    fresh = take_newer([raw("m2", receipt="r-m2-again"), raw("m3")], h)
    assert [r.message_id for r in fresh] == ["m3"]
    assert [m.receipt for m in h] == ["r-m1", "r-m2-again"]


# --- Batching --------------------------------------------------------------------------


def test_one_message_per_call_without_batching() -> None:
    h, limits = held(raw("a"), raw("b")), Limits(5, rate=None, adaptive=False, now=0.0)
    assert mids(Batching().pick(h, limits, running=0, now=0.0)) == ["a"]
    assert Batching().wait(h, limits, running=0, now=0.0) is None  # only a finish helps
    assert Batching().pick(h, limits, running=5, now=0.0) == []  # no free slot


@pytest.mark.parametrize(("size", "held_count", "limit", "running", "now", "expected"), [
    (3, 3, 10, 0, 0.0, 3),  # full: at once
    (3, 2, 10, 0, 0.0, 0),  # partial: waits for its window
    (3, 2, 10, 0, 1.0, 2),  # partial, window over
    (5, 5, 3, 0, 0.0, 3),  # never above the concurrency: a full batch of 3
    (5, 5, 4, 2, 0.0, 0),  # 2 slots free of a batch of 4: waits for slots or the window
    (5, 5, 4, 2, 1.0, 2),
])  # fmt: skip
def test_a_batch_starts_full_or_after_its_window(size: int, held_count: int, limit: int,
                                                 running: int, now: float,
                                                 expected: int) -> None:  # fmt: skip
    h = held(*(raw(f"m{i}") for i in range(held_count)))
    limits = Limits(limit, rate=None, adaptive=False, now=0.0)
    assert len(Batching(size, 1.0).pick(h, limits, running, now)) == expected


def test_a_batch_waits_for_its_window_or_the_next_token_capped() -> None:
    h = held(raw("a"), raw("b"))
    limits = Limits(10, rate=None, adaptive=False, now=0.0)
    assert Batching(3, 1.0).wait(h, limits, 0, 0.25) == pytest.approx(0.75)
    slow = Limits(10, rate=0.001, adaptive=False, now=0.0)
    assert slow.admit(1, 0.0)
    assert Batching().wait(h, slow, 0, 0.0) == WAIT_CAP  # 1000 s away: looked at again


def test_a_batch_is_never_above_a_burst_of_the_rate() -> None:
    h = held(raw("a"), raw("b"), raw("c"))
    limits = Limits(10, rate=2.0, adaptive=False, now=0.0)
    assert mids(Batching(3, 0.0).pick(h, limits, 0, 1.0)) == ["a", "b"]  # 2 tokens at 1 s
    assert Batching(3, 0.0).pick(h, limits, 2, 1.0) == []  # none left: "c" waits for one


# --- Receives: sizing and drain ---------------------------------------------------------


def test_while_the_queue_has_a_backlog_up_to_max_receives_are_under_way() -> None:
    receives = Receives(max_receives=MAX_RECEIVES, drain_empty_polls=2, visibility=30)
    first = receives.plan(100, running=0, held=0, now=0.0, idle=True)
    assert first is not None and first.count == 10
    assert receives.plan(100, 0, 0, now=0.0, idle=True) is None  # no backlog known yet
    receives.returned(first, got=10, now=0.1, idle=False)  # came back full: a backlog
    asks = [receives.plan(100, 0, 10, now=0.1, idle=False) for _ in range(MAX_RECEIVES + 1)]
    assert [a.count if a else 0 for a in asks] == [10] * MAX_RECEIVES + [0]
    assert receives.rtt_s == pytest.approx(0.02 + 0.2 * (0.1 - 0.02))


def test_a_receive_asks_only_for_what_fits_beside_what_runs_and_is_held() -> None:
    receives = Receives(max_receives=MAX_RECEIVES, drain_empty_polls=2, visibility=30)
    assert receives.size(2, running=0, held=0) == 4  # 2 slots + a prefetch of 2
    assert receives.size(2, running=2, held=2) == 0  # the prefetch is there
    ask = receives.plan(2, 0, 0, now=0.0, idle=True)
    assert ask is not None and receives.size(2, 0, 0, another=True) == 0  # 4 asked: full
    receives.failed(ask)
    assert receives.size(2, 0, 0) == 4 and not receives.under_way


def test_drained_after_empty_polls_in_a_row_counting_concurrent_ones_once() -> None:
    receives = Receives(max_receives=MAX_RECEIVES, drain_empty_polls=2, visibility=30)
    first = receives.plan(50, 0, 0, now=0.0, idle=True)
    second = receives.plan(50, 0, 0, now=0.0, idle=True, another=True)
    assert first is not None and second is not None
    receives.returned(first, got=0, now=1.0, idle=True)
    receives.returned(second, got=0, now=1.0, idle=True)  # under way beside the first
    assert not receives.drained(in_flight=0)
    third = receives.plan(50, 0, 0, now=1.0, idle=True)
    assert third is not None
    receives.returned(third, got=0, now=2.0, idle=True)
    assert receives.drained(in_flight=0) and not receives.drained(in_flight=1)
    fourth = receives.plan(50, 0, 0, now=2.0, idle=True)
    assert fourth is not None
    receives.returned(fourth, got=1, now=2.5, idle=True)
    assert not receives.drained(in_flight=0)  # a message: the count starts again


# --- Outgoing: delete batching, hand-backs, visibility ------------------------------------


def received(*raws: SqsMessage, fifo: bool = False) -> list[Received]:
    h = held(*raws, fifo=fifo)
    return h.pop(len(raws), whole_groups=True)


def test_deletes_go_by_tens_and_a_partial_batch_waits_a_little() -> None:
    out = Outgoing(visibility=30)
    for m in received(*(raw(f"m{i}") for i in range(13))):
        out.delete(m, now=5.0)
    assert out.due()  # a full request is waiting
    assert len(out.take(5.0, everything=False).deletes) == 10  # the rest waits for more
    assert not out.due() and out.take(5.5, everything=False).deletes == []
    assert len(out.take(5.0 + DELETE_MAX_WAIT, everything=False).deletes) == 3


def test_a_short_visibility_timeout_shortens_the_wait_and_a_flush_ends_it() -> None:
    out = Outgoing(visibility=2)
    [a, b] = received(raw("a"), raw("b"))
    out.delete(a, now=0.0)
    assert out.take(0.4, everything=False).deletes == []
    assert mids(out.take(0.5, everything=False).deletes) == ["a"]  # a quarter of 2 s
    out.delete(b, now=1.0)
    out.flush_deletes()  # a FIFO group emptied: its deletes unlock it
    assert out.due() and mids(out.take(1.0, everything=False).deletes) == ["b"]


def test_settle_deletes_successes_retries_failures_and_keeps_a_fifo_group_in_order() -> None:
    out = Outgoing(visibility=30)
    batch = received(raw("a1", "A"), raw("a2", "A"), raw("a3", "A"), raw("b1", "B"),
                     fifo=True)  # fmt: skip
    result = Result(frozenset({"a2"}), "ValueError: boom", 0.1, retry_after=3.0)
    deleted, failed, groups = out.settle(batch, result, now=0.0)
    assert (deleted, mids(failed), groups) == (2, ["a2"], {"A"})
    io = out.take(0.0, everything=True)
    assert mids(io.deletes) == ["a1", "b1"]
    assert [(m.message_id, hide) for m, _, hide in io.retries] == [("a2", 3.0)]
    assert mids(io.returns) == ["a3"]  # ran after a2 failed: not deleted, runs again in order


def test_visibility_is_extended_once_half_of_it_passed() -> None:
    out = Outgoing(visibility=10)
    h = Held(False)
    message = h.wrap(raw("a"), 0.0, out.extend_at(0.0))
    assert out.due_extensions([message], 4.9) == []
    assert out.due_extensions([message], 5.0) == ["r-a"]
    assert message.extend_at == 10.0 and out.due_extensions([message], 9.0) == []


# --- RunningWork ---------------------------------------------------------------------------


def test_running_counts_messages_and_never_ends_abandoned_work() -> None:
    running = RunningWork()
    work = running.start(received(raw("a"), raw("b")), batch=True, now=0.0)
    assert running.count == 2 and running
    assert mids(running.abandon()) == ["a", "b"] and not running
    assert not running.end(work)  # abandoned: its messages went back, never delete them


# --- Tally -----------------------------------------------------------------------------


def test_the_job_counts_and_the_meter_agree() -> None:
    meter = Meter()
    tally = Tally(meter, "q")
    tally.settled(handled=2, failed=1, seconds=0.5)
    tally.received(got=3, fresh=2, in_flight=4)
    tally.received(got=1, fresh=1, in_flight=2)
    assert (tally.handled, tally.failed, tally.duplicates, tally.peak) == (2, 1, 1, 4)
    counts = QueueCounts.from_json(meter.take()["queues"]["q"])
    assert (counts.handled, counts.failed, counts.seconds) == (2, 1, 1.5)


def test_the_tally_keeps_how_late_the_oldest_arrival_since_the_last_report_was() -> None:
    tally = Tally(None, "q")
    assert tally.take_oldest_age() is None  # nothing arrived
    tally.arrived(["100000", "104000", None], wall_now=110.0)  # sent at 100 s and 104 s
    tally.arrived(["108000"], wall_now=111.0)
    tally.arrived(["112500"], wall_now=112.0)  # a clock behind SQS's: never negative
    assert tally.take_oldest_age() == 10.0
    assert tally.take_oldest_age() is None  # taken: the next interval starts afresh


def test_a_flow_reads_how_late_a_receive_arrived_from_its_wall_clock() -> None:
    flow = Flow(FlowParams(limit=2, fifo=False, visibility=30), clock=lambda: 0.0,
                wall=lambda: 50.0)  # fmt: skip
    ask = flow.plan_receive()
    assert ask is not None
    flow.add(ask, [SqsMessage("m1", "r1", "{}", {"SentTimestamp": "20000"}),
                   SqsMessage("m2", "r2", "{}", {"SentTimestamp": "45000"})])  # fmt: skip
    assert flow.take_oldest_age() == 30.0


# --- Handoff ---------------------------------------------------------------------------


def test_handoff_tells_its_listeners_and_notifies_only_waiting_threads() -> None:
    lock = threading.Lock()
    handoff, told = Handoff(lock), []
    handoff.listen(lambda: told.append(1))
    with lock:
        handoff.notify(3)  # nobody waits: nothing to do (and no error)
        handoff.wait(0.0)  # times out at once, releasing and taking the lock back
        assert handoff.waiting == 0
    handoff.tell()
    assert told == [1]
