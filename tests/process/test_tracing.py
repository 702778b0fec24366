"""OpenTelemetry, configured with the standard OTEL_* variables (the SDK's console
exporter here): a consumer span per handled message, child of the producer's trace, with
the messaging attributes, and failures recorded; a span per job in the worker."""

from __future__ import annotations

import json
import os
import socket
import time
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


def _free_port() -> int:
    """A local port with nothing listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("bad", [{"OTEL_BSP_SCHEDULE_DELAY": "-5"},
                                 {"OTEL_BSP_MAX_QUEUE_SIZE": "0"}])  # fmt: skip
def test_a_configuration_the_sdk_refuses_disables_tracing_not_the_daemon(
    admin: QueueAdmin, record_dir: Path, start_daemon: Callable[..., Daemon],
    bad: dict[str, str],
) -> None:  # fmt: skip
    """It was a ValueError in tracing's set-up: three crashes, supervisor.giving_up, exit 1."""
    admin.create("plain", handler="tests.handlers:record")
    admin.send("plain", 5)
    daemon = start_daemon("--mode", "MW", env={**OTEL, **bad})
    wait_for(lambda: len(records(record_dir)) >= 5, 60, "the messages handled untraced")
    [said] = daemon.events("tracing.disabled")  # once for the daemon, by the supervisor
    assert said["role"] == "supervisor" and "ValueError" in said["reason"]
    assert daemon.stop() == 0
    assert not daemon.events("supervisor.giving_up") and not daemon.events("process.crashed")
    assert not spans(daemon.log())


def test_without_the_extra_tracing_unavailable_is_said_once_per_daemon(
    admin: QueueAdmin, record_dir: Path, start_daemon: Callable[..., Daemon], tmp_path: Path,
    daemon_env: dict[str, str],
) -> None:  # fmt: skip
    shadow = tmp_path / "shadow" / "opentelemetry"  # the packages, as if not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("not installed (test)")\n')
    path = os.pathsep.join([str(shadow.parent), daemon_env["PYTHONPATH"]])
    for name in ("a", "b", "c"):
        admin.create(name, handler="tests.handlers:record")
        admin.send(name, 3)
    daemon = start_daemon("--mode", "MW", "--workers", "2", env={**OTEL, "PYTHONPATH": path})
    wait_for(lambda: len(records(record_dir)) >= 9, 60, "every queue's messages handled")
    assert len(daemon.events("consumer.spawned")) >= 2  # processes that would each have said it
    assert daemon.stop() == 0
    [said] = daemon.events("tracing.unavailable")
    assert said["role"] == "supervisor"


def test_an_unreachable_exporter_neither_slows_sigterm_nor_writes_plain_lines(
    admin: QueueAdmin, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """SIGTERM took 11 s (the SDK retried for 10 s) and the SDK's own stdlib records came
    out as plain `Transient error HTTPConnectionPool…` lines among the JSON ones."""
    otlp = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}  # fmt: skip
    admin.create("lost", handler="tests.handlers:record")
    admin.send("lost", 5, trace=True)
    daemon = start_daemon("--mode", "MW", env=otlp)
    wait_for(lambda: len(records(record_dir)) >= 5, 60, "the messages handled")
    sdk = wait_for(lambda: [e for e in _lines(daemon.log()) if e.get("logger", "").startswith(
        "opentelemetry")], 30, "the SDK's failed exports logged")  # fmt: skip
    assert sdk[0]["level"] == "warning" and sdk[0]["role"] and sdk[0]["pid"]
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 6  # each flush is cut at 1 s (8 s and more uncut)
    lines = daemon.log().splitlines()
    assert lines and all(line.startswith("{") and json.loads(line) for line in lines), [
        line for line in lines if not line.startswith("{")][:3]


def _lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]
