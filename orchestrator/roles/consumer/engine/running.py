"""RunningWork: the work of one assignment whose handlers run, from start to finish or
abandonment. Not thread-safe: the Flow's lock guards it.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.roles.consumer.engine.held import Received


@dataclass(eq=False)
class Work:
    """What one handler call gets: one message, or a batch (`batch`: the handler takes a list)."""

    messages: list[Received]
    batch: bool
    started: float


class RunningWork:
    """Work under way, by identity; `count` is messages, not works (a batch counts its length)."""

    def __init__(self) -> None:
        self.works: dict[int, Work] = {}  # by id(work)
        self.count = 0

    def __bool__(self) -> bool:
        return bool(self.works)

    def start(self, messages: list[Received], batch: bool, now: float) -> Work:
        work = Work(messages, batch, now)
        self.works[id(work)] = work
        self.count += len(messages)
        return work

    def end(self, work: Work) -> bool:
        """`work` finished; False when it was abandoned (then it must never be deleted)."""
        if self.works.pop(id(work), None) is None:
            return False
        self.count -= len(work.messages)
        return True

    def messages(self) -> list[Received]:
        return [m for w in self.works.values() for m in w.messages]

    def abandon(self) -> list[Received]:
        """Give up on every work: its messages, to hand back."""
        stuck = self.messages()
        self.works.clear()
        self.count = 0
        return stuck
