"""Tally: one assignment's counts, for its job's outcome and progress reports, and how
late its messages arrive (the backlog age of docs/design.md §10).

The meter counts the same handler outcomes at the same moment, so that the job's counts
and the metrics always agree. Not thread-safe: the Flow's lock guards it.
"""

from __future__ import annotations

from orchestrator.metrics import Meter


class Tally:
    """Messages handled, failed and received twice, and the most held at once."""

    def __init__(self, meter: Meter | None, queue_name: str) -> None:
        self.meter = meter
        self.queue_name = queue_name
        self.handled = self.failed = 0
        self.duplicates = 0  # copies of messages already here, received again and dropped
        self.peak = 0  # the most messages received and not finished at once
        self.oldest_age: float | None = None  # the oldest arrival since the last report, s

    def arrived(self, sent_ms: list[str | None], wall_now: float) -> None:
        """Messages SQS says were sent at these times (SentTimestamp, epoch ms) arrived at
        `wall_now` (epoch s): keep the age of the oldest."""
        sent = [float(s) / 1000 for s in sent_ms if s]
        if sent:
            age = max(0.0, wall_now - min(sent))
            self.oldest_age = age if self.oldest_age is None else max(self.oldest_age, age)

    def take_oldest_age(self) -> float | None:
        """The age, when it arrived, of the oldest message received since the last call
        (None: none arrived)."""
        age, self.oldest_age = self.oldest_age, None
        return age

    def received(self, got: int, fresh: int, in_flight: int) -> None:
        """A receive got `got` messages, `fresh` of them new; `in_flight` now."""
        self.duplicates += got - fresh
        self.peak = max(self.peak, in_flight)

    def settled(self, handled: int, failed: int, seconds: float) -> None:
        """A handler call of `seconds` returned for `handled` messages, raised for `failed`."""
        self.handled += handled
        self.failed += failed
        if self.meter is not None:
            for count, ok in ((handled, True), (failed, False)):
                for _ in range(count):
                    self.meter.message(self.queue_name, seconds, ok=ok)
