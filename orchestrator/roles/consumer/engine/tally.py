"""Tally: one assignment's counts, for its job's outcome and progress reports.

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
