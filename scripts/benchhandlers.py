"""Handlers for bench.py and chaos.py: record when and where each message ran.

One O_APPEND write per message into RECORD_DIR/<pid>.jsonl (atomic for short lines).
"""

from __future__ import annotations

import json
import os
import time

from orchestrator import Message


def stamp(message: Message) -> None:
    line = json.dumps({"queue": message.queue_name, "body": message.body, "pid": os.getpid(),
                       "start": time.time()})  # fmt: skip
    fd = os.open(os.path.join(os.environ["RECORD_DIR"], f"{os.getpid()}.jsonl"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # fmt: skip
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
