"""Signal handlers only record the signal; each process's loop dispatches them.

The handlers also write to a wake-up pipe (signal.set_wakeup_fd), so a loop
sleeping in select() wakes at once for a signal or a dead child (SIGCHLD).
"""

from __future__ import annotations

import os
import signal
from collections import deque

STOP = (signal.SIGTERM, signal.SIGINT)  # what asks a process to stop
HANDLED = (*STOP, signal.SIGCHLD)


class SignalQueue:
    """Installs the handlers for this process and holds the signals received."""

    def __init__(self, signals: tuple[signal.Signals, ...] = HANDLED) -> None:
        self._pending: deque[signal.Signals] = deque()
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: object) -> None:
        self._pending.append(signal.Signals(signum))

    def drain(self) -> list[signal.Signals]:
        """The signals received since the last call, oldest first."""
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass
        out = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def requeue(self, signals: list[signal.Signals]) -> None:
        """Put back signals a helper saw first, for the loop to dispatch."""
        self._pending.extendleft(reversed(signals))


def reset_in_child() -> None:
    """Undo inherited dispositions right after a child process starts."""
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
