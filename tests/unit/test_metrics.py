"""Meter and the metrics documents, without servers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator import metrics
from orchestrator.metrics import BUCKETS, Meter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [(0.0, 0), (0.005, 0), (0.0051, 1), (1.0, BUCKETS.index(1.0)), (300.0, len(BUCKETS) - 1),
     (300.1, len(BUCKETS)), (10_000.0, len(BUCKETS))],
)  # fmt: skip
def test_a_duration_lands_in_the_first_bucket_it_fits(seconds: float, bucket: int) -> None:
    meter = Meter()
    meter.message("q", seconds, ok=True)
    buckets = meter.take()["queues"]["q"]["buckets"]
    assert buckets[bucket] == 1 and sum(buckets) == 1


def test_take_empties_and_merge_adds() -> None:
    meter, other = Meter(), Meter()
    meter.message("q", 0.1, ok=True)
    meter.sqs_request("ReceiveMessage")
    other.message("q", 0.2, ok=False)
    other.count("assignments", 2)
    meter.merge(other.take())
    deltas = meter.take()
    assert (deltas["queues"]["q"]["handled"], deltas["queues"]["q"]["failed"]) == (1, 1)
    assert deltas["sqs"] == {"ReceiveMessage": 1} and deltas["fleet"] == {"assignments": 2}
    assert meter.take() == {} and other.take() == {}


def test_nothing_counted_writes_nothing() -> None:
    assert metrics.to_writes(Meter().take(), NOW) == []


def test_writes_read_back_as_the_totals_they_carry() -> None:
    meter = Meter()
    meter.message("orders.fifo", 0.02, ok=True)
    meter.message("orders.fifo", 2.0, ok=False)
    meter.sqs_request("DeleteMessageBatch")
    meter.count("consumerRestartsDied")
    writes = metrics.to_writes(meter.take(), NOW)
    # Applying each $inc to an empty document is what the first upsert does.
    docs = [{**w.filter, **w.update["$inc"], **w.update["$set"]} for w in writes]
    assert all("." not in key for d in docs for key in d)  # no dotted paths (docs/design.md §13)
    found = metrics.totals(docs)
    counts = found.queues["orders.fifo"]
    assert (counts.handled, counts.failed, round(counts.seconds, 3)) == (1, 1, 2.02)
    assert sum(counts.buckets) == 2
    assert found.sqs_requests == {"DeleteMessageBatch": 1}
    assert found.fleet == {"consumerRestartsDied": 1}


def test_only_failed_writes_are_kept() -> None:
    meter = Meter()
    for queue in ("a", "b"):
        meter.message(queue, 0.1, ok=True)
    meter.sqs_request("ReceiveMessage")
    writes = metrics.to_writes(meter.take(), NOW)
    kept = metrics.unwritten([w for w in writes if w.filter["_id"] in ("queue:b", "sqs")])
    assert set(kept["queues"]) == {"b"} and kept["sqs"] == {"ReceiveMessage": 1}
    assert "fleet" not in kept
