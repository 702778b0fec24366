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


class ToStructlog(logging.Handler):
    """Hands the records of libraries that log through the standard library (the
    OpenTelemetry SDK's `Transient error … retrying`) to structlog: they come out like
    every other line, in the same format, with `role` and `pid` (also from threads that
    do not have this process's context variables), in one write."""

    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__()
        self.context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.getMessage()
            bound = structlog.contextvars.get_contextvars()  # this thread's, if any: they win
            missing = {k: v for k, v in self.context.items() if k not in bound}
            structlog.get_logger().log(record.levelno, event, logger=record.name,
                                       exc_info=record.exc_info or False,
                                       **missing)  # fmt: skip
        except Exception:
            self.handleError(record)


def configure(settings: Settings, **context: Any) -> None:
    """Configure logging for this process; bind `context` (role, pid, …) to every line,
    the standard library's records included."""
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
    # Libraries' own INFO and DEBUG records (botocore's per request, urllib3's) are noise
    # here: from the standard library WARNING and above, or LOG_LEVEL if it is higher.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ToStructlog)]:
        root.removeHandler(handler)  # configured again (in-process CLI tests): one of ours
    root.addHandler(ToStructlog(dict(context)))
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[settings.log_level]))


def bind_process(**context: Any) -> None:
    """Bind `context` to every later line of this process (`run` turns the CLI process
    into the supervisor), the standard library's records included."""
    structlog.contextvars.bind_contextvars(**context)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ToStructlog):
            handler.context.update(context)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
