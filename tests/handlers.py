"""Handlers used by process tests: they record what ran, where and when, in RECORD_DIR.

Each call appends one line (queue, body, pid, start, end) with a single O_APPEND
write, which concurrent threads and processes cannot interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

from orchestrator import Backoff, Message


def _record(message: Message, start: float, **extra: object) -> None:
    line = json.dumps(
        {"queue": message.queue_name, "body": message.body, "pid": os.getpid(),
         "start": start, "end": time.time(), "receive_count": message.receive_count,
         "group": message.attributes.get("MessageGroupId"),
         "threads": threading.active_count(), "host": os.environ.get("FAULT_HOST"),
         **extra}
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


def hold(message: Message) -> None:
    """Record the start at once, sleep the body's `ms` (default 100), record the end."""
    start = time.time()
    _record(message, start, phase="start")
    time.sleep(message.json().get("ms", 100) / 1000)
    _record(message, start, phase="end")


def poison(message: Message) -> None:
    """Fail on bodies that say "poison"; record the rest."""
    if "poison" in message.body:
        raise ValueError("poison message")
    record(message)


def fifo_fail_once(message: Message) -> None:
    """Sleep 30 ms; seq 4 of group g0 fails on its first receive. Records every attempt."""
    start = time.time()
    time.sleep(0.03)
    failing = message.attributes.get("MessageGroupId") == "g0" and message.json()["seq"] == 4
    _record(message, start, ok=not (failing and message.receive_count == 1))
    if failing and message.receive_count == 1:
        raise ValueError("first try of g0/4 fails")


def cpu_record(message: Message) -> None:
    """Burn the CPU for the body's `ms` (default 50), then record."""
    start = time.time()
    deadline = time.thread_time() + message.json().get("ms", 50) / 1000
    while time.thread_time() < deadline:
        pass
    _record(message, start)


async def async_record(message: Message) -> None:
    """Await the body's `ms` (default 500) without a thread, then record."""
    start = time.time()
    await asyncio.sleep(message.json().get("ms", 500) / 1000)
    _record(message, start)


def batch_poison(messages: list[Message]) -> list[str]:
    """A batch handler: records each message; reports the "poison" ones as failed."""
    start = time.time()
    for message in messages:
        _record(message, start, batch=len(messages))
    return [m.message_id for m in messages if "poison" in m.body]


def shape_record(arg: Message | list[Message]) -> None:
    """Takes one message or a batch; records each with its pid and the batch's size."""
    start = time.time()
    messages = arg if isinstance(arg, list) else [arg]
    time.sleep(0.05)
    for message in messages:
        _record(message, start, batch=len(messages) if isinstance(arg, list) else 0)


def grow(message: Message) -> None:
    """Take the body's `mb` of memory, 10 MB at a time (touched, so that it counts in
    RSS), hold it for its `ms`, then record and let it go."""
    spec = message.json()
    start = time.time()
    held = []
    for _ in range(int(spec["mb"]) // 10):
        held.append(b"x" * 10_485_760)
        time.sleep(0.02)
    time.sleep(spec.get("ms", 0) / 1000)
    _record(message, start)
    del held


def backoff_while_flagged(message: Message) -> None:
    """Raise Backoff while the file RECORD_DIR/overloaded exists (the downstream is
    struggling), else sleep the body's `ms` (default 100) and record."""
    start = time.time()
    if os.path.exists(os.path.join(os.environ["RECORD_DIR"], "overloaded")):
        _record(message, start, ok=False)
        raise Backoff(retry_after=1)
    time.sleep(message.json().get("ms", 100) / 1000)
    _record(message, start, ok=True)


def huge_error(message: Message) -> None:
    """Fail with an error text of 9,000,000 characters (its traceback repeats it)."""
    raise ValueError("E" * 9_000_000)
