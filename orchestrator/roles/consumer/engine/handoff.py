"""Handoff: how the Flow tells its handlers that work may have become ready.

Handler threads (and a handler pool's feeder) wait on a condition of the Flow's lock;
the others (an event loop, a thread executor that starts threads as work comes) are
listeners, called outside the lock since they may take it. `wait` and the notifies are
called holding the Flow's lock, `tell` without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Handoff:
    """The waiting handler threads and the listeners of one Flow."""

    def __init__(self, lock: threading.Lock) -> None:
        self.ready = threading.Condition(lock)
        self.waiting = 0  # threads waiting on `ready`
        self.listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    def wait(self, timeout: float | None) -> None:
        """Until notified or `timeout` (holding the lock, which waiting releases)."""
        self.waiting += 1
        try:
            self.ready.wait(timeout)
        finally:
            self.waiting -= 1

    def notify(self, n: int) -> None:
        """Wake up to `n` waiting threads: notifying nobody is not free, and most of the
        time every thread is busy."""
        if self.waiting:
            self.ready.notify(n)

    def notify_all(self) -> None:
        """Every waiting thread looks again: what may start, or whether to exit, changed."""
        self.ready.notify_all()

    def tell(self) -> None:
        """Call the listeners (not holding the lock)."""
        for listener in self.listeners:
            listener()
