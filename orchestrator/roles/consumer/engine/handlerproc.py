"""Handler process: runs a queue's handler on the work its consumer sends it.

A queue with `processes` > 1 runs its handlers in that many of these, so that
CPU-bound handlers get more than one core. The consumer keeps everything else
(SQS, the Flow's rules, counts); this process only calls the handler, sync
handlers on threads and `async def` ones on its event loop, and answers each
`RunWork` with a `WorkDone`. It ignores SIGTERM and SIGINT (its consumer decides when
it ends) and exits at once when its consumer is gone.

The typed messages below are the whole protocol, one JSON line each through the codec
(orchestrator/roles/process/codec.py). A message this process does not understand ends
it: its consumer fails what it was running (retried through SQS) and replaces it.
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
from typing import Any, ClassVar, NoReturn

import structlog

from orchestrator import tracing
from orchestrator.config import Settings
from orchestrator.errors import HandlerImportError
from orchestrator.handlers import import_handler
from orchestrator.message import Message
from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine import invoke
from orchestrator.roles.process.channel import Channel, ChannelClosed
from orchestrator.roles.process.codec import Codec, ProtocolError

log = structlog.get_logger()


# --- protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunWork:
    """Consumer → handler process: call the handler on these messages."""

    type: ClassVar[str] = "run_work"
    id: int
    batch: bool
    messages: tuple[dict[str, Any], ...]  # SQS messages as `wire` writes them


@dataclass(frozen=True)
class HandlerExit:
    """Consumer → handler process: finish what runs, then exit."""

    type: ClassVar[str] = "handler_exit"


@dataclass(frozen=True)
class HandlerReady:
    """Handler process → consumer: the handler imported; send work."""

    type: ClassVar[str] = "handler_ready"
    pid: int


@dataclass(frozen=True)
class HandlerImportFailed:
    """Handler process → consumer: the handler cannot be imported (the job fails)."""

    type: ClassVar[str] = "handler_import_failed"
    error: str


@dataclass(frozen=True)
class WorkDone:
    """Handler process → consumer: the outcome of one `RunWork`."""

    type: ClassVar[str] = "work_done"
    id: int
    failed: tuple[str, ...]  # the ids of the messages that failed
    error: str | None
    seconds: float
    backoff: bool = False
    retry_after: float | None = None
    trace: str | None = None


ToHandler = RunWork | HandlerExit
FromHandler = HandlerReady | HandlerImportFailed | WorkDone
HandlerNote = ToHandler | FromHandler
CODEC: Codec[HandlerNote] = Codec(RunWork, HandlerExit, HandlerReady, HandlerImportFailed,
                                  WorkDone)  # fmt: skip
encode = CODEC.encode
decode = CODEC.decode


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
    """The SQS message `wire` wrote; ProtocolError if `doc` is not one."""
    try:
        unwrapped = {}
        for name, attr in (doc.get("message_attributes") or {}).items():
            value = attr.get("BinaryValue")
            if isinstance(value, dict) and "b64" in value:
                attr = {**attr, "BinaryValue": base64.b64decode(value["b64"], validate=True)}
            unwrapped[name] = attr
        message = SqsMessage(**{**doc, "message_attributes": unwrapped})
    except (AttributeError, TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise ProtocolError(f"not an SQS message: {exc}") from None
    if not all(isinstance(v, str) for v in (message.message_id, message.receipt, message.body)):
        raise ProtocolError("not an SQS message: its id, receipt and body must be text")
    if not isinstance(message.attributes, dict):
        raise ProtocolError("not an SQS message: its attributes must be an object")
    return message


# --- the process ------------------------------------------------------------------------


class HandlerProcess:
    """Calls the handler for each `RunWork` and answers with a `WorkDone`: sync handlers
    on a pool of threads fed by this process's main thread, `async def` ones on its loop."""

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

    def send(self, message: FromHandler) -> None:
        try:
            with self.send_lock:
                self.channel.send(encode(message))
        except ChannelClosed:
            os._exit(0)  # the consumer is gone: its messages come back to SQS by themselves

    def _read(self, doc: dict[str, Any] | bytes) -> tuple[RunWork, list[Message]] | None:
        """The work a message asks for, with its handler messages; None: exit."""
        try:
            message = decode(doc)
            if isinstance(message, RunWork):
                return message, [unwire(r).for_handler(self.queue_name, self.queue_url)
                                 for r in message.messages]  # fmt: skip
            if isinstance(message, HandlerExit):
                return None
            raise ProtocolError(f"a consumer sent {message.type!r}")
        except ProtocolError as exc:
            _misunderstood(exc)

    def _answer(self, run: RunWork, result: invoke.Result) -> None:
        self.send(WorkDone(run.id, tuple(sorted(result.failed)), result.error, result.seconds,
                           result.backoff, result.retry_after, result.trace))

    # --- sync handlers: this thread reads, pool threads call and answer --------------------

    def _serve_threads(self) -> None:
        while True:
            try:
                docs = self.channel.read_blocking()
            except ChannelClosed:
                os._exit(0)
            for doc in docs:
                work = self._read(doc)
                if work is None:
                    self.threads.shutdown(wait=True)  # what runs finishes and is answered
                    return
                self.threads.submit(self._call, *work)

    def _call(self, run: RunWork, messages: list[Message]) -> None:
        self._answer(run, invoke.call(self.func, messages, run.batch, self.tracer))

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
                work = self._read(doc)
                if work is None:
                    exiting.set()
                    continue
                task = loop.create_task(self._call_async(*work))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        loop.add_reader(self.channel.fileno(), readable)
        await exiting.wait()
        loop.remove_reader(self.channel.fileno())
        if tasks:
            await asyncio.wait(tasks)  # what runs finishes and is answered

    async def _call_async(self, run: RunWork, messages: list[Message]) -> None:
        self._answer(run, await invoke.call_async(self.func, messages, run.batch, self.tracer))


def _misunderstood(exc: ProtocolError) -> NoReturn:
    """A message from the consumer this process does not understand (a bug on one side):
    exit, so that the consumer fails what ran here and starts another process."""
    log.error("handler_process.bad_message", error=str(exc))
    os._exit(1)


def run(settings: Settings, boot: dict[str, Any]) -> None:
    """The handler process: import the handler, say so, then serve until told to exit."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # its consumer decides when it ends
    channel = Channel(socket.socket(fileno=int(boot["channel_fd"])))
    structlog.contextvars.bind_contextvars(queue=boot["queueName"], job_id=boot["jobId"])
    try:
        func = import_handler(boot["handler"], settings.handler_prefixes)
    except HandlerImportError as exc:
        channel.send(encode(HandlerImportFailed(str(exc))))
        return
    channel.send(encode(HandlerReady(os.getpid())))
    try:
        HandlerProcess(channel, func, boot["queueName"], boot["queueUrl"],
                       settings.max_concurrency).serve()  # fmt: skip
    finally:
        tracing.shutdown(settings.shutdown_grace)  # export the spans still buffered
