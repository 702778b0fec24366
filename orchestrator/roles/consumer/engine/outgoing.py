"""Outgoing: the SQS calls one assignment's messages wait for, and when each is due.

- Deletes wait to fill a request of 10, at most DELETE_MAX_WAIT (or a quarter of a
  short visibility timeout: a done message must not come back meanwhile). They go at
  once when nothing runs or is held (nothing more is coming), on a flush (a FIFO group
  emptied: SQS keeps it locked until its messages are deleted) and at the end of a run.
- Retries (failed messages, hidden for a backoff) and hand-backs (visibility 0) go at once.
- Visibility: running and held messages are extended once half of it has passed.
The runner makes the calls (calls.py). Not thread-safe: the Flow's lock guards it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.policy import RECEIVE_BATCH as BATCH
from orchestrator.roles.consumer.engine.held import Received
from orchestrator.roles.consumer.engine.invoke import Result

EXTEND_FRACTION = 0.5  # extend a message's visibility once half of it has passed
DELETE_MAX_WAIT = 1.0  # a partial delete batch waits at most this long (s) for more


@dataclass
class Io:
    """SQS calls the flow wants made (the runner makes them)."""

    deletes: list[Received] = field(default_factory=list)
    # (message, error, seconds to hide it: None for the backoff on its receive count)
    retries: list[tuple[Received, str, float | None]] = field(default_factory=list)
    returns: list[Received] = field(default_factory=list)  # hand back now: visibility 0

    def __bool__(self) -> bool:
        return bool(self.deletes or self.retries or self.returns)


class Outgoing:
    """The calls waiting to be made, and the visibility timing, of one assignment."""

    def __init__(self, visibility: int) -> None:
        self.visibility = visibility
        self.io = Io()
        self.delete_since = 0.0  # when the oldest waiting delete was queued
        self.flush = False  # send the waiting deletes now, however few

    @property
    def deletes(self) -> list[Received]:
        """The messages whose deletes wait (their handlers returned)."""
        return self.io.deletes

    def delete(self, message: Received, now: float) -> None:
        if not self.io.deletes:
            self.delete_since = now
        self.io.deletes.append(message)

    def retry(self, message: Received, error: str, hide_for: float | None) -> None:
        self.io.retries.append((message, error, hide_for))

    def hand_back(self, messages: Iterable[Received]) -> None:
        self.io.returns.extend(messages)

    def settle(self, messages: list[Received], result: Result,
               now: float) -> tuple[int, list[Received], set[str]]:  # fmt: skip
        """Queue the calls a finished handler call's messages need: the succeeded are
        deleted, the failed retried. On a FIFO queue a message after a failed one of its
        group is handed back, not deleted, even if the handler went on: the group runs
        again in order from the failed message. (Deleted, failed, their groups.)"""
        deleted, failed, failed_groups = 0, [], set()
        for message in messages:
            if message.message_id in result.failed:
                self.retry(message, result.error or "failed", result.retry_after)
                failed.append(message)
                if message.group is not None:
                    failed_groups.add(message.group)
            elif message.group in failed_groups:
                self.hand_back([message])
            else:
                self.delete(message, now)
                deleted += 1
        return deleted, failed, failed_groups

    def flush_deletes(self) -> None:
        """Send the waiting deletes with the next take, however few."""
        self.flush = True

    def due(self) -> bool:
        """Whether a call is due now, whatever else happens."""
        if self.io.retries or self.io.returns or len(self.io.deletes) >= BATCH:
            return True
        return self.flush and bool(self.io.deletes)

    def take(self, now: float, *, everything: bool) -> Io:
        """The calls due now: full delete batches, and a partial one once it waited
        DELETE_MAX_WAIT (or a quarter of the visibility timeout), or `everything`."""
        io, self.io = self.io, Io()
        wait = min(DELETE_MAX_WAIT, self.visibility / 4)
        flush_all = everything or self.flush or now - self.delete_since >= wait
        self.flush = False
        keep = 0 if flush_all else len(io.deletes) % BATCH
        if keep:
            self.io.deletes = io.deletes[-keep:]
            io.deletes = io.deletes[:-keep]
        return io

    def extend_at(self, now: float) -> float:
        """When a message received (or extended) at `now` is next extended."""
        return now + self.visibility * EXTEND_FRACTION

    def due_extensions(self, messages: Iterable[Received], now: float) -> list[str]:
        """Receipts of `messages` whose visibility should be extended now; each is due
        again after another half of the visibility timeout."""
        due = [m for m in messages if m.extend_at <= now]
        for message in due:
            message.extend_at = self.extend_at(now)
        return [m.receipt for m in due]
