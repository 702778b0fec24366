"""OpenTelemetry, configured with the standard OTEL_* variables (the SDK's console
exporter here): a consumer span per handled message, child of the producer's trace, with
the messaging attributes, and failures recorded; a span per job in the worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import tracing
from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from tests.process.conftest import Daemon, records, wait_for

pytestmark = pytest.mark.timeout(120)
OTEL = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "orchestrator-test"}  # fmt: skip


def spans(log: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed among the JSON log lines."""
    decoder, found, start = json.JSONDecoder(), [], 0
    while (start := log.find('{\n    "name"', start)) >= 0:
        span, end = decoder.raw_decode(log, start)
        found.append(span)
        start = end
    return found


def test_handled_messages_are_consumer_spans_in_their_producers_traces(
    admin: QueueAdmin, sqs: Sqs, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    queue = admin.create("traced", handler="tests.handlers:poison")
    admin.send("traced", 3, trace=True)
    parent = tracing.new_traceparent()
    sqs.send_batch(queue.queue_url, ['{"seq": 99, "poison": true}'],
                   [{"traceparent": {"DataType": "String", "StringValue": parent}}])
    daemon = start_daemon("--mode", "MW", env=OTEL)
    wait_for(lambda: len(records(record_dir)) >= 3, 60, "the three good messages handled")
    found = wait_for(lambda: [s for s in spans(daemon.log()) if s["name"] == "process traced"
                              and s["status"]["status_code"] == "ERROR"], 60,
                     "the failed message's span")  # fmt: skip
    failed = found[0]
    assert failed["kind"] == "SpanKind.CONSUMER"
    assert failed["context"]["trace_id"] == "0x" + parent.split("-")[1]  # the producer's
    assert failed["parent_id"] == "0x" + parent.split("-")[2]
    attributes = failed["attributes"]
    assert attributes["messaging.system"] == "aws_sqs"
    assert attributes["messaging.destination.name"] == "traced"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["aws.sqs.message.receive_count"] == 1 and attributes["messaging.message.id"]
    assert attributes["error.type"] == "ValueError"
    assert any(e["name"] == "exception" for e in failed["events"])
    good = [s for s in spans(daemon.log()) if s["name"] == "process traced"
            and s["status"]["status_code"] == "UNSET"]  # fmt: skip
    assert len(good) >= 3 and all(s["parent_id"] for s in good)  # each in its own trace
    assert daemon.stop() == 0
    jobs = [s for s in spans(daemon.log()) if s["name"] == "job traced"]
    assert jobs and jobs[0]["attributes"]["orchestrator.job.reason"]
