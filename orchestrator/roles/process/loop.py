"""What every role's loop shares: outage handling and waiting for signals."""

from __future__ import annotations

import select
import time
from collections.abc import Callable

import structlog

from orchestrator import policy
from orchestrator.errors import OrchestratorError, SchemaTooNew
from orchestrator.roles.process.signals import STOP, SignalQueue

log = structlog.get_logger()

OUTAGE_BACKOFF_BASE = 0.5
OUTAGE_BACKOFF_CAP = 30.0


class Outage:
    """Tracks a failing dependency: one log line per distinct problem, capped backoff."""

    def __init__(self) -> None:
        self.failures = 0
        self.problem: str | None = None

    def failed(self, exc: BaseException) -> float:
        """Record a failure; return how long to wait before trying again."""
        self.failures += 1
        problem = str(exc)
        if problem != self.problem:
            self.problem = problem
            if isinstance(exc, OrchestratorError):
                log.error("service.unavailable", error=problem, retrying=True)
            else:  # a bug, not an outage: keep the traceback
                log.exception("loop.error", error=problem)
        return policy.backoff(self.failures, OUTAGE_BACKOFF_BASE, OUTAGE_BACKOFF_CAP)

    def recovered(self) -> None:
        if self.failures:
            log.info("service.recovered", after_failures=self.failures)
        self.failures, self.problem = 0, None


def retry(call: Callable[[], object], signals: SignalQueue, what: str) -> bool:
    """Call until it succeeds, with backoff; False if a stop signal came first.
    SchemaTooNew is raised at once: waiting cannot change the database's schema."""
    outage = Outage()
    while True:
        try:
            call()
        except SchemaTooNew:
            raise
        except Exception as exc:
            delay = outage.failed(exc)
        else:
            outage.recovered()
            return True
        if wait(signals, delay):
            log.info("loop.stopped_while_waiting", waiting_for=what)
            return False


def wait(signals: SignalQueue, seconds: float) -> bool:
    """Sleep up to `seconds`, waking early for a signal; True if a stop signal arrived."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([signals.read_fd], [], [], remaining)
        if ready:
            stop = [s for s in signals.drain() if s in STOP]
            if stop:
                signals.requeue(stop)
                return True
