"""Receives: how many messages one assignment asks SQS for, and when its queue is drained.

The sizing rule is policy.receive_size (docs/design.md §5, "What `concurrency` means");
this keeps what it needs between calls: receives under way, whether the queue has a
backlog, and the average handler time and round trip. Drained (§3): `drain_empty_polls`
empty polls in a row with nothing in flight. Not thread-safe: the Flow's lock guards it.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator import policy
from orchestrator.policy import RECEIVE_BATCH

MAX_RECEIVES = 8  # receives under way at once while a queue has a backlog
EWMA = 0.2  # weight of the newest sample in the handler-time and round-trip averages


@dataclass(frozen=True)
class Ask:
    """A receive under way: how many it asked for, when, and whether nothing was in
    flight then (only such empty polls count towards "drained")."""

    count: int
    started: float
    idle: bool


class Receives:
    """The receives of one assignment."""

    def __init__(self, *, max_receives: int, drain_empty_polls: int,
                 visibility: float) -> None:  # fmt: skip
        self.max_receives = max_receives
        self.visibility = visibility  # the queue's timeout: bounds what may be held
        self.drain_empty_polls = drain_empty_polls
        self.receiving = 0  # messages asked for by receives under way
        self.under_way = 0  # receives under way
        self.backlog = False  # the last receive came back full
        self.empty_polls = 0
        self.last_empty = float("-inf")  # when the last empty poll that counted returned
        self.handler_s = 0.0  # average handler-call time
        self.rtt_s = 0.02  # average round trip of a receive that returned messages

    def plan(self, limit: int, running: int, held: int, *, now: float, idle: bool,
             another: bool = False) -> Ask | None:
        """Reserve a receive of what `size` says (None: none yet); `idle`: nothing runs or
        is held now."""
        count = self.size(limit, running, held, another=another)
        if not count:
            return None
        self.receiving += count
        self.under_way += 1
        return Ask(count, now, idle)

    def size(self, limit: int, running: int, held: int, *, another: bool = False) -> int:
        """How many messages to ask for now (0: none yet). `another`: one more receive
        may start beside those under way, backlog or not."""
        state = self._state(limit, running, held)
        if another:
            return min(policy.capacity(state), RECEIVE_BATCH)
        return policy.receive_size(state, self.max_receives)

    def wanted(self, limit: int, running: int, held: int) -> bool:
        """Whether a receive could start now."""
        if self.under_way and not self.backlog:
            return False  # no receive could start: spare building the state
        return self.size(limit, running, held) > 0

    def returned(self, ask: Ask, got: int, now: float, idle: bool) -> None:
        """`ask` came back with `got` messages; `idle`: nothing runs or is held now."""
        self._end(ask)
        self.backlog = got >= ask.count
        if got:
            self.rtt_s += EWMA * (now - ask.started - self.rtt_s)
            self.empty_polls = 0
        elif ask.idle and idle and ask.started >= self.last_empty:
            # Empty polls count one after the other, not several under way at once.
            self.empty_polls += 1
            self.last_empty = now

    def prefetch(self, limit: int) -> int:
        """Messages that may be held beyond the free slots, at the handling rate and
        round trip seen so far (policy.prefetch)."""
        return policy.prefetch(limit, self.handler_s, self.rtt_s, self.visibility)

    def failed(self, ask: Ask) -> None:
        self._end(ask)

    def handler_took(self, seconds: float) -> None:
        self.handler_s += EWMA * (seconds - self.handler_s)

    def drained(self, in_flight: int) -> bool:
        return policy.is_drained(self.empty_polls, in_flight, self.drain_empty_polls)

    def _end(self, ask: Ask) -> None:
        self.receiving -= ask.count
        self.under_way -= 1

    def _state(self, limit: int, running: int, held: int) -> policy.FlowState:
        return policy.FlowState(
            limit=limit, running=running, held=held, receiving=self.receiving,
            receives=self.under_way, backlog=self.backlog, handler_s=self.handler_s,
            rtt_s=self.rtt_s, visibility_s=self.visibility,
        )  # fmt: skip
