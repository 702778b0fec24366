"""Consumer process: takes assignments from its worker over a channel and runs them.

It talks to SQS only; its worker owns every MongoDB write for it. It stops
when told to, on SIGTERM (gracefully; a second one ends it at once), or when
its worker is gone (the channel closes): it never goes on unsupervised.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator import tracing
from orchestrator.backends.sqs import Sqs
from orchestrator.config import Endpoints, Settings
from orchestrator.handlers import import_handler
from orchestrator.metrics import Meter
from orchestrator.roles.consumer.engine import invoke
from orchestrator.roles.consumer.engine.calls import RECEIVE_WAIT_SECONDS
from orchestrator.roles.consumer.engine.executors import (
    AsyncExecutor,
    Executor,
    MessageMaker,
    ThreadExecutor,
)
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.handlerpool import HandlerPool
from orchestrator.roles.consumer.engine.runner import Control, ExecutorFactory, Runner
from orchestrator.roles.consumer.engine.spec import JobSpec
from orchestrator.roles.process import processes as processes_
from orchestrator.roles.process import protocol
from orchestrator.roles.process.channel import Channel, ChannelClosed
from orchestrator.roles.process.codec import ProtocolError
from orchestrator.roles.process.protocol import Reason
from orchestrator.roles.process.signals import SignalQueue

# An SQS call that hangs must fail well inside the worker's 30 s stall watchdog, as an
# outage the consumer reports and rides out: 2 attempts of (2 s connect + a 1 s long
# poll + 4 s) is at most ~15 s. boto3's defaults (60 s, 3 attempts) outlast it.
SQS_CALL = {"connect_timeout": 2, "read_timeout": RECEIVE_WAIT_SECONDS + 4, "attempts": 2}

log = structlog.get_logger()


class Consumer:
    """Runs one assignment at a time, as its worker asks (orchestrator/roles/process/protocol.py).

    `Settings` and `Stop` are for the current job (one naming another job is stale and
    ignored); an `Assign` or `Exit` that comes while a job runs waits for its end.
    """

    def __init__(
        self, settings: Settings, sqs: Sqs, channel: Channel, meter: Meter, boot: dict[str, Any]
    ) -> None:
        self.settings = settings
        self.boot = boot  # what its handler processes start with
        self.sqs = sqs
        self.meter = meter  # its counts ride on every report to the worker
        self.channel = channel
        self.signals = SignalQueue((signal.SIGTERM,))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides about Ctrl-C
        self.exiting = False
        self.signalled = False
        self.current: str | None = None  # job id
        self.pending: list[protocol.ToConsumer] = []
        self.closed = False  # the worker's end of the channel closed
        self.tracer = tracing.tracer("consumer")  # None unless OTEL_* asks for traces

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.channel.sock, selectors.EVENT_READ)
        selector.register(self.signals.read_fd, selectors.EVENT_READ)
        while not self.exiting:
            selector.select(timeout=1.0)
            for op in self._control():
                if isinstance(op, protocol.Assign) and not self.exiting:
                    self._run_job(op)
                elif isinstance(op, protocol.Exit):
                    self.exiting = True

    def _control(self) -> list[protocol.ToConsumer]:
        """Pending control messages, with signals and a closed channel turned into ones."""
        ops, self.pending = self.pending, []
        for sig in self.signals.drain():
            ops.append(self._on_signal(sig))
        if self.closed:
            return ops
        try:
            docs = self.channel.receive()
        except ChannelClosed:
            log.warning("consumer.orphaned", reason="worker channel closed")
            self.closed = self.exiting = True  # never go on unsupervised
            ops.append(protocol.Stop(self.current, Reason.WORKER_GONE))
            return ops
        for doc in docs:
            try:
                op = protocol.decode(doc)
            except ProtocolError as exc:
                log.error("consumer.bad_message", error=str(exc))
                continue
            if isinstance(op, protocol.Started | protocol.Progress | protocol.Done):
                log.error("consumer.bad_message", error=f"a worker sent {op.type!r}")
                continue
            ops.append(op)
        return ops

    def _watch(self) -> list[int]:
        """What the runner waits on besides its own wake-ups: signals and the channel."""
        return [self.signals.read_fd] + ([] if self.closed else [self.channel.fileno()])

    def _on_signal(self, sig: signal.Signals) -> protocol.ToConsumer:
        """First SIGTERM: finish the current job gracefully, then exit. Second: abort."""
        self.exiting = True
        if self.signalled:
            log.warning("consumer.aborting", signal=sig.name)
            return protocol.Abort(self.current)
        self.signalled = True
        return protocol.Stop(self.current, Reason.SHUTDOWN)

    def _run_job(self, assign: protocol.Assign) -> None:
        spec = JobSpec.of(assign)
        self.current = spec.job_id
        structlog.contextvars.bind_contextvars(queue=spec.queue_name, job_id=spec.job_id)
        self._report(protocol.Started(self.current, os.getpid(), self.meter.take()))
        log.info("consumer.job_started", concurrency=spec.concurrency, processes=spec.processes,
                 batch_size=spec.batch_size)  # fmt: skip
        runner = Runner(
            self.sqs.at(assign.region, assign.role_arn),  # the queue's region, its role
            spec,
            self._executors(spec),
            drain_empty_polls=self.settings.drain_empty_polls,
            max_seconds=self.settings.assignment_max_seconds,
            grace=self.settings.shutdown_grace,
            control=self._runner_control,
            progress=lambda handled, failed: self._report(
                protocol.Progress(self.current, handled, failed, self.meter.take(),
                                  *runner.flow.load(), runner.flow.failures.take(),
                                  runner.flow.take_oldest_age())
            ),
            meter=self.meter,
            watch=self._watch,
        )
        outcome = runner.run()
        if outcome.reason is Reason.HANDLER_IMPORT:
            log.error("consumer.handler_import_failed", handler=spec.handler, error=outcome.error)
        log.info("consumer.job_done", handled=outcome.handled, failed=outcome.failed,
                 reason=outcome.reason, abandoned=outcome.abandoned)  # fmt: skip
        self._report(protocol.Done(self.current, outcome.handled, outcome.failed, outcome.reason,
                                   outcome.abandoned, outcome.error, tuple(outcome.processes),
                                   self.meter.take(),
                                   runner.flow.failures.take(),
                                   outcome.duplicates))  # fmt: skip
        structlog.contextvars.unbind_contextvars("queue", "job_id")
        self.current = None
        if outcome.abandoned:
            # Handler threads that would not finish cannot be stopped: end the process.
            log.warning("consumer.exiting_with_stuck_handlers", stuck=outcome.abandoned)
            tracing.shutdown(self.settings.shutdown_grace)
            os._exit(0)

    def _executors(self, spec: JobSpec) -> ExecutorFactory:
        """Builds the job's executor: handlers in this process, or in handler processes."""
        loaded: list[Callable[..., Any]] = []

        def make(flow: Flow, processes: int) -> Executor:
            messages = MessageMaker(spec.queue_name, spec.queue_url, self.tracer)
            if processes > 1:
                boot = {**self.boot, "handler": spec.handler, "queueName": spec.queue_name,
                        "queueUrl": spec.queue_url, "jobId": spec.job_id}  # fmt: skip
                return HandlerPool(flow, lambda: processes_.spawn("handler", boot, channel=True),
                                   processes)  # fmt: skip
            if not loaded:
                loaded.append(import_handler(spec.handler, self.settings.handler_prefixes))
            func = loaded[0]
            if invoke.is_async(func):
                return AsyncExecutor(flow, func, messages)
            return ThreadExecutor(flow, func, messages)

        return make

    def _runner_control(self) -> list[Control]:
        """Control messages for the current job; an assign or exit waits for after it."""
        ops: list[Control] = []
        for op in self._control():
            if isinstance(op, protocol.Assign | protocol.Exit):
                self.pending.append(op)
            elif op.job_id in (None, self.current):
                ops.append(op)
        return ops

    def _report(self, event: protocol.ToWorker) -> None:
        try:
            self.channel.send(protocol.encode(event))
        except ChannelClosed:
            self.exiting = True  # nobody to report to; the master will clean up after us


def run(settings: Settings, endpoints: Endpoints, channel_fd: int) -> None:
    """The consumer process: serve assignments from the worker at the other end of the fd."""
    channel = Channel(socket.socket(fileno=channel_fd))
    meter = Meter()
    sqs = Sqs.connect(settings, endpoints.sqs_endpoint, meter, caller="daemon", **SQS_CALL)
    try:
        Consumer(settings, sqs, channel, meter,
                 processes_.boot_document(settings, endpoints)).run()  # fmt: skip
    finally:
        tracing.shutdown(settings.shutdown_grace)  # export the spans still buffered
    log.info("consumer.stopped")
