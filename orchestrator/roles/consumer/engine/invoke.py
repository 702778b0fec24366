"""Calling a queue's handler on one piece of work: sync or async, one message or a batch.

Shared by the consumer (handlers in its own process) and handler processes.
A handler's failure is its messages' failure, never the caller's: everything it
raises is caught here and becomes the `Result`.
"""

from __future__ import annotations

import inspect
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator import tracing
from orchestrator.errors import Backoff
from orchestrator.message import Message
from orchestrator.models import MAX_ERROR_BYTES, MAX_TRACEBACK_BYTES, clip

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger()


@dataclass(frozen=True)
class Result:
    """A handler call's outcome: the ids of the messages to retry, and why."""

    failed: frozenset[str]
    error: str | None
    seconds: float
    backoff: bool = False  # the handler raised Backoff: the downstream is overloaded
    retry_after: float | None = None  # Backoff's: how long to hide its messages
    trace: str | None = None  # the last lines of what it raised


def is_async(func: Callable[..., Any]) -> bool:
    """True for `async def` handlers (also as a callable object's `__call__`)."""
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object's async __call__
    )


def call(func: Callable[..., Any], messages: list[Message], batch: bool,
         tracer: Tracer | None = None) -> Result:  # fmt: skip
    """Run a sync handler on one message, or on a batch (`batch`: it takes the list),
    in a consumer span when traces are on."""
    started = time.perf_counter()
    with tracing.processing(tracer, messages, batch) as span:
        try:
            returned = func(messages if batch else messages[0])
            if returned is not None and inspect.isawaitable(returned):
                _close(returned)
                raise TypeError("handler returned an awaitable: declare it `async def`")
        except BaseException as exc:  # the handler's failure is the messages', not ours
            return _traced(span, _failed_all(messages, exc, started), exc)
        return _traced(span, _judged(messages, batch, returned, started), None)


async def call_async(func: Callable[..., Any], messages: list[Message], batch: bool,
                     tracer: Tracer | None = None) -> Result:  # fmt: skip
    """Run an `async def` handler on one message or a batch."""
    started = time.perf_counter()
    with tracing.processing(tracer, messages, batch) as span:
        try:
            returned = await func(messages if batch else messages[0])
        except Exception as exc:  # CancelledError is not the handler's failure: let it through
            return _traced(span, _failed_all(messages, exc, started), exc)
        return _traced(span, _judged(messages, batch, returned, started), None)


def _traced(span: Span | None, result: Result, exc: BaseException | None) -> Result:
    if result.failed:
        tracing.failed(span, result.error or "failed", exc, result.trace)
    return result


TRACE_LINES = 8  # of a failure's traceback, kept for the dead-letter browser


def _failed_all(messages: list[Message], exc: BaseException, started: float) -> Result:
    ids = frozenset(m.message_id for m in messages)
    seconds = time.perf_counter() - started
    lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()[-TRACE_LINES:]
    # Cut here, where they are made: the log line, the span, the consumer's report to its
    # worker, the failure document and the job's error all carry them.
    trace = clip("\n".join(lines), MAX_TRACEBACK_BYTES)
    if isinstance(exc, Backoff):
        return Result(ids, clip(f"Backoff: {exc}", MAX_ERROR_BYTES), seconds, backoff=True,
                      retry_after=exc.retry_after, trace=trace)  # fmt: skip
    return Result(ids, clip(f"{type(exc).__name__}: {exc}", MAX_ERROR_BYTES), seconds, trace=trace)


def _judged(messages: list[Message], batch: bool, returned: object, started: float) -> Result:
    seconds = time.perf_counter() - started
    if not batch:
        return Result(frozenset(), None, seconds)  # returned: it succeeded, whatever the value
    ids = {m.message_id for m in messages}
    reported = failed_ids(returned)
    if reported is None:
        error = f"batch handler returned {type(returned).__name__}, not message ids"
        return Result(frozenset(ids), error, seconds)
    unknown = reported - ids
    if unknown:
        log.warning("handler.unknown_failed_ids", ids=sorted(unknown)[:10], count=len(unknown))
    failed = frozenset(reported & ids)
    return Result(failed, "reported failed by the batch handler" if failed else None, seconds)


def failed_ids(returned: object) -> set[str] | None:
    """The message ids a batch handler's return value names as failed; None if it names
    none in a form we know. Accepted: None (all succeeded), ids or Messages (one or an
    iterable), or Lambda's {"batchItemFailures": [{"itemIdentifier": id}, ...]}."""
    if returned is None:
        return set()
    if isinstance(returned, str | Message):
        returned = [returned]
    if isinstance(returned, dict):
        items = returned.get("batchItemFailures")
        if not isinstance(items, list):
            return None
        returned = [i.get("itemIdentifier") if isinstance(i, dict) else None for i in items]
    if not isinstance(returned, Iterable):
        return None
    out = set()
    for item in returned:
        if isinstance(item, Message):
            item = item.message_id
        if not isinstance(item, str):
            return None
        out.add(item)
    return out


def _close(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # no "coroutine was never awaited" warning on top of our error
