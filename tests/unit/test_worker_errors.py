"""The worker and its outbox catch the errors they expect (MongoDB unreachable) and log
the traceback of the rest: never a bug swallowed as if it were an outage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from structlog.testing import capture_logs

from orchestrator import config
from orchestrator.errors import ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import Assignment
from orchestrator.roles.process.protocol import Reason
from orchestrator.roles.worker.outbox import JobEnd, Outbox
from orchestrator.roles.worker.worker import Worker

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class BrokenStore:
    """Stands in for the Store: every call raises what it was given."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return call


def no_spawn() -> Any:
    raise AssertionError("these tests start no consumer")


def worker(error: Exception) -> Worker:
    return Worker(config.load("development", {}), BrokenStore(error), no_spawn)  # type: ignore[arg-type]


def boom() -> None:
    raise KeyError("a bug")


def test_a_bug_in_a_step_is_logged_with_its_traceback_and_is_no_outage() -> None:
    w = worker(KeyError("unused"))
    with capture_logs() as logs:
        assert w._step("reconcile", boom, 0.0, 1.0) is False
    assert [e["event"] for e in logs] == ["loop.error"] and logs[0]["exc_info"]
    assert w.store_ok  # optional writes go on: MongoDB is not known to be down


def test_mongodb_unreachable_in_a_step_is_an_outage() -> None:
    w = worker(KeyError("unused"))

    def down() -> None:
        raise ServiceUnavailable("MongoDB at x: connection refused")

    with capture_logs() as logs:
        assert w._step("heartbeat", down, 0.0, 1.0) is False
    assert [e["event"] for e in logs] == ["service.unavailable"] and "exc_info" not in logs[0]
    assert not w.store_ok


def test_a_shutdown_step_that_breaks_is_logged_with_its_traceback() -> None:
    w = worker(KeyError("unused"))
    with capture_logs() as logs:
        w._quietly(boom)
    assert logs[0]["event"] == "worker.shutdown_step_failed" and logs[0]["exc_info"]


def test_an_outbox_write_that_breaks_is_logged_and_kept() -> None:
    outbox = Outbox(Meter())
    job = Assignment("url", "qid", "q", "w", "0123456789abcdef01234567", T0)
    with capture_logs() as logs:
        outbox.add(JobEnd(job, Reason.DRAINED, 1, 0), BrokenStore(KeyError("a bug")))  # type: ignore[arg-type]
    assert logs[0]["event"] == "outbox.flush_failed" and logs[0]["exc_info"]
    assert outbox.job_ids() == {job.job_id}  # retried by the worker's outbox step
    with capture_logs() as logs:
        outbox.add(JobEnd(job, Reason.DRAINED, 1, 0),
                   BrokenStore(ServiceUnavailable("down")))  # type: ignore[arg-type]  # fmt: skip
    assert logs == []  # an outage: the outbox step logs it, once
