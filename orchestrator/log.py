"""structlog set-up: console lines in development, JSON lines in production, on stderr."""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from typing import Any

import structlog

from orchestrator.config import Settings

STDERR = 2


class LineLogger:
    """Writes each line, newline included, with one `os.write` on stderr.

    Many processes share one stderr (a terminal, a pipe to `tee`, a container
    runtime): a line written in two parts (as `print` does, and Python's stderr
    with PYTHONUNBUFFERED passes each part on at once) can fuse with another
    process's. A write of up to PIPE_BUF bytes (4 KiB) to a pipe is never split.
    Once the reader is gone (EPIPE) lines are dropped: a closed stdout must not
    turn a graceful stop into a crash.
    """

    def __init__(self, fd: int = STDERR) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.gone = False

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", "backslashreplace")
        with self.lock:
            if self.gone:
                return
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise
                self.gone = True  # nobody reads any more; go on without a log

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg
    log = msg


def configure(settings: Settings, **context: Any) -> None:
    """Configure logging for this process; bind `context` (role, pid, …) to every line."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    logger = LineLogger()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.log_level]
        ),
        logger_factory=lambda *args: logger,
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**context)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
