"""Metrics sums in the real MongoDB-protocol server: `$inc` from several meters adds up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.backends.store import Store
from orchestrator.errors import MetricsPartlyWritten
from orchestrator.metrics import BUCKETS, Meter
from orchestrator.models import utcnow


def test_meters_flushed_from_many_threads_add_up(store: Store) -> None:
    def one_process(i: int) -> None:
        meter = Meter()
        for n in range(50):
            meter.message("q.fifo", 0.002 if n % 2 else 0.7, ok=n % 10 != 0)
        meter.sqs_request("ReceiveMessage")
        meter.count("assignments")
        meter.flush(lambda d: store.add_metrics(d, utcnow()))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_process, range(16)))
    totals = store.metric_totals()
    q = totals.queues["q.fifo"]  # a dot in the name must not become a field path
    assert (q.handled, q.failed) == (16 * 45, 16 * 5)
    assert q.buckets[0] == 16 * 25 and q.buckets[BUCKETS.index(1.0)] == 16 * 25
    assert sum(q.buckets) == 16 * 50
    assert abs(q.seconds - 16 * (25 * 0.002 + 25 * 0.7)) < 1e-6
    assert totals.sqs_requests == {"ReceiveMessage": 16}
    assert totals.fleet == {"assignments": 16}


def test_a_failed_flush_keeps_the_counts(store: Store) -> None:
    meter = Meter()
    meter.message("q", 0.01, ok=True)

    def broken(deltas: dict[str, object]) -> None:
        raise RuntimeError("MongoDB is down")

    with pytest.raises(RuntimeError):
        meter.flush(broken)
    meter.message("q", 0.01, ok=True)
    meter.flush(lambda d: store.add_metrics(d, utcnow()))
    assert store.metric_totals().queues["q"].handled == 2


def test_a_partly_written_flush_keeps_only_what_was_not_written(store: Store) -> None:
    store._db["metrics"].insert_one({"_id": "queue:bad", "queueName": "bad", "handled": "text"})
    meter = Meter()
    meter.message("good", 0.01, ok=True)
    meter.message("bad", 0.01, ok=True)
    with pytest.raises(MetricsPartlyWritten):
        meter.flush(lambda d: store.add_metrics(d, utcnow()))
    good = store._db["metrics"].find_one({"_id": "queue:good"})
    assert good is not None and good["handled"] == 1
    assert list(meter.take()["queues"]) == ["bad"]  # "good" is not written twice


def test_a_deleted_queue_takes_its_counters_with_it(store: Store) -> None:
    meter = Meter()
    meter.message("gone", 0.01, ok=True)
    meter.message("kept", 0.01, ok=True)
    meter.flush(lambda d: store.add_metrics(d, utcnow()))
    store.delete_queue("gone")
    assert set(store.metric_totals().queues) == {"kept"}


def test_a_series_minute_keeps_each_workers_peak_load_and_each_queues_last_depth(
    store: Store,
) -> None:
    now = utcnow().replace(second=5)
    store.add_series(now, counts={"q.fifo": (3, 1)}, depths={"q.fifo": 7}, loads={"w:1": 3})
    store.add_series(now.replace(second=40), counts={"q.fifo": (2, 0)}, depths={"q.fifo": 2},
                     loads={"w:1": 1})  # fmt: skip
    [queue] = store.series("queue", ["q.fifo"], now)["q.fifo"]
    assert (queue["handled"], queue["failed"], queue["depth"]) == (5, 1, 2)
    [worker] = store.series("worker", ["w:1"], now)["w:1"]
    assert worker["load"] == 3
