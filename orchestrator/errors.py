"""The project's exception tree: one base, each class named for what happened.

`exit_code` is what the CLI exits with when the error reaches it:
2 for bad input (nothing was changed), 1 for an operation that failed.
"""

from __future__ import annotations

from typing import Any


class Backoff(Exception):
    """Raised by a handler: the downstream is overloaded. The message is retried (hidden
    `retry_after` seconds when given, else the usual backoff) and, on an `adaptive`
    queue, the running concurrency halves. Not an OrchestratorError: it is the
    handler's signal to us, not our error."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("the downstream asked for a backoff" + (
            f" of {retry_after:g} s" if retry_after is not None else ""))
        self.retry_after = retry_after


class OrchestratorError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class ConfigError(OrchestratorError):
    """A setting is unknown, of the wrong type or out of range."""

    exit_code = 2


class InvalidValue(OrchestratorError):
    """A value given by the user breaks a rule (queue name, concurrency, handler path)."""

    exit_code = 2


class QueueFileInvalid(InvalidValue):
    """A queue file (`queue apply`) has problems, or asks for changes that cannot be made
    in place: every one, each `FILE:LINE: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class QueueNotFound(OrchestratorError):
    """The named queue has no document in MongoDB (or no SQS queue)."""

    def __init__(self, name: str, where: str = "") -> None:
        detail = f" in {where}" if where else ""
        if where == "SQS":  # e.g. the in-memory embedded SQS server was restarted
            detail += " (`orchestrator queue sync` recreates queues MongoDB knows)"
        super().__init__(f"queue '{name}' does not exist{detail}")
        self.name = name


class QueueExists(OrchestratorError):
    """A queue with that name is already managed."""

    def __init__(self, name: str) -> None:
        super().__init__(f"queue '{name}' already exists")
        self.name = name


class MadeElsewhere(OrchestratorError):
    """`queue create` of a name SQS already has, with other attributes: adopt it instead."""

    exit_code = 2


class QueueTypeMismatch(InvalidValue):
    """An option the queue's type does not take: a deduplication id on a standard queue,
    a per-message delay on a FIFO one (SQS would refuse it); nothing was sent. Exit 2."""


class NotOurs(OrchestratorError):
    """A purge of an adopted queue's (or its DLQ's) messages, not confirmed: they are the
    owning team's. Nothing was deleted."""

    exit_code = 2


class NameTaken(OrchestratorError):
    """A queue or DLQ name is already used by another managed queue's DLQ or queue."""


class NoDeadLetterQueue(OrchestratorError):
    """The queue was created without a DLQ, so there is nothing to redrive."""

    def __init__(self, name: str) -> None:
        super().__init__(f"queue '{name}' has no DLQ (it was created without --dlq)")


class SchemaTooNew(OrchestratorError):
    """The database was upgraded by a newer orchestrator to a layout this one does not know.

    Nothing was written. A daemon's process that meets it exits with this code at once:
    restarting cannot help (roles/process/child.py, roles/process/supervisor.py).
    """

    exit_code = 2

    def __init__(self, database: str, found: int, understood: int, version: str) -> None:
        super().__init__(
            f"the database '{database}' has schema version {found}; this orchestrator "
            f"{version} understands up to {understood}: upgrade orchestrator first "
            "(see docs/mongodb.md, 'Upgrades')"
        )
        self.found = found
        self.understood = understood


class ServiceUnavailable(OrchestratorError):
    """MongoDB or SQS could not be reached or refused the request."""


class RoleUnavailable(ServiceUnavailable):
    """A queue's IAM role could not be assumed: an outage of the queues behind it only."""


class EmbeddedServerError(OrchestratorError):
    """An embedded server could not be started, reused or stopped."""


class HandlerImportError(OrchestratorError):
    """A queue's handler path could not be imported."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot import handler {path!r}: {reason}")
        self.path = path


class AlreadyRunning(OrchestratorError):
    """The same operation on the same queue is under way (e.g. a redrive)."""


class MetricsPartlyWritten(ServiceUnavailable):
    """Some of a flush's metric documents were written; `unwritten` holds the rest."""

    def __init__(self, message: str, unwritten: dict[str, Any]) -> None:
        super().__init__(message)
        self.unwritten = unwritten
