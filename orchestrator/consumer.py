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
from typing import Any

import structlog

from orchestrator.channel import Channel, ChannelClosed
from orchestrator.config import Settings
from orchestrator.embedded import Endpoints
from orchestrator.errors import HandlerImportError
from orchestrator.handlers import import_handler
from orchestrator.metrics import Meter
from orchestrator.runner import Runner
from orchestrator.signals import SignalQueue
from orchestrator.sqs import Sqs

log = structlog.get_logger()


class Consumer:
    """Runs one assignment at a time, as its worker asks.

    Control messages: `assign` (a job), `settings` and `stop` (for the current job:
    a stop naming another job is stale and ignored), `exit` (end the process).
    """

    def __init__(self, settings: Settings, sqs: Sqs, channel: Channel, meter: Meter) -> None:
        self.settings = settings
        self.sqs = sqs
        self.meter = meter  # its counts ride on every report to the worker
        self.channel = channel
        self.signals = SignalQueue((signal.SIGTERM,))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides about Ctrl-C
        self.exiting = False
        self.signalled = False
        self.current: str | None = None  # job id
        self.pending: list[dict[str, Any]] = []

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.channel.sock, selectors.EVENT_READ)
        selector.register(self.signals.read_fd, selectors.EVENT_READ)
        while not self.exiting:
            selector.select(timeout=1.0)
            for op in self._control():
                if op["op"] == "assign" and not self.exiting:
                    self._run_job(op)
                elif op["op"] == "exit":
                    self.exiting = True

    def _control(self) -> list[dict[str, Any]]:
        """Pending control messages, with signals and a closed channel turned into ops."""
        ops, self.pending = self.pending, []
        for sig in self.signals.drain():
            ops.append(self._on_signal(sig))
        try:
            ops.extend(self.channel.receive())
        except ChannelClosed:
            if not self.exiting:
                log.warning("consumer.orphaned", reason="worker channel closed")
            self.exiting = True  # never go on unsupervised
            ops.append({"op": "stop", "jobId": self.current, "reason": "worker_gone"})
        return ops

    def _on_signal(self, sig: signal.Signals) -> dict[str, Any]:
        """First SIGTERM: finish the current job gracefully, then exit. Second: abort."""
        self.exiting = True
        if self.signalled:
            log.warning("consumer.aborting", signal=sig.name)
            return {"op": "abort", "jobId": self.current}
        self.signalled = True
        return {"op": "stop", "jobId": self.current, "reason": "shutdown"}

    def _run_job(self, job: dict[str, Any]) -> None:
        self.current = job["jobId"]
        structlog.contextvars.bind_contextvars(queue=job["queueName"], job_id=job["jobId"])
        try:
            handler = import_handler(job["handler"])
        except HandlerImportError as exc:
            log.error("consumer.handler_import_failed", handler=job["handler"], error=str(exc))
            self._report({"event": "done", "handled": 0, "failed": 0,
                          "reason": "handler_import", "error": str(exc)})  # fmt: skip
            return
        self._report({"event": "started", "pid": os.getpid()})
        log.info("consumer.job_started", concurrency=job["concurrency"])
        runner = Runner(
            self.sqs,
            job,
            handler,
            drain_empty_polls=self.settings.drain_empty_polls,
            max_seconds=self.settings.assignment_max_seconds,
            grace=self.settings.shutdown_grace,
            max_concurrency=self.settings.max_concurrency,
            control=self._runner_control,
            progress=lambda handled, failed: self._report(
                {"event": "progress", "handled": handled, "failed": failed}
            ),
            meter=self.meter,
        )
        outcome = runner.run()
        log.info("consumer.job_done", handled=outcome.handled, failed=outcome.failed,
                 reason=outcome.reason, abandoned=outcome.abandoned)  # fmt: skip
        self._report({"event": "done", "handled": outcome.handled, "failed": outcome.failed,
                      "reason": outcome.reason, "abandoned": outcome.abandoned})  # fmt: skip
        structlog.contextvars.unbind_contextvars("queue", "job_id")
        self.current = None
        if outcome.abandoned:
            # Handler threads that would not finish cannot be stopped: end the process.
            log.warning("consumer.exiting_with_stuck_handlers", stuck=outcome.abandoned)
            os._exit(0)

    def _runner_control(self) -> list[dict[str, Any]]:
        """Control messages for the current job; an assign or exit waits for after it."""
        ops = []
        for op in self._control():
            if op["op"] in ("assign", "exit"):
                self.pending.append(op)
            elif op.get("jobId") in (None, self.current):
                ops.append(op)
        return ops

    def _report(self, event: dict[str, Any]) -> None:
        try:
            self.channel.send({**event, "jobId": self.current, "metrics": self.meter.take()})
        except ChannelClosed:
            self.exiting = True  # nobody to report to; the master will clean up after us


def run(settings: Settings, endpoints: Endpoints, channel_fd: int) -> None:
    """The consumer process: serve assignments from the worker at the other end of the fd."""
    channel = Channel(socket.socket(fileno=channel_fd))
    meter = Meter()
    Consumer(settings, Sqs.connect(settings, endpoints.sqs_endpoint, meter), channel, meter).run()
    log.info("consumer.stopped")
