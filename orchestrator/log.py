"""structlog set-up: console lines in development, JSON lines in production, on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from orchestrator.config import Settings


def configure(settings: Settings, **context: Any) -> None:
    """Configure logging for this process; bind `context` (role, pid, …) to every line."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**context)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name)
