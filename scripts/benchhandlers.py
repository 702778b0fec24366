"""Handlers for bench.py and chaos.py: record when and where each message ran.

One O_APPEND write per message into RECORD_DIR/<pid>.jsonl (atomic for short lines).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from orchestrator import Message


def _write(message: Message, start: float, end: float | None = None, **extra: Any) -> None:
    record = {"queue": message.queue_name, "body": message.body, "pid": os.getpid(),
              "start": start}  # fmt: skip
    if end is not None:
        record["end"] = end
    record.update(extra)
    fd = os.open(os.path.join(os.environ["RECORD_DIR"], f"{os.getpid()}.jsonl"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # fmt: skip
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def stamp(message: Message) -> None:
    _write(message, time.time())


def sleep_stamp(message: Message) -> None:
    """Sleep the body's `ms`; record start and end."""
    start = time.time()
    time.sleep(message.json()["ms"] / 1000)
    _write(message, start, time.time())


def cpu_stamp(message: Message) -> None:
    """Burn the body's `ms` of CPU time; record start and end."""
    start = time.time()
    deadline = time.thread_time() + message.json()["ms"] / 1000
    while time.thread_time() < deadline:
        pass
    _write(message, start, time.time())


async def async_stamp(message: Message) -> None:
    """Await the body's `ms` without a thread; record start and end."""
    start = time.time()
    await asyncio.sleep(message.json()["ms"] / 1000)
    _write(message, start, time.time())


def flaky_stamp(message: Message) -> None:
    """Sleep the body's `ms`; while RECORD_DIR/failing exists, fail every other message
    (a downstream failing half the time). Records each attempt and whether it worked."""
    start = time.time()
    time.sleep(message.json()["ms"] / 1000)
    failing = os.path.exists(os.path.join(os.environ["RECORD_DIR"], "failing"))
    ok = not (failing and message.json()["seq"] % 2 == 0 and message.receive_count % 2 == 1)
    _write(message, start, time.time(), ok=ok)
    if not ok:
        raise ValueError("the downstream failed")
