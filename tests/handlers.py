"""Handlers used by process tests: they record what ran, where and when, in RECORD_DIR.

Each call appends one line (queue, body, pid, start, end) with a single O_APPEND
write, which concurrent threads and processes cannot interleave.
"""

from __future__ import annotations

import json
import os
import time

from orchestrator import Message


def _record(message: Message, start: float) -> None:
    line = json.dumps(
        {"queue": message.queue_name, "body": message.body, "pid": os.getpid(),
         "start": start, "end": time.time(), "receive_count": message.receive_count}
    )  # fmt: skip
    path = os.path.join(os.environ["RECORD_DIR"], f"{os.getpid()}.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record(message: Message) -> None:
    _record(message, time.time())


def slow_record(message: Message) -> None:
    """Sleep for the body's `ms`, then record the interval it ran in."""
    start = time.time()
    time.sleep(message.json().get("ms", 100) / 1000)
    _record(message, start)


def poison(message: Message) -> None:
    """Fail on bodies that say "poison"; record the rest."""
    if "poison" in message.body:
        raise ValueError("poison message")
    record(message)
