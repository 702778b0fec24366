"""The worker ↔ consumer protocol: every message survives a round trip as JSON, and one
that is not ours is refused; each end reason has one job status (the codec itself:
test_codec.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orchestrator.models import FailureNote
from orchestrator.roles.process import protocol
from orchestrator.roles.process.codec import ProtocolError
from orchestrator.roles.process.protocol import Live, Reason

LIVE = Live(concurrency=3, paused=False, processes=2, batch_size=5, batch_window=0.5)
NOTE = FailureNote("q", "m-1", 3, "ValueError", "bad total", "Traceback …",
                   datetime(2026, 12, 7, 20, 0, 0, 123000, tzinfo=UTC), '{"total": -1}')
MESSAGES: list[protocol.ConsumerNote] = [
    protocol.Assign("j1", "q", "http://sqs/q", "app.jobs:handle", 30, LIVE),
    protocol.Retune("j1", LIVE),
    protocol.Stop("j1", Reason.RELEASED),
    protocol.Stop(None, Reason.SHUTDOWN),
    protocol.Abort("j1"),
    protocol.Exit(),
    protocol.Started("j1", 123, {"sqs": {"ReceiveMessage": 2}}),
    protocol.Progress("j1", 10, 1),
    protocol.Progress("j1", 10, 1, None, 4, 2, (NOTE, NOTE)),
    protocol.Done("j1", 10, 1, Reason.DRAINED, 0, None, ({"pid": 5, "handled": 10},), None),
    protocol.Done("j1", 10, 1, Reason.DRAINED, failures=(NOTE,), duplicates=2),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_a_message_survives_a_round_trip_as_json(message: protocol.ConsumerNote) -> None:
    assert protocol.decode(json.loads(json.dumps(protocol.encode(message)))) == message


@pytest.mark.parametrize(("doc", "problem"), [
    ({"type": "launch"}, "unknown message type 'launch'"),
    ({"op": "stop", "jobId": "j"}, "unknown message type None"),
    ({"type": "stop", "job_id": "j", "reason": "bored"}, "malformed 'stop'"),
    ({"type": "progress", "job_id": "j"}, "malformed 'progress'"),
    ({"type": "retune", "job_id": "j", "live": {"speed": 1}}, "malformed 'retune'"),
    ({"type": "progress", "job_id": "j", "handled": "10", "failed": 0}, "handled: '10'"),
    ({"type": "progress", "job_id": "j", "handled": 1, "failed": 0,
      "failures": [{"messageId": "m", "error": "x"}]}, "malformed 'progress'"),
    ({"type": "run_work", "id": 1, "batch": False, "messages": []}, "unknown message type"),
])  # fmt: skip
def test_a_message_that_is_not_ours_is_refused(doc: dict[str, object], problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        protocol.decode(doc)


@pytest.mark.parametrize(("reason", "status"), [
    (Reason.DRAINED, "completed"), (Reason.MAX_TIME, "completed"), (Reason.PAUSED, "completed"),
    (Reason.PREEMPTED, "completed"),
    (Reason.SHUTDOWN, "interrupted"), (Reason.RELEASED, "interrupted"),
    (Reason.FENCED, "interrupted"), (Reason.ABORTED, "interrupted"),
    (Reason.WORKER_GONE, "interrupted"), (Reason.MEMORY, "interrupted"),
    (Reason.HANDLER_IMPORT, "failed"), (Reason.EXECUTOR_FAILED, "failed"),
    (Reason.ABANDONED, "failed"),
    (Reason.CONSUMER_DIED, "failed"), (Reason.QUEUE_DELETED, "failed"),
    (Reason.ROLE_UNAVAILABLE, "failed"),
])  # fmt: skip
def test_each_reason_has_its_job_status(reason: Reason, status: str) -> None:
    assert reason.status == status


def test_every_reason_is_in_the_table_above() -> None:
    assert len(Reason) == 16
