"""FlowParams: everything a Flow is built from, in one frozen value.

The runner builds it from the assignment (its JobSpec) and the consumer's settings;
tests build it with the same defaults, so that they exercise what production runs.
Settings that change while the assignment runs reach the Flow through its set_*
methods; nothing is patched after construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.roles.consumer.engine.receives import MAX_RECEIVES


@dataclass(frozen=True)
class FlowParams:
    """Everything a Flow is built from: the assignment's settings when it starts (later
    changes come through the set_* methods) and the consumer's."""

    limit: int  # concurrency
    fifo: bool
    visibility: int  # the queue's visibility timeout, seconds
    batch_size: int = 1
    batch_window: float = 0.0
    rate: float | None = None  # handler starts a second (None: no limit)
    adaptive: bool = False
    keep_bodies: bool = False  # the queue's failureBodies: failures keep the message body
    drain_empty_polls: int = 2
    max_receives: int = MAX_RECEIVES
    queue_name: str = ""
