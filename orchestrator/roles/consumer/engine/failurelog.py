"""FailureLog: the handlers' failures an assignment noted since its last report.

Each is a FailureNote, made here once and carried as it is to the worker (in
`Progress` and `Done`) and on to the store, which keeps it for the dead-letter
browser (docs/design.md §4, `failures`). Only a display: a storm of failures keeps the
first MAX_KEPT of each report, which tell the story, and the rest are only counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from orchestrator.models import MAX_FAILURE_BODY_BYTES, FailureNote, clip, utcnow

MAX_KEPT = 100  # failures kept between two progress reports


class FailureLog:
    """One queue's failure notes until they are taken (thread-safe)."""

    def __init__(self, queue_name: str, keep_bodies: bool,
                 now: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.queue_name = queue_name
        self.keep_bodies = keep_bodies  # the queue's failureBodies: notes keep the body
        self.now = now
        self._lock = threading.Lock()
        self._notes: list[FailureNote] = []

    def note(self, message_id: str, receive_count: int, body: str, error: str | None,
             trace: str | None) -> None:  # fmt: skip
        """A handler failed on this message with `error` ("Type: text", already cut to
        size where it was made) and `trace` (its traceback's last lines)."""
        with self._lock:
            if len(self._notes) >= MAX_KEPT:
                return
            error_type, _, text = (error or "failed").partition(": ")
            kept = clip(body, MAX_FAILURE_BODY_BYTES) if self.keep_bodies else None
            self._notes.append(FailureNote(self.queue_name, message_id, receive_count,
                                           error_type, text or error_type, trace or "",
                                           self.now(), kept))  # fmt: skip

    def take(self) -> tuple[FailureNote, ...]:
        """The notes since the last take, emptied out of the log."""
        with self._lock:
            out, self._notes = tuple(self._notes), []
            return out
