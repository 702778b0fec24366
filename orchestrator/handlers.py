"""import_handler and the built-in handlers (`noop`, `log`, `sleep`) for demos and load tests."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable

import structlog

from orchestrator.config import HANDLER_PATH, Settings, handler_allowed
from orchestrator.errors import HandlerImportError
from orchestrator.message import Message
from orchestrator.models import MAX_ERROR_BYTES, clip

Handler = Callable[[Message], object]


def import_handler(path: str, allowed: tuple[str, ...] = ()) -> Handler:
    """Import `package.module:function` if it comes from one of the `allowed` module
    prefixes (none: any); raise HandlerImportError naming the path and why."""
    if not HANDLER_PATH.fullmatch(path):
        raise HandlerImportError(path, "not of the form package.module:function")
    if not handler_allowed(path, allowed):  # checked before anything is imported
        raise HandlerImportError(path, f"outside HANDLER_MODULES ({', '.join(allowed)})")
    module_name, func_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is the handler's fault
        # Cut: the reason becomes the job's error, a log line and the consumer's report.
        reason = clip(f"{type(exc).__name__}: {exc}", MAX_ERROR_BYTES)
        raise HandlerImportError(path, reason) from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise HandlerImportError(path, f"module {module_name} has no function {func_name}")
    return func  # type: ignore[no-any-return]


def use_handler_path(settings: Settings) -> None:
    """Put HANDLER_PYTHONPATH's folders first on sys.path (once each): handlers import from
    there or from the installed packages, never from whatever the working directory is
    (child processes run with `python -P`; docs/design.md §7)."""
    entries = settings.handler_path_entries
    sys.path[:] = entries + [p for p in sys.path if p not in entries]


def import_warning(path: str, settings: Settings) -> str | None:
    """Why `path` does not import in this process, or None when it does. Only a warning
    for whoever sets it: the host that runs the CLI or the API may not carry the
    application's code, while the workers' hosts do."""
    use_handler_path(settings)
    try:
        import_handler(path, settings.handler_prefixes)
    except HandlerImportError as exc:
        return (f"{exc}; it must import on the workers' hosts (install the application "
                "there, or list its folder in HANDLER_PYTHONPATH)")
    return None


def noop(message: Message) -> None:
    """Do nothing: measures the orchestrator's own overhead."""


def log(message: Message) -> None:
    """Log the message's id and the start of its body."""
    structlog.get_logger().info(
        "handler.message", message_id=message.message_id, body=message.body[:200]
    )


def sleep(message: Message) -> None:
    """Sleep for the body's `ms` milliseconds (default 100): a stand-in for I/O-bound work."""
    try:
        ms = float(message.json().get("ms", 100))
    except (ValueError, AttributeError):
        ms = 100.0
    time.sleep(max(ms, 0) / 1000)
