"""The rate limit and the adaptive concurrency of one assignment, with time as an argument.

- Bucket: at most `rate` handler starts a second, in bursts of at most max(1, rate). It
  starts with one token, not full: the assignment before this one (here or on another
  worker) may have just spent its own, and the queue's rate is fleet-wide.
- Aimd: the effective concurrency of an `adaptive` queue. It starts at the ceiling (the
  queue's concurrency), halves (not below 1) when a handler raises Backoff or when more
  than 20 % of the last 5 s of messages failed, at most once a second and only after a
  new failure, and grows by one per second without a failure back up to the ceiling.
"""

from __future__ import annotations

from collections import deque

WINDOW = 5.0  # seconds of outcomes the failure rate is taken over
FAILURE_RATE = 0.2  # above it, the downstream is struggling
MIN_SAMPLES = 5  # outcomes in the window before a failure rate means anything
CUT_EVERY = 1.0  # at most one halving a second
GROW_EVERY = 1.0  # one more per second without a failure


class Bucket:
    """Tokens for handler starts (one per message)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = 1.0
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def take(self, n: int, now: float) -> bool:
        """Spend n tokens if there are; whether there were."""
        self._refill(now)
        if self.tokens + 1e-9 < n:
            return False
        self.tokens -= n
        return True

    def wait(self, n: int, now: float) -> float:
        """Seconds until n tokens are there (0: now)."""
        self._refill(now)
        return max(0.0, (n - self.tokens) / self.rate)

    def largest(self) -> int:
        """The most messages one start may take: a batch is capped to a burst."""
        return max(1, int(self.capacity))

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate, self.capacity = rate, max(1.0, rate)
        self.tokens = min(self.tokens, self.capacity)


class Aimd:
    """Additive increase, multiplicative decrease of an effective concurrency."""

    def __init__(self, ceiling: int, now: float) -> None:
        self.ceiling = ceiling
        self.effective = ceiling
        self.outcomes: deque[tuple[float, int, int]] = deque()  # (time, ok, failed)
        self.last_cut = float("-inf")
        self.new_failure = False  # a failure since the last cut
        self.clean_since = now  # the last failure, or the last step up

    def set_ceiling(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.effective = min(self.effective, ceiling)

    def record(self, now: float, ok: int, failed: int, backoff: bool) -> bool:
        """A handler call's outcome; whether the effective concurrency changed."""
        self.outcomes.append((now, ok, failed))
        while self.outcomes and self.outcomes[0][0] < now - WINDOW:
            self.outcomes.popleft()
        if failed:
            self.new_failure = True
            self.clean_since = now
        if (backoff or self._struggling()) and self.new_failure:
            return self._cut(now)
        return self.tick(now)

    def tick(self, now: float) -> bool:
        """Grow by one after a second without a failure; whether it grew."""
        if self.effective < self.ceiling and now - self.clean_since >= GROW_EVERY:
            self.effective += 1
            self.clean_since = now
            return True
        return False

    def _struggling(self) -> bool:
        ok = sum(o for _, o, _ in self.outcomes)
        failed = sum(f for _, _, f in self.outcomes)
        return ok + failed >= MIN_SAMPLES and failed > FAILURE_RATE * (ok + failed)

    def _cut(self, now: float) -> bool:
        if now - self.last_cut < CUT_EVERY:
            return False
        self.last_cut, self.new_failure = now, False
        before, self.effective = self.effective, max(1, self.effective // 2)
        return self.effective != before
