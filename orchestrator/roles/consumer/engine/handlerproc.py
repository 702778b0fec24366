"""Handler process: runs a queue's handler on the work its consumer sends it.

A queue with `processes` > 1 runs its handlers in that many of these, so that
CPU-bound handlers get more than one core. The consumer keeps everything else
(SQS, the Flow's rules, counts); this process only calls the handler, sync
handlers on threads and `async def` ones on its event loop, and answers each
`Run` with a `Done`. It ignores SIGTERM and SIGINT (its consumer decides when it
ends) and exits at once when its consumer is gone.

The typed messages below are the whole protocol, one JSON line each.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from orchestrator import tracing
from orchestrator.config import Settings
from orchestrator.errors import HandlerImportError
from orchestrator.handlers import import_handler
from orchestrator.message import Message
from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine import invoke
from orchestrator.roles.process.channel import Channel, ChannelClosed

log = structlog.get_logger()


# --- protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Consumer → handler process: call the handler on these messages."""

    id: int
    batch: bool
    messages: list[dict[str, Any]]  # SQS messages, binary attribute values base64-wrapped


@dataclass(frozen=True)
class Exit:
    """Consumer → handler process: finish what runs, then exit."""


@dataclass(frozen=True)
class Ready:
    """Handler process → consumer: the handler imported; send work."""

    pid: int


@dataclass(frozen=True)
class ImportFailed:
    """Handler process → consumer: the handler cannot be imported (the job fails)."""

    error: str


@dataclass(frozen=True)
class Done:
    """Handler process → consumer: the outcome of one `Run`."""

    id: int
    failed: list[str]
    error: str | None
    seconds: float
    backoff: bool = False
    retry_after: float | None = None
    trace: str | None = None


MESSAGES: dict[str, type] = {cls.__name__: cls for cls in (Run, Exit, Ready, ImportFailed, Done)}
Wire = Run | Exit | Ready | ImportFailed | Done


def encode(message: Wire) -> dict[str, Any]:
    return {"op": type(message).__name__, **asdict(message)}


def decode(doc: dict[str, Any]) -> Wire:
    fields = dict(doc)
    cls = MESSAGES[fields.pop("op")]
    return cls(**fields)  # type: ignore[no-any-return]


def wire(message: SqsMessage) -> dict[str, Any]:
    """An SQS message as JSON can carry it: binary attribute values as base64."""
    wrapped = {}
    for name, attr in message.message_attributes.items():
        attr = dict(attr)
        if isinstance(attr.get("BinaryValue"), bytes | bytearray):
            attr["BinaryValue"] = {"b64": base64.b64encode(attr["BinaryValue"]).decode()}
        wrapped[name] = attr
    return {**asdict(message), "message_attributes": wrapped}


def unwire(doc: dict[str, Any]) -> SqsMessage:
    unwrapped = {}
    for name, attr in (doc.get("message_attributes") or {}).items():
        value = attr.get("BinaryValue")
        if isinstance(value, dict) and "b64" in value:
            attr = {**attr, "BinaryValue": base64.b64decode(value["b64"])}
        unwrapped[name] = attr
    return SqsMessage(**{**doc, "message_attributes": unwrapped})


# --- the process ------------------------------------------------------------------------


class HandlerProcess:
    """Calls the handler for each `Run` and answers with a `Done`: sync handlers on a
    pool of threads fed by this process's main thread, `async def` ones on its loop."""

    def __init__(self, channel: Channel, func: Any, queue_name: str, queue_url: str,
                 max_threads: int) -> None:  # fmt: skip
        self.channel = channel
        self.func = func
        self.queue_name, self.queue_url = queue_name, queue_url
        self.send_lock = threading.Lock()  # answers come from several threads
        self.tracer = tracing.tracer("handler")  # None unless OTEL_* asks for traces
        self.threads = ThreadPoolExecutor(max_threads, thread_name_prefix="handler")

    def serve(self) -> None:
        if invoke.is_async(self.func):
            asyncio.run(self._serve_async())
        else:
            self._serve_threads()

    def send(self, message: Wire) -> None:
        try:
            with self.send_lock:
                self.channel.send(encode(message))
        except ChannelClosed:
            os._exit(0)  # the consumer is gone: its messages come back to SQS by themselves

    def _messages(self, run: Run) -> list[Message]:
        return [unwire(r).for_handler(self.queue_name, self.queue_url)
                for r in run.messages]  # fmt: skip

    def _answer(self, run: Run, result: invoke.Result) -> None:
        self.send(Done(run.id, sorted(result.failed), result.error, result.seconds,
                       result.backoff, result.retry_after, result.trace))

    # --- sync handlers: this thread reads, pool threads call and answer --------------------

    def _serve_threads(self) -> None:
        while True:
            try:
                docs = self.channel.read_blocking()
            except ChannelClosed:
                os._exit(0)
            for doc in docs:
                message = decode(doc)
                if isinstance(message, Run):
                    self.threads.submit(self._call, message)
                elif isinstance(message, Exit):
                    self.threads.shutdown(wait=True)  # what runs finishes and is answered
                    return

    def _call(self, run: Run) -> None:
        self._answer(run, invoke.call(self.func, self._messages(run), run.batch, self.tracer))

    # --- async handlers: everything on the event loop -------------------------------------

    async def _serve_async(self) -> None:
        loop = asyncio.get_running_loop()
        exiting = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def readable() -> None:
            try:
                docs = self.channel.receive()
            except ChannelClosed:
                os._exit(0)
            for doc in docs:
                message = decode(doc)
                if isinstance(message, Run):
                    task = loop.create_task(self._call_async(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif isinstance(message, Exit):
                    exiting.set()

        loop.add_reader(self.channel.fileno(), readable)
        await exiting.wait()
        loop.remove_reader(self.channel.fileno())
        if tasks:
            await asyncio.wait(tasks)  # what runs finishes and is answered

    async def _call_async(self, run: Run) -> None:
        self._answer(run, await invoke.call_async(self.func, self._messages(run), run.batch,
                                                  self.tracer))


def run(settings: Settings, boot: dict[str, Any]) -> None:
    """The handler process: import the handler, say so, then serve until told to exit."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # its consumer decides when it ends
    channel = Channel(socket.socket(fileno=int(boot["channel_fd"])))
    structlog.contextvars.bind_contextvars(queue=boot["queueName"], job_id=boot["jobId"])
    try:
        func = import_handler(boot["handler"], settings.handler_prefixes)
    except HandlerImportError as exc:
        channel.send(encode(ImportFailed(str(exc))))
        return
    channel.send(encode(Ready(os.getpid())))
    try:
        HandlerProcess(channel, func, boot["queueName"], boot["queueUrl"],
                       settings.max_concurrency).serve()  # fmt: skip
    finally:
        tracing.shutdown(settings.shutdown_grace)  # export the spans still buffered
