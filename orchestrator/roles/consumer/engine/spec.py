"""What a consumer is asked to run (JobSpec) and what came of it (Outcome).

Small types the consumer, the runner and its SQS calls all use: they live apart from
the runner so that a module needing a job's description does not import the engine
that runs it (and the engine's modules do not import each other in a circle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason


@dataclass(frozen=True)
class JobSpec:
    """What a consumer is asked to run: the `assign` message from its worker."""

    job_id: str
    queue_name: str
    queue_url: str
    handler: str
    concurrency: int
    paused: bool = False
    visibility_timeout: int = 30
    processes: int = 1
    batch_size: int = 1
    batch_window: float = 0.0
    rate_limit: float | None = None
    adaptive: bool = False
    failure_bodies: bool = False

    @property
    def fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")

    @classmethod
    def of(cls, assign: protocol.Assign) -> JobSpec:
        live = assign.live
        return cls(
            job_id=assign.job_id, queue_name=assign.queue_name, queue_url=assign.queue_url,
            handler=assign.handler, concurrency=live.concurrency, paused=live.paused,
            visibility_timeout=assign.visibility_timeout, processes=live.processes,
            batch_size=live.batch_size, batch_window=live.batch_window,
            rate_limit=live.rate_limit, adaptive=live.adaptive,
            failure_bodies=assign.failure_bodies,
        )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its counts and end reason (the consumer's `Done` report)."""

    handled: int
    failed: int
    reason: Reason
    abandoned: int = 0  # handlers still running when the run gave up waiting for them
    error: str | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)  # handler processes' counts
    duplicates: int = 0  # copies received while the message was still here: not run twice
