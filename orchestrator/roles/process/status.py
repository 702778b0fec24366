"""Status notes from a role process to its supervisor, for the probes (/livez, /readyz).

A master notes each cycle that worked, a worker each heartbeat that reached MongoDB and
each time it fences itself. One word a line on a pipe of its own: each write is far
below PIPE_BUF, so it arrives whole; a full pipe (a supervisor that fell behind) drops
the note rather than blocking the role, and the next one says the same.
"""

from __future__ import annotations

import contextlib
import os
from enum import Enum


class Note(Enum):
    CYCLE = "cycle"  # a master cycle finished without an error
    HEARTBEAT = "heartbeat"  # a worker's heartbeat was written (it is not fenced)
    FENCED = "fenced"  # a worker stopped its consumers: its heartbeats failed


class Reporter:
    """The role's end: `note()` never blocks and never fails the role."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        if fd is not None:
            os.set_blocking(fd, False)

    def note(self, note: Note) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self.fd, note.value.encode() + b"\n")


def read_notes(fd: int) -> tuple[list[Note], bool]:
    """The notes waiting on the supervisor's end (non-blocking), and whether it closed."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return [], False
    if not data:
        return [], True
    known = {n.value: n for n in Note}
    return [known[w] for w in data.decode(errors="replace").split() if w in known], False
