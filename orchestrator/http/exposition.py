"""Prometheus exposition: the fleet's sums from MongoDB, live gauges, and this process's own.

Counters and the handler histogram are the fleet-wide sums of orchestrator/metrics.py,
so any master's /metrics shows every process. Depths, assignments and live workers
are read at scrape time. The master cycle histogram is this master's alone (each
master process serves its own; label `master`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orchestrator.http.fleet import Fleet
from orchestrator.metrics import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FleetCollector(Collector):
    """Builds the fleet's metric families at each scrape."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        totals = self.fleet.totals()
        handled = CounterMetricFamily(
            "orchestrator_messages_handled", "Messages whose handler returned", labels=["queue"]
        )
        failed = CounterMetricFamily(
            "orchestrator_messages_failed", "Messages whose handler raised", labels=["queue"]
        )
        duration = HistogramMetricFamily(
            "orchestrator_handler_duration_seconds", "Handler run time", labels=["queue"]
        )
        bounds = [*map(str, BUCKETS), "+Inf"]
        for name, counts in sorted(totals.queues.items()):
            handled.add_metric([name], counts.handled)
            failed.add_metric([name], counts.failed)
            cumulative = itertools.accumulate(counts.buckets)
            duration.add_metric([name], list(zip(bounds, cumulative, strict=True)), counts.seconds)
        yield from (handled, failed, duration)
        yield from self._queue_gauges()
        yield GaugeMetricFamily(
            "orchestrator_assignments",
            "Queues assigned to a worker now",
            value=self.fleet.assignment_count(),
        )
        need = self.fleet.need()
        yield GaugeMetricFamily(
            "orchestrator_fleet_desired_workers",
            "Workers the fleet needs: ceil(wanted assignments / MAX_LOAD), at least 1 "
            "(the leading master's figure; an autoscaler's target)",
            value=need["desiredWorkers"],
        )
        yield GaugeMetricFamily(
            "orchestrator_fleet_capacity",
            "Assignments the live workers can hold (their MAX_LOAD, summed)",
            value=need["capacity"],
        )
        yield GaugeMetricFamily(
            "orchestrator_fleet_wanted",
            "Assignments wanted: running, plus queues and shards waiting for room",
            value=need["wanted"],
        )
        yield GaugeMetricFamily(
            "orchestrator_workers_live",
            "Workers whose heartbeat is recent",
            value=self.fleet.live_workers(),
        )
        yield CounterMetricFamily(
            "orchestrator_assignments_made",
            "Assignments made by masters",
            value=totals.fleet.get("assignments", 0),
        )
        restarts = CounterMetricFamily(
            "orchestrator_consumer_restarts", "Consumer processes replaced", labels=["reason"]
        )
        restarts.add_metric(["died"], totals.fleet.get("consumerRestartsDied", 0))
        restarts.add_metric(["recycled"], totals.fleet.get("consumerRestartsRecycled", 0))
        yield restarts
        requests = CounterMetricFamily(
            "orchestrator_sqs_requests",
            "SQS requests by the daemon's processes",
            labels=["operation"],
        )
        for operation, n in sorted(totals.sqs_requests.items()):
            requests.add_metric([operation], n)
        yield requests

    def _queue_gauges(self) -> Iterator[Metric]:
        visible = GaugeMetricFamily(
            "orchestrator_queue_messages", "Messages available in the queue", labels=["queue"]
        )
        in_flight = GaugeMetricFamily(
            "orchestrator_queue_messages_in_flight",
            "Messages received and not yet deleted",
            labels=["queue"],
        )
        dlq = GaugeMetricFamily(
            "orchestrator_dlq_messages",
            "Messages in the queue's dead-letter queue",
            labels=["queue"],
        )
        missing = GaugeMetricFamily(
            "orchestrator_queue_missing",
            "1 when the master's last check found no such queue in SQS (an adopted queue is "
            "never recreated)",
            labels=["queue"],
        )
        for queue, depth, dlq_depth in self.fleet.queue_depths():
            if depth is not None:
                visible.add_metric([queue.name], depth.visible)
                in_flight.add_metric([queue.name], depth.in_flight)
                missing.add_metric([queue.name], int(depth.missing))
            if dlq_depth is not None:
                dlq.add_metric([queue.name], dlq_depth.visible)
        effective = GaugeMetricFamily(
            "orchestrator_queue_concurrency_effective",
            "Handlers a running queue may run at once now (its shards' sum; adaptive "
            "queues below their concurrency after failures)",
            labels=["queue"],
        )
        for name, value in sorted(self.fleet.effective().items()):
            effective.add_metric([name], value)
        yield from (visible, in_flight, missing, dlq, effective)
        yield from self._backlog_ages()

    def _backlog_ages(self) -> Iterator[Metric]:
        """How late a queue's work is (§10): counts say how much, age says how late."""
        wait = GaugeMetricFamily(
            "orchestrator_queue_wait_seconds",
            "How long the queue's visible messages have waited for a consumer (0 while one "
            "runs it)", labels=["queue"])  # fmt: skip
        oldest = GaugeMetricFamily(
            "orchestrator_queue_oldest_age_seconds",
            "Age, when it arrived, of the oldest message its consumers received in their "
            "last report interval (from SentTimestamp; running queues only)",
            labels=["queue"])  # fmt: skip
        for name, wait_s, oldest_s in self.fleet.backlog_ages():
            wait.add_metric([name], wait_s)
            if oldest_s is not None:
                oldest.add_metric([name], oldest_s)
        yield from (wait, oldest)


class MasterMetrics:
    """This master's own metrics, registered with the registry its API serves."""

    def __init__(self, master_id: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cycle_seconds = Histogram(
            "orchestrator_master_cycle_seconds", "Duration of this master's cycles",
            ["master"], buckets=CYCLE_BUCKETS, registry=registry,
        ).labels(master_id)  # fmt: skip
        self.leader = Gauge("orchestrator_master_leader", "1 while this master holds the lease",
                            ["master"], registry=registry).labels(master_id)  # fmt: skip


def fleet_registry(fleet: Fleet) -> CollectorRegistry:
    """A registry with the fleet's metrics; a master adds its own with MasterMetrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
