"""Sqs clients record the operations they make for their caller, against the moto server,
and docs/iam/ allows them (the check the session runs at its end: tests/iam.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.backends.sqs import OPS_LOG_ENV, Sqs
from orchestrator.config import Endpoints, Settings
from tests import iam

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ops_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own ops log (a new file: a new once-per-process record)."""
    path = tmp_path / "ops.jsonl"
    monkeypatch.setenv(OPS_LOG_ENV, str(path))
    return path


def test_clients_record_each_operation_once_for_their_caller(
    settings: Settings, endpoints: Endpoints, ops_log: Path
) -> None:
    admin = Sqs.connect(settings, endpoints.sqs_endpoint, caller="admin")
    daemon = Sqs.connect(settings, endpoints.sqs_endpoint, caller="daemon")
    url, dlq_url = admin.create_queue("iam", visibility_timeout=30, dlq_name="iam-dlq")
    assert dlq_url
    admin.send_batch(url, ["a", "b"])
    received = daemon.receive(url, 10, 1)
    assert received
    daemon.delete_batch(url, [m.receipt for m in received])
    daemon.receive(url, 10, 0)  # again: recorded once
    daemon.depth(url)
    # A second client of the same caller in this process adds nothing already recorded.
    Sqs.connect(settings, endpoints.sqs_endpoint, caller="daemon").depth(url)

    lines = [json.loads(line) for line in ops_log.read_text().splitlines()]
    assert len(lines) == len({(d["operation"], d["caller"]) for d in lines}), lines
    records = iam.read_records(ops_log)
    assert records == {
        ("CreateQueue", "admin"), ("GetQueueAttributes", "admin"),
        ("SendMessageBatch", "admin"),
        ("ReceiveMessage", "daemon"), ("DeleteMessageBatch", "daemon"),
        ("GetQueueAttributes", "daemon"),
    }  # fmt: skip
    assert iam.missing(records, iam.load_policies()) == []

    # The daemon's policy lets it consume, not send: the check says so.
    daemon.send_batch(url, ["c"])
    assert iam.missing(iam.read_records(ops_log), iam.load_policies()) == [
        "SendMessageBatch by the daemon role needs sqs:SendMessage, which "
        "docs/iam/daemon.json does not allow"
    ]


def test_clients_of_no_caller_record_nothing(
    settings: Settings, endpoints: Endpoints, ops_log: Path
) -> None:
    """The tests' own clients (the `sqs` fixture) are not the product's."""
    harness = Sqs(endpoints.sqs_endpoint, settings.aws_region, "test", "test")
    harness.create_queue("harness", visibility_timeout=30)
    assert not ops_log.exists()
