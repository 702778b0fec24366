"""The worker ↔ consumer protocol: frozen messages, one JSON line each on their channel.

Worker → consumer: `Assign` a job, `Retune` it to its queue's live settings, `Stop`
it (for a reason), `Exit` the process. A consumer turns its own signals into `Stop`
and `Abort`. Consumer → worker: `Started`, `Progress` (about every second) and `Done`
with the job's outcome; each carries the consumer's metric counts since the last, and
`Progress` and `Done` the handlers' failures as FailureNotes.

`Reason` is why a job ended; its `status` is the job's status. The codec (codec.py)
writes and reads them; a message of an unknown type, or with fields that do not fit,
is a ProtocolError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from orchestrator.metrics import Deltas
from orchestrator.models import FailureNote, QueueRecord, Share
from orchestrator.roles.process.codec import Codec
from orchestrator.roles.process.codec import ProtocolError as ProtocolError  # where it was


class Reason(enum.StrEnum):
    """Why a job ended (the job document's `endReason`)."""

    DRAINED = "drained"  # the queue was empty
    MAX_TIME = "max_time"  # ASSIGNMENT_MAX_SECONDS: other queues get a turn
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # the worker (or the consumer) was told to stop
    RELEASED = "released"  # the assignment was taken away (a master judged us dead)
    FENCED = "fenced"  # the worker could not heartbeat: stopped before others take over
    ABORTED = "aborted"  # a second signal: stop at once
    WORKER_GONE = "worker_gone"  # the consumer's worker went away
    MEMORY = "memory"  # the consumer passed CONSUMER_MAX_RSS_MB: it is replaced
    PREEMPTED = "preempted"  # gave way to a queue of higher priority
    HANDLER_IMPORT = "handler_import"  # the handler could not be imported
    EXECUTOR_FAILED = "executor_failed"  # a handler thread died outside the handler (a bug)
    ABANDONED = "abandoned"  # handlers never returned: their messages go back
    CONSUMER_DIED = "consumer_died"
    QUEUE_DELETED = "queue_deleted"
    ROLE_UNAVAILABLE = "role_unavailable"  # the queue's IAM role could not be assumed

    @property
    def status(self) -> str:
        """The job's status when it ends for this reason."""
        if self in _COMPLETED:
            return "completed"
        if self in _FAILED:
            return "failed"
        return "interrupted"  # cut short: nothing lost, the queue goes on elsewhere


_COMPLETED = frozenset({Reason.DRAINED, Reason.MAX_TIME, Reason.PAUSED, Reason.PREEMPTED})
_FAILED = frozenset(
    {Reason.HANDLER_IMPORT, Reason.EXECUTOR_FAILED, Reason.ABANDONED, Reason.CONSUMER_DIED,
     Reason.QUEUE_DELETED, Reason.ROLE_UNAVAILABLE}
)


@dataclass(frozen=True)
class Live:
    """The queue settings a running consumer follows (relayed whenever they change).
    A shard's concurrency and rate are its share of the queue's (0: waiting for it)."""

    concurrency: int
    paused: bool = False
    processes: int = 1
    batch_size: int = 1
    batch_window: float = 0.0
    rate_limit: float | None = None
    adaptive: bool = False

    @classmethod
    def of(cls, queue: QueueRecord, share: Share | None = None) -> Live:
        concurrency, rate = queue.concurrency, queue.rate_limit
        if share is not None:
            concurrency, rate = (share.concurrency if share.granted else 0), share.rate_limit
        return cls(concurrency, queue.paused, queue.processes, queue.batch_size,
                   queue.batch_window, rate, queue.adaptive)  # fmt: skip


# --- worker → consumer ----------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    type: ClassVar[str] = "assign"
    job_id: str
    queue_name: str
    queue_url: str
    handler: str
    visibility_timeout: int
    live: Live
    failure_bodies: bool = False  # failures keep the message body (the queue opted in)
    region: str | None = None  # the queue's region (None: AWS_REGION)
    role_arn: str | None = None  # the IAM role its calls act as (None: the worker's own)


@dataclass(frozen=True)
class Retune:
    """Follow the queue's settings as they are now (they changed while it runs)."""

    type: ClassVar[str] = "retune"
    job_id: str
    live: Live


@dataclass(frozen=True)
class Stop:
    """Stop receiving, hand back what is held, let running handlers finish."""

    type: ClassVar[str] = "stop"
    job_id: str | None
    reason: Reason


@dataclass(frozen=True)
class Abort:
    """Stop at once: hand back everything, running handlers too."""

    type: ClassVar[str] = "abort"
    job_id: str | None


@dataclass(frozen=True)
class Exit:
    type: ClassVar[str] = "exit"


# --- consumer → worker ----------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    type: ClassVar[str] = "started"
    job_id: str | None
    pid: int
    metrics: Deltas | None = None


@dataclass(frozen=True)
class Progress:
    type: ClassVar[str] = "progress"
    job_id: str | None
    handled: int
    failed: int
    metrics: Deltas | None = None
    effective: int | None = None  # the concurrency it runs at now (adaptive, shares)
    running: int | None = None  # handlers running now
    failures: tuple[FailureNote, ...] = ()  # handlers' failures since the last report
    oldest_age: float | None = None  # the oldest message received since the last report, s


@dataclass(frozen=True)
class Done:
    type: ClassVar[str] = "done"
    job_id: str | None
    handled: int
    failed: int
    reason: Reason
    abandoned: int = 0  # handlers that never returned: the consumer exits after this
    error: str | None = None
    processes: tuple[dict[str, Any], ...] = ()  # its handler processes' counts
    metrics: Deltas | None = None
    failures: tuple[FailureNote, ...] = ()  # handlers' failures since the last report
    duplicates: int = 0  # copies of messages it still had, received again and not run


ToConsumer = Assign | Retune | Stop | Abort | Exit
ToWorker = Started | Progress | Done
ConsumerNote = ToConsumer | ToWorker  # what either end of the channel may say
CODEC: Codec[ConsumerNote] = Codec(Assign, Retune, Stop, Abort, Exit, Started, Progress, Done)
encode = CODEC.encode
decode = CODEC.decode
