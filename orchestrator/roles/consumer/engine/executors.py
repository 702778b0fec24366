"""Executors: where a consumer's handlers run, pulling their work from the Flow.

- ThreadExecutor: sync handlers, one thread per running call, in this process.
  A thread that finishes takes the next held message itself: no hand-off through
  a pool, a future or a result queue per message.
- AsyncExecutor: `async def` handlers as tasks on one event loop thread, however
  high the concurrency.
- HandlerPool (orchestrator/roles/consumer/engine/handlerpool.py): either of these in handler
  processes, for handlers that need more than one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from orchestrator.message import Message

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
from orchestrator.roles.consumer.engine import invoke
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.running import Work
from orchestrator.roles.process.protocol import Reason

log = structlog.get_logger()


@dataclass(frozen=True)
class Fatal:
    """Why the job cannot go on with this executor: its end reason and error."""

    reason: Reason
    error: str


class Executor(Protocol):
    """What the runner needs from an executor."""

    def start(self) -> None: ...

    def resize(self, limit: int, processes: int) -> None: ...

    def maintain(self) -> Fatal | None:
        """Periodic upkeep (replacing dead handler processes); a fatal error, if any."""
        ...

    def retire(self) -> None:
        """Take no more work; what runs finishes and is reported to the flow."""
        ...

    def close(self, kill: bool) -> None:
        """End for good (`kill`: without waiting for handler processes)."""
        ...

    def report(self) -> list[dict[str, Any]]:
        """Per-process counts for the job document (empty when handlers run in-process)."""
        ...


class MessageMaker:
    """Turns held SQS messages into the Messages handlers get (and knows the tracer their
    calls' spans go to, when traces are on)."""

    def __init__(self, queue_name: str, queue_url: str, tracer: Tracer | None = None) -> None:
        self.queue_name, self.queue_url, self.tracer = queue_name, queue_url, tracer

    def __call__(self, work: Work) -> list[Message]:
        return [h.message.for_handler(self.queue_name, self.queue_url) for h in work.messages]


class ThreadExecutor:
    """Sync handlers in threads of this process; threads start as work comes, up to the
    concurrency, and the ones above a lowered concurrency end when they are idle."""

    def __init__(self, flow: Flow, func: Callable[..., Any], messages: MessageMaker) -> None:
        self.flow, self.func, self.messages = flow, func, messages
        self.context = contextvars.copy_context()  # handlers log with the job's bindings
        self.wanted = flow.limits.concurrency
        self.alive = 0
        self.started = 0
        self.fatal: Fatal | None = None  # a handler thread died outside the handler
        flow.handoff.listen(self._grow)

    def start(self) -> None:
        self._grow()

    def resize(self, limit: int, processes: int) -> None:
        with self.flow.lock:
            self.wanted = limit
        self._grow()

    def maintain(self) -> Fatal | None:
        return self.fatal

    def retire(self) -> None:
        with self.flow.lock:
            self.wanted = 0
            self.flow.handoff.notify_all()

    def close(self, kill: bool) -> None:
        self.retire()  # threads cannot be killed: a stuck one ends with the process

    def report(self) -> list[dict[str, Any]]:
        return []

    def _grow(self) -> None:
        """Start threads for work that has none, up to the concurrency."""
        with self.flow.lock:
            need = min(self.wanted, self.flow.demand()) - self.alive
            self.alive += max(need, 0)
        for _ in range(need):
            self.started += 1
            thread = threading.Thread(
                target=self.context.copy().run, args=(self._loop,),
                name=f"handler-{self.started}", daemon=True,
            )  # fmt: skip
            thread.start()

    def _should_exit(self) -> bool:
        """Called holding the flow's lock."""
        if self.alive > self.wanted:
            self.alive -= 1
            return True
        return False

    def _loop(self) -> None:
        work: Work | None = None
        try:
            while True:
                work = self.flow.wait_for_work(self._should_exit)
                if work is None:
                    return
                result = invoke.call(self.func, self.messages(work), work.batch,
                                     self.messages.tracer)  # fmt: skip
                self.flow.finished(work, result)
                work = None
        except Exception as exc:  # a bug outside the handler (which invoke catches)
            self._died(work, exc)

    def _died(self, work: Work | None, exc: Exception) -> None:
        """A thread that dies must not stall the job silently: log the traceback, fail
        what it held (retried through SQS like any failure) and end the job failed."""
        log.exception("handler_thread.died")
        error = f"a handler thread died: {type(exc).__name__}: {exc}"
        with self.flow.lock:
            self.alive -= 1
            self.fatal = self.fatal or Fatal(Reason.EXECUTOR_FAILED, error)
        if work is not None:
            ids = frozenset(h.message_id for h in work.messages)
            self.flow.finished(work, invoke.Result(ids, error, 0.0))  # wakes the runner


class AsyncExecutor:
    """`async def` handlers as tasks on one event loop, in a thread of this process."""

    def __init__(self, flow: Flow, func: Callable[..., Any], messages: MessageMaker) -> None:
        self.flow, self.func, self.messages = flow, func, messages
        self.context = contextvars.copy_context()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.timer: asyncio.TimerHandle | None = None
        self.retired = False
        self.thread = threading.Thread(
            target=self.context.run, args=(self._thread_main,), name="handler-loop", daemon=True
        )
        flow.handoff.listen(self._wake_threadsafe)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)

    def resize(self, limit: int, processes: int) -> None:
        """Nothing to do: the flow bounds the tasks."""

    def maintain(self) -> Fatal | None:
        return None

    def retire(self) -> None:
        self.retired = True
        self._wake_threadsafe()

    def close(self, kill: bool) -> None:
        self.retire()

    def report(self) -> list[dict[str, Any]]:
        return []

    def _wake_threadsafe(self) -> None:
        loop, event = self.loop, self.event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = event = asyncio.Event()
        self.ready.set()
        tasks: set[asyncio.Task[None]] = set()
        while not self.retired:
            event.clear()
            while (work := self.flow.take()) is not None:
                task = asyncio.create_task(self._run(work, event))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self._wake_when_window_ends(event)
            await event.wait()
        if tasks:
            await asyncio.wait(tasks)  # retired: what runs still finishes and is reported

    def _wake_when_window_ends(self, event: asyncio.Event) -> None:
        """A partial batch waits for its window: look again when it ends."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        wait = self.flow.window_wait()
        if wait is not None and self.loop is not None:
            self.timer = self.loop.call_later(wait + 0.001, event.set)

    async def _run(self, work: Work, event: asyncio.Event) -> None:
        result = await invoke.call_async(self.func, self.messages(work), work.batch,
                                         self.messages.tracer)
        self.flow.finished(work, result)
        event.set()
