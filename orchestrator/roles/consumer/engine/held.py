"""Held: the messages a consumer received and has not started, in the order they may start.

A standard queue's wait in one line. A FIFO queue's wait in one line per
MessageGroupId, and a group whose work is running is busy: nothing more of it
starts until that work finished, so that a group runs one piece at a time, in
the order SQS gave. A message received again while still here keeps its place
(take_newer).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from orchestrator.models import SqsMessage


@dataclass(eq=False)
class Received:
    """A received message, from its receive until it is deleted, retried or handed back."""

    message: SqsMessage
    seq: int  # arrival order: hand-backs take the newest first (a FIFO group's tail)
    group: str | None  # MessageGroupId on a FIFO queue
    received: float
    extend_at: float

    @property
    def receipt(self) -> str:
        return self.message.receipt

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def receive_count(self) -> int:
        return self.message.receive_count


class Held:
    """The held messages of one assignment (not thread-safe: the Flow's lock guards it)."""

    def __init__(self, fifo: bool) -> None:
        self.fifo = fifo
        self.line: deque[Received] = deque()  # a standard queue's
        self.groups: dict[str, deque[Received]] = {}  # a FIFO queue's, by group
        self.ready: deque[str] = deque()  # groups with messages and nothing running
        self.ready_set: set[str] = set()
        self.busy: set[str] = set()  # groups whose work runs
        self.count = 0
        self.seq = 0  # messages received so far

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Received]:
        yield from self.line
        for queue in self.groups.values():
            yield from queue

    def wrap(self, raw: SqsMessage, now: float, extend_at: float) -> Received:
        """A message just received, numbered in arrival order (not yet held: `add`)."""
        self.seq += 1
        return Received(raw, self.seq, raw.group if self.fifo else None, now, extend_at)

    def add(self, message: Received) -> None:
        self.count += 1
        if message.group is None:
            self.line.append(message)
            return
        self.groups.setdefault(message.group, deque()).append(message)
        self._mark_ready(message.group)

    def startable(self) -> int:
        """How many could start now, slots permitting."""
        if not self.fifo:
            return len(self.line)
        return sum(len(self.groups[g]) for g in self.ready)

    def any_startable(self) -> bool:
        """Whether a message could start now, slots permitting (cheaper than `startable`)."""
        return bool(self.ready) if self.fifo else bool(self.line)

    def oldest_startable(self) -> Received | None:
        if not self.fifo:
            return self.line[0] if self.line else None
        heads = [self.groups[g][0] for g in self.ready]
        return min(heads, key=lambda m: m.seq) if heads else None

    def pop(self, n: int, whole_groups: bool) -> list[Received]:
        """Up to `n` startable messages; on a FIFO queue their groups become busy, and
        with `whole_groups` (a batch) each group gives its messages together, in order,
        instead of one."""
        if not self.fifo:
            picked = [self.line.popleft() for _ in range(min(n, len(self.line)))]
        else:
            picked = []
            while self.ready and len(picked) < n:
                group = self.ready.popleft()
                self.ready_set.discard(group)
                queue = self.groups[group]
                self.busy.add(group)
                picked.append(queue.popleft())
                while whole_groups and queue and len(picked) < n:
                    picked.append(queue.popleft())
                if not queue:
                    del self.groups[group]
                if not whole_groups:
                    break  # one message per call
        self.count -= len(picked)
        return picked

    def finished(self, messages: Iterable[Received],
                 failed: set[str]) -> tuple[list[Received], bool]:  # fmt: skip
        """Work of these messages finished: their groups may start again, except the
        `failed` ones, whose held messages are returned to hand back (the retry must come
        first). Also whether a group has nothing held any more (its deletes should go now)."""
        back: list[Received] = []
        emptied = False
        for group in {m.group for m in messages if m.group is not None}:
            self.busy.discard(group)
            if group in failed:
                rest = self.groups.pop(group, deque())
                self.count -= len(rest)
                back.extend(rest)
            elif group in self.groups:
                self._mark_ready(group)
            else:
                emptied = True
        return back, emptied

    def take_newest(self, count: int) -> list[Received]:
        """Remove the `count` newest held messages (a FIFO group's tail goes first)."""
        newest = sorted(self, key=lambda m: m.seq, reverse=True)[:count]
        gone = {id(m) for m in newest}
        self.line = deque(m for m in self.line if id(m) not in gone)
        for group in list(self.groups):
            kept = deque(m for m in self.groups[group] if id(m) not in gone)
            if kept:
                self.groups[group] = kept
            else:
                del self.groups[group]
        self.ready = deque(g for g in self.ready if g in self.groups)
        self.ready_set = set(self.ready)
        self.count -= len(newest)
        return newest

    def _mark_ready(self, group: str) -> None:
        if group not in self.busy and group not in self.ready_set:
            self.ready.append(group)
            self.ready_set.add(group)


def take_newer(raws: list[SqsMessage], here: Iterable[Received]) -> list[SqsMessage]:
    """The messages of `raws` not already `here` (held, running or waiting for their
    delete). Such a message can come again (its visibility ran out; or two receives
    under way got it both, which SQS allows and moto does): a second copy must not start
    beside the first (nor, on a FIFO queue, after the group's later messages), so the
    copy here keeps its place and takes the newer receipt, the one its delete needs."""
    known = {r.message_id: r for r in here}
    fresh = []
    for raw in raws:
        if (copy := known.get(raw.message_id)) is not None:
            copy.message = raw
        else:
            fresh.append(raw)
    return fresh
