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
from orchestrator.runner import Runner
from orchestrator.signals import SignalQueue
from orchestrator.sqs import Sqs

log = structlog.get_logger()


class Consumer:
    """Runs one assignment at a time, as its worker asks."""

    def __init__(self, settings: Settings, sqs: Sqs, channel: Channel) -> None:
        self.settings = settings
        self.sqs = sqs
        self.channel = channel
        self.signals = SignalQueue((signal.SIGTERM,))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides about Ctrl-C
        self.stopping = False
        self.pending: list[dict[str, Any]] = []

    def run(self) -> None:
        self.channel.send({"event": "ready", "pid": os.getpid()})
        selector = selectors.DefaultSelector()
        selector.register(self.channel.sock, selectors.EVENT_READ)
        selector.register(self.signals.read_fd, selectors.EVENT_READ)
        while not self.stopping:
            selector.select(timeout=1.0)
            for op in self._control():
                if op["op"] == "assign":
                    self._run_job(op)
                elif op["op"] in ("stop", "exit"):
                    self.stopping = True

    def _control(self) -> list[dict[str, Any]]:
        """Pending control messages; a signal or a closed channel turns into a stop."""
        ops, self.pending = self.pending, []
        for sig in self.signals.drain():
            if self.stopping:
                log.warning("consumer.killed", signal=sig.name)
                os._exit(1)  # second signal: at once; unfinished messages reappear in SQS
            self.stopping = True
            ops.append({"op": "stop", "reason": "shutdown"})
        try:
            ops.extend(self.channel.receive())
        except ChannelClosed:
            log.warning("consumer.orphaned", reason="worker channel closed")
            self.stopping = True
            ops.append({"op": "stop", "reason": "worker_gone"})
        return ops

    def _run_job(self, job: dict[str, Any]) -> None:
        structlog.contextvars.bind_contextvars(queue=job["queueName"], job_id=job["jobId"])
        try:
            handler = import_handler(job["handler"])
        except HandlerImportError as exc:
            log.error("consumer.handler_import_failed", handler=job["handler"], error=str(exc))
            self._report(job, {"event": "done", "handled": 0, "failed": 0,
                               "reason": "handler_import", "error": str(exc)})  # fmt: skip
            return
        self._report(job, {"event": "started", "pid": os.getpid()})
        log.info("consumer.job_started", concurrency=job["concurrency"])
        runner = Runner(
            self.sqs,
            job,
            handler,
            drain_empty_polls=self.settings.drain_empty_polls,
            max_seconds=self.settings.assignment_max_seconds,
            max_concurrency=self.settings.max_concurrency,
            control=self._runner_control,
            progress=lambda handled, failed: self._report(
                job, {"event": "progress", "handled": handled, "failed": failed}
            ),
        )
        outcome = runner.run()
        log.info("consumer.job_done", handled=outcome.handled, failed=outcome.failed,
                 reason=outcome.reason)  # fmt: skip
        self._report(job, {"event": "done", "handled": outcome.handled,
                           "failed": outcome.failed, "reason": outcome.reason})  # fmt: skip
        structlog.contextvars.unbind_contextvars("queue", "job_id")

    def _runner_control(self) -> list[dict[str, Any]]:
        """Control messages for the runner; anything else waits for after the job."""
        ops = self._control()
        self.pending.extend(op for op in ops if op["op"] in ("assign", "exit"))
        return [op for op in ops if op["op"] in ("settings", "stop")]

    def _report(self, job: dict[str, Any], event: dict[str, Any]) -> None:
        try:
            self.channel.send({**event, "jobId": job["jobId"]})
        except ChannelClosed:
            self.stopping = True  # nobody to report to; the master will clean up after us


def run(settings: Settings, endpoints: Endpoints, channel_fd: int) -> None:
    """The consumer process: serve assignments from the worker at the other end of the fd."""
    channel = Channel(socket.socket(fileno=channel_fd))
    sqs = Sqs(endpoints.sqs_endpoint, settings.aws_region, settings.aws_access_key_id,
              settings.aws_secret_access_key)  # fmt: skip
    Consumer(settings, sqs, channel).run()
    log.info("consumer.stopped")
