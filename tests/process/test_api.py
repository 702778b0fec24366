"""The HTTP API of a running daemon, over real HTTP: reads, writes, errors, token, metrics."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.http.api import is_loopback
from tests.http import call, get
from tests.process.conftest import Daemon, api_url, wait_for

TOKEN = "s3cret-token-for-tests"


def metric_samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    status, text = call("GET", f"{base}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def drained(base: str, store: Store, names: list[str]) -> bool:
    queues = {q["name"]: q for q in get(f"{base}/api/queues")}
    empty = all(queues[n]["visible"] == 0 and queues[n]["inFlight"] == 0 for n in names)
    return empty and not store.assignments()


@pytest.mark.timeout(180)
def test_metrics_count_every_process_and_match_the_jobs(
    admin: QueueAdmin, store: Store, start_daemon: Callable[..., Daemon]
) -> None:
    for name in ("m1", "m2"):
        admin.create(name, concurrency=3, handler="tests.handlers:record")
        admin.send(name, 60)
    # Two workers, and a new consumer process for every job: many processes count.
    daemon = start_daemon("--mode", "MW", env={"WORKER_INSTANCES": "2",
                                               "CONSUMER_USAGE_LIMIT": "1"})  # fmt: skip
    base = api_url(daemon)
    wait_for(lambda: drained(base, store, ["m1", "m2"]), 90, "both queues to drain")
    jobs = store.jobs(limit=1000)
    assert jobs and all(j.status == "completed" for j in jobs)
    samples = metric_samples(base)
    for name in ("m1", "m2"):
        job_total = sum(j.message_count for j in jobs if j.queue_name == name)
        assert job_total >= 60
        assert samples[("orchestrator_messages_handled_total", (("queue", name),))] == job_total
        assert samples[("orchestrator_messages_failed_total", (("queue", name),))] == 0
        count = samples[("orchestrator_handler_duration_seconds_count", (("queue", name),))]
        assert count == job_total
        assert samples[("orchestrator_queue_messages", (("queue", name),))] == 0
    assert samples[("orchestrator_workers_live", ())] == 2
    # The master adds its own counts every 2 s: wait for its last one
    wait_for(lambda: metric_samples(base)[("orchestrator_assignments_made_total", ())]
             == len(jobs), 10, "the master's assignment count")  # fmt: skip
    assert samples[("orchestrator_sqs_requests_total", (("operation", "ReceiveMessage"),))] > 0
    assert samples[("orchestrator_sqs_requests_total", (("operation", "DeleteMessageBatch"),))] > 0
    cycles = [v for (n, _), v in samples.items() if n == "orchestrator_master_cycle_seconds_count"]
    assert cycles and cycles[0] > 0
    assert daemon.stop() == 0


@pytest.mark.timeout(180)
def test_reads_writes_and_errors_over_http(
    admin: QueueAdmin, store: Store, sqs: Sqs, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("api-q", concurrency=2, handler="tests.handlers:record", dlq=True)
    admin.create("plain", concurrency=2, handler="tests.handlers:record")
    admin.send("api-q", 20)
    daemon = start_daemon("--mode", "MW", env={"API_TOKEN": TOKEN})
    base = api_url(daemon)
    listening = daemon.events("api.listening")[0]
    assert listening["role"] == "master" and listening["master_id"]
    assert is_loopback(base.split("//")[1].rsplit(":", 1)[0]) and "loopback" in str(listening)
    assert TOKEN not in daemon.log()

    health = wait_for(lambda: get(f"{base}/health")["leader"], 30, "the master to lead")
    health_doc = get(f"{base}/health")
    assert health is True and health_doc["mongodb"] is True and health_doc["status"] == "ok"
    assert health_doc["lastCycleSecondsAgo"] < 5
    wait_for(lambda: drained(base, store, ["api-q"]), 60, "api-q to drain")

    # Reads
    queue = get(f"{base}/api/queues/api-q")
    assert queue["concurrency"] == 2 and queue["handled"] >= 20 and queue["dlqVisible"] == 0
    assert queue["dlqName"] == "api-q-dlq" and queue["paused"] is False
    workers = get(f"{base}/api/workers")
    assert len(workers) == 1 and workers[0]["maxLoad"] >= 1
    jobs = get(f"{base}/api/jobs?queue=api-q&status=completed&limit=5")
    assert jobs and all(j["queueName"] == "api-q" and j["status"] == "completed" for j in jobs)
    assert get(f"{base}/api/jobs/{jobs[0]['id']}")["id"] == jobs[0]["id"]
    assert set(get(f"{base}/openapi.json")["paths"]) >= {"/api/queues/{name}", "/api/jobs"}
    assert "<title>" in get(f"{base}/")

    # Writes need the token, and a refused write changes nothing
    patch = f"{base}/api/queues/api-q"
    assert call("PATCH", patch, {"concurrency": 7})[0] == 401
    assert call("PATCH", patch, {"concurrency": 7}, token="wrong")[0] == 401
    assert call("POST", f"{patch}/redrive", {})[0] == 401
    assert store.get_queue("api-q").concurrency == 2
    status, doc = call("PATCH", patch, {"concurrency": 7, "paused": True}, token=TOKEN)
    assert status == 200 and (doc["concurrency"], doc["paused"]) == (7, True)
    stored = store.get_queue("api-q")
    assert (stored.concurrency, stored.paused) == (7, True)
    status, doc = call("PATCH", patch, {"processes": 2, "batchSize": 4, "batchWindow": 0.5},
                       token=TOKEN)  # fmt: skip
    assert status == 200 and (doc["processes"], doc["batchSize"], doc["batchWindow"]) == (2, 4, 0.5)
    call("PATCH", patch, {"processes": 1, "batchSize": 1, "batchWindow": 0}, token=TOKEN)
    status, doc = call("PATCH", patch, {"rateLimit": 25, "priority": 4, "adaptive": True,
                                        "maxShards": 2}, token=TOKEN)  # fmt: skip
    assert status == 200 and (doc["rateLimit"], doc["priority"], doc["adaptive"],
                              doc["maxShards"]) == (25.0, 4, True, 2)  # fmt: skip
    status, doc = call("PATCH", patch, {"rateLimit": None, "adaptive": False}, token=TOKEN)
    assert status == 200 and doc["rateLimit"] is None
    assert store.get_queue("api-q").rate_limit is None
    call("PATCH", patch, {"priority": 0, "maxShards": 1}, token=TOKEN)

    # Bad input: a JSON error naming the problem, status by kind, nothing changed
    bad: list[tuple[str, str, Any, int, str]] = [
        ("PATCH", patch, {"concurrency": 0}, 422, "concurrency"),
        ("PATCH", patch, {"concurrency": 101}, 422, "concurrency"),
        ("PATCH", patch, {"handler": "no-colon"}, 422, "handler"),
        ("PATCH", patch, {"concurrency": 3, "processes": 9}, 422, "processes 9"),
        ("PATCH", patch, {"batchSize": 101}, 422, "batch size"),
        ("PATCH", patch, {"batchWindow": 20.5}, 422, "batch window"),
        ("PATCH", patch, {"rateLimit": 0}, 422, "rate limit"),
        ("PATCH", patch, {"priority": 10}, 422, "priority 10"),
        ("PATCH", patch, {"maxShards": 9, "priority": 2}, 422, "max shards 9"),
        ("PATCH", patch, {"adaptive": "on"}, 400, "boolean"),
        ("PATCH", patch, {"concurrency": "8"}, 400, "integer"),
        ("PATCH", patch, {"concurrency": True}, 400, "integer"),
        ("PATCH", patch, {"paused": "yes"}, 400, "boolean"),
        ("PATCH", patch, {"colour": "red"}, 400, "colour"),
        ("PATCH", patch, {}, 400, "nothing to change"),
        ("PATCH", patch, [1], 400, "object"),
        ("PATCH", patch, b"{not json", 400, "JSON"),
        ("PATCH", f"{base}/api/queues/nope", {"concurrency": 3}, 404, "nope"),
        ("POST", f"{base}/api/queues/plain/redrive", {}, 409, "DLQ"),
        ("GET", f"{base}/api/queues/nope", None, 404, "nope"),
        ("GET", f"{base}/api/jobs/0123456789abcdef01234567", None, 404, "does not exist"),
        ("GET", f"{base}/api/jobs/not-an-id", None, 404, "does not exist"),
        ("GET", f"{base}/api/jobs?status=lost", None, 400, "status"),
        ("GET", f"{base}/api/jobs?limit=0", None, 400, "limit"),
        ("GET", f"{base}/api/nothing", None, 404, "no such resource"),
        ("DELETE", patch, None, 405, "not allowed"),
    ]
    for method, url, body, want, words in bad:
        status, doc = call(method, url, body, token=TOKEN)
        assert (status, doc["status"]) == (want, want), (method, url, body, doc)
        assert words in doc["message"], (method, url, body, doc)
    status, doc = call("PATCH", patch, b'{"paused": false}', token=TOKEN, content_type="text/plain")
    assert status == 415
    stored = store.get_queue("api-q")
    assert (stored.concurrency, stored.paused, stored.handler) == (7, True, "tests.handlers:record")

    # Redrive: messages in the DLQ go back to the queue, and are handled once it runs again
    assert stored.dlq_url
    sqs.send_batch(stored.dlq_url, ["back-1", "back-2", "back-3"])
    wait_for(lambda: get(f"{base}/api/queues/api-q")["dlqVisible"] == 3, 10, "the DLQ depth")
    status, doc = call("POST", f"{patch}/redrive", {}, token=TOKEN)
    assert status == 200 and doc == {"name": "api-q", "moved": 3, "notFound": []}
    assert call("PATCH", patch, {"paused": False}, token=TOKEN)[0] == 200
    wait_for(lambda: get(patch)["handled"] >= 23, 60, "the redriven messages to be handled")

    # A request addressed to another host name (DNS rebinding) is refused
    status, doc = call("GET", f"{base}/api/queues", headers={"Host": "evil.example:80"})
    assert status == 403
    assert daemon.stop() == 0


@pytest.mark.timeout(120)
def test_a_second_master_on_the_same_port_keeps_working_and_says_why(
    admin: QueueAdmin, store: Store, start_daemon: Callable[..., Daemon]
) -> None:
    first = start_daemon("--mode", "M")
    port = api_url(first).rsplit(":", 1)[1]
    second = start_daemon("--mode", "M", env={"PORT": port})
    failed = wait_for(lambda: second.events("api.bind_failed"), 30, "the bind failure")
    assert failed[0]["port"] == int(port) and "in use" in failed[0]["error"].lower()
    wait_for(lambda: get(f"{api_url(first)}/health")["leader"], 30, "the first to lead")
    # The first stops: the second gets the port, and as the only master it leads
    assert first.stop() == 0
    wait_for(lambda: second.events("api.listening"), 60, "the second to serve the API")
    wait_for(lambda: get(f"http://127.0.0.1:{port}/health")["leader"], 30, "the second to lead")
    assert second.stop() == 0


@pytest.mark.timeout(360)
def test_the_api_keeps_to_its_openapi_description_under_fuzzing(
    admin: QueueAdmin, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """schemathesis generates requests from /openapi.json, valid and not: no 500s, every
    answer as described, bad input refused, the token enforced."""
    admin.create("fuzz", handler="tests.handlers:record", dlq=True)
    daemon = start_daemon("--mode", "M", env={"API_TOKEN": TOKEN})
    base = api_url(daemon)
    wait_for(lambda: get(f"{base}/health")["leader"], 30, "the master to lead")
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [str(st), "run", f"{base}/openapi.json", "--url", base, "--checks", "all",
         "--max-examples", "40", "--seed", "1", "-H", f"Authorization: Bearer {TOKEN}",
         "--no-color"],
        # ~170 s: each look at an empty DLQ is a 1 s long poll (a short one can miss messages)
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
    assert daemon.stop() == 0


def test_clients_without_the_token_trickling_bodies_cannot_starve_health(
    start_daemon: Callable[..., Daemon],
) -> None:
    """The hostile operator's attack: every request slot held by a PATCH with a wrong
    token whose body arrives a byte at a time. The token is checked from the headers,
    so they are refused before their bodies are read, and /health keeps answering."""
    daemon = start_daemon("--mode", "M", env={"API_TOKEN": TOKEN})
    base = api_url(daemon)
    host, port = base.split("//")[1].rsplit(":", 1)
    wait_for(lambda: get(f"{base}/health")["leader"], 30, "the master to lead")
    head = (f"PATCH /api/queues/q HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Authorization: Bearer wrong\r\nContent-Type: application/json\r\n"
            "Content-Length: 60000\r\n\r\n{").encode()  # fmt: skip
    attackers = [socket.create_connection((host, int(port)), timeout=5) for _ in range(12)]
    try:
        for sock in attackers:
            sock.sendall(head)
        answers = [sock.recv(200) for sock in attackers]  # refused before the body
        assert all(a.split(b"\r\n")[0].endswith(b" 401 Unauthorized") for a in answers), answers
        for _ in range(5):
            started = time.monotonic()
            status, _ = call("GET", f"{base}/health")
            assert status == 200 and time.monotonic() - started < 2
    finally:
        for sock in attackers:
            sock.close()
    assert daemon.stop() == 0
