"""Limits: how many of one assignment's messages may run now, how many it may hold, and
how fast they may start (docs/design.md §5, "What `concurrency` means", "Flow control").

The queue's concurrency; below it the adaptive concurrency (Aimd) of an `adaptive`
queue; and the rate limit's token bucket (Bucket). Time comes in as an argument. Not
thread-safe: the Flow's lock guards it.
"""

from __future__ import annotations

from orchestrator.roles.consumer.engine.rate import Aimd, Bucket


class Limits:
    """The concurrency, AIMD below it and the rate bucket of one assignment."""

    def __init__(self, concurrency: int, *, rate: float | None, adaptive: bool,
                 now: float) -> None:  # fmt: skip
        self.concurrency = concurrency  # the queue's (its share, on a sharded queue)
        self.bucket = Bucket(rate, now) if rate is not None else None
        self.aimd = Aimd(concurrency, now) if adaptive else None

    @property
    def current(self) -> int:
        """How many messages may run now: the concurrency, or the adaptive one below it."""
        return self.aimd.effective if self.aimd is not None else self.concurrency

    def free(self, running: int) -> int:
        """Slots free now (negative after a cut: more run than may)."""
        return self.current - running

    def may_hold(self, running: int, prefetch: int) -> int:
        """Received-but-not-started messages allowed: the free slots plus the prefetch."""
        return max(0, self.current - running) + prefetch

    def largest_start(self) -> int:
        """The most messages one start may take: a batch is never above a burst."""
        if self.bucket is None:
            return self.current
        return min(self.current, self.bucket.largest())

    def admit(self, count: int, now: float) -> bool:
        """Spend the rate's tokens for `count` starts; whether they may start now."""
        return self.bucket is None or self.bucket.take(count, now)

    def token_wait(self, running: int, now: float) -> float | None:
        """Seconds until the next token, when only a token holds a start back (None:
        no rate limit, or no free slot for it)."""
        if self.bucket is None or running >= self.current:
            return None
        return self.bucket.wait(1, now)

    def outcome(self, now: float, ok: int, failed: int, backoff: bool) -> bool:
        """A handler call's outcome; whether the adaptive concurrency changed."""
        return self.aimd is not None and self.aimd.record(now, ok, failed, backoff)

    def adapt(self, now: float) -> bool:
        """Let an adaptive concurrency grow after a second without failures; whether it grew."""
        return self.aimd is not None and self.aimd.tick(now)

    def set_concurrency(self, concurrency: int) -> None:
        self.concurrency = concurrency
        if self.aimd is not None:
            self.aimd.set_ceiling(concurrency)

    def set_rate(self, rate: float | None, now: float) -> None:
        """At most `rate` starts a second (None: no limit); applies at once."""
        if rate is None:
            self.bucket = None
        elif self.bucket is None:
            self.bucket = Bucket(rate, now)
        else:
            self.bucket.set_rate(rate, now)

    def set_adaptive(self, adaptive: bool, now: float) -> None:
        """Follow AIMD below the concurrency (starting at it), or not."""
        if adaptive and self.aimd is None:
            self.aimd = Aimd(self.concurrency, now)
        elif not adaptive:
            self.aimd = None
