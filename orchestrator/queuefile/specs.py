"""A queue file's entries once checked (Spec), and the steps of a plan (Change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator import validate
from orchestrator.models import QueueRecord
from orchestrator.queueref import QueueRef

# The tuning fields: the file's key (PATCH's) → the QueueRecord attribute.
TUNING = {tunable.field: attribute for attribute, tunable in validate.TUNABLE.items()}
DEFAULT_VISIBILITY_TIMEOUT = 30
DEFAULT_MAX_RECEIVE_COUNT = 5


@dataclass(frozen=True)
class Create:
    """A `create:` entry's SQS attributes; None: not written (a default on a new queue,
    left as it is on an existing one)."""

    visibility_timeout: int | None = None
    dlq: bool | None = None
    max_receive_count: int | None = None


@dataclass(frozen=True)
class Spec:
    """One queue of the file, checked: what it asks for, and where each key was written."""

    name: str
    source: str
    lines: dict[str, int]  # key → its line (1-based); "" → the entry's first line
    create: Create | None  # exactly one of create and adopt
    adopt: str | None  # the URL or ARN as written
    ref: QueueRef | None
    region: str | None  # as written (None: not written)
    role_arn: str | None
    role_arn_given: bool
    tuning: dict[str, Any]  # QueueRecord attribute → checked value; only those written

    def at(self, key: str = "") -> str:
        return f"{self.source}:{self.lines.get(key, self.lines[''])}"


@dataclass(frozen=True)
class Change:
    """One step of a plan: create, adopt, update (field by field) or remove a queue."""

    action: str  # "create", "adopt", "update" or "remove"
    name: str
    spec: Spec | None = None  # None for a removal
    record: QueueRecord | None = None  # None for a creation or an adoption
    updates: tuple[tuple[str, Any, Any], ...] = ()  # (file key, old, new)

    def lines(self) -> list[str]:
        """The plan's lines for it, `terraform plan`-like."""
        if self.action == "update":
            return [f"~ update {self.name} {key}: {text(old)} → {text(new)}"
                    for key, old, new in self.updates]  # fmt: skip
        if self.action == "remove":
            assert self.record is not None
            return [f"- remove {self.name} ({_removal(self.record)})"]
        assert self.spec is not None
        sets = ", ".join(f"{key}: {text(value)}" for key, value in _sets(self.spec))
        what = f"{self.action} {self.name}" + (f" ({self.spec.adopt})" if self.spec.adopt else "")
        return [f"+ {what}" + (f" with {sets}" if sets else "")]


def text(value: Any) -> str:
    """A value as the file would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return validate.number_text(value)
    return str(value)


def _sets(spec: Spec) -> list[tuple[str, Any]]:
    """What a new queue gets beside the defaults (a created one's SQS attributes always)."""
    out: list[tuple[str, Any]] = []
    if spec.create is not None:
        c = spec.create
        out.append(("visibilityTimeout", c.visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT))
        out.append(("dlq", bool(c.dlq)))
        if c.dlq:
            out.append(("maxReceiveCount", c.max_receive_count or DEFAULT_MAX_RECEIVE_COUNT))
    else:
        out += [("region", spec.region)] if spec.region else []
        out += [("roleArn", spec.role_arn)] if spec.role_arn else []
    tuned = [(validate.TUNABLE[attr].field, value) for attr, value in spec.tuning.items()]
    return out + tuned


def _removal(record: QueueRecord) -> str:
    if not record.managed:
        return "adopted: only forgotten here, the queue stays in SQS"
    return "managed: deleted in SQS" + (f" with its DLQ {record.dlq_name}" if record.dlq_name
                                         else "")  # fmt: skip


