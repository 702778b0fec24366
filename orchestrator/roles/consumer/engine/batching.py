"""Batching: what the next handler call takes, one message or a batch (queue `batchSize`
> 1, docs/design.md §5 "Batch handlers"), and how long held work waits to start.

A batch starts full, or partial once its oldest message waited `batchWindow` for more
messages or free slots; it counts its length against the limits and is never above a
burst of the rate limit. A settings change replaces the whole Batching: it applies from
the next batch. Not thread-safe: called holding the Flow's lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.roles.consumer.engine.held import Held, Received
from orchestrator.roles.consumer.engine.limits import Limits

WAIT_CAP = 1.0  # s: a handler thread waiting for a token or a batch window looks again


@dataclass(frozen=True)
class Batching:
    """The batch size and window of one assignment."""

    size: int = 1
    window: float = 0.0

    @property
    def batches(self) -> bool:
        """Whether handlers take lists (else one message per call)."""
        return self.size > 1

    def pick(self, held: Held, limits: Limits, running: int, now: float) -> list[Received]:
        """Take from `held` what may start now (empty: nothing may), spending its tokens."""
        free = limits.free(running)
        if free <= 0 or not held:
            return []
        count = self._count(held, free, limits.largest_start(), now)
        if not count or not limits.admit(count, now):
            return []  # a batch waits for its window; over the rate, for the next token
        return held.pop(count, whole_groups=self.batches)

    def wait(self, held: Held, limits: Limits, running: int, now: float) -> float | None:
        """Seconds until held work may start though nothing finishes: a partial batch's
        window, or the rate limit's next token (None: only a finish can start more)."""
        oldest = held.oldest_startable()
        if oldest is None:
            return None
        waits = [max(0.0, oldest.received + self.window - now)] if self.batches else []
        if (token := limits.token_wait(running, now)) is not None:
            waits.append(token)
        # Capped: a wait is looked at again after WAIT_CAP whatever it was (a slow rate's
        # next token may be minutes away, and Condition.wait overflows on huge timeouts).
        return min(max(waits), WAIT_CAP) if waits else None

    def _count(self, held: Held, free: int, most: int, now: float) -> int:
        """How many held messages the next call takes (0: a partial batch waits).
        `most`: what the limits let one start take."""
        if not self.batches:
            # Nothing startable (a FIFO queue whose groups all run) spends no token.
            return 1 if held.any_startable() else 0
        oldest = held.oldest_startable()
        if oldest is None:
            return 0
        target = min(self.size, most)
        count = min(target, free, held.startable())
        if count < target and now < oldest.received + self.window:
            return 0
        return count
