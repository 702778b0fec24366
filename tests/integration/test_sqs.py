"""Sqs against the embedded moto server, over a real socket."""

from __future__ import annotations

import json
import socket

import pytest

from orchestrator.backends.sqs import Sqs
from orchestrator.config import Endpoints, Settings
from orchestrator.errors import QueueNotFound, ServiceUnavailable
from orchestrator.metrics import Meter


def test_create_with_dlq_sets_redrive_policy(sqs: Sqs) -> None:
    url, dlq_url = sqs.create_queue(
        "orders", visibility_timeout=45, dlq_name="orders-dlq", max_receive_count=3
    )
    assert url.endswith("/orders") and dlq_url and dlq_url.endswith("/orders-dlq")
    attrs = sqs.client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attrs["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(":orders-dlq")
    assert int(policy["maxReceiveCount"]) == 3
    assert attrs["VisibilityTimeout"] == "45"


def test_fifo_queue_and_dlq_are_fifo(sqs: Sqs) -> None:
    url, dlq_url = sqs.create_queue("jobs.fifo", visibility_timeout=30, dlq_name="jobs-dlq.fifo")
    assert dlq_url
    for u in (url, dlq_url):
        attrs = sqs.client.get_queue_attributes(QueueUrl=u, AttributeNames=["FifoQueue"])
        assert attrs["Attributes"]["FifoQueue"] == "true"
    sqs.send_batch(url, ["a", "b"])
    assert sqs.depth(url).visible == 2


def test_list_reads_every_page(sqs: Sqs) -> None:
    names = [f"p{i}" for i in range(7)]
    for name in names:
        sqs.create_queue(name, visibility_timeout=30)
    urls = sqs.list_queue_urls(page_size=2)
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == names


def test_send_depth_purge(sqs: Sqs) -> None:
    url, _ = sqs.create_queue("d", visibility_timeout=30)
    sqs.send_batch(url, [str(i) for i in range(10)])
    assert sqs.depth(url).visible == 10
    sqs.purge(url)
    assert sqs.depth(url).visible == 0


def test_redrive_moves_every_message_back(sqs: Sqs) -> None:
    url, dlq_url = sqs.create_queue("r", visibility_timeout=30, dlq_name="r-dlq")
    assert dlq_url
    for start in range(0, 25, 10):
        sqs.send_batch(dlq_url, [f"m{i}" for i in range(start, min(start + 10, 25))])
    assert len(sqs.redrive(dlq_url, url, 100)) == 25
    assert sqs.depth(dlq_url).visible == 0
    bodies = set()
    while len(bodies) < 25:
        got = sqs.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        assert got
        bodies |= {m["Body"] for m in got}
    assert bodies == {f"m{i}" for i in range(25)}


def test_redrive_stops_at_its_limit(sqs: Sqs) -> None:
    url, dlq_url = sqs.create_queue("lim", visibility_timeout=30, dlq_name="lim-dlq")
    assert dlq_url
    sqs.send_batch(dlq_url, [f"m{i}" for i in range(10)])
    sqs.send_batch(dlq_url, [f"n{i}" for i in range(5)])
    assert len(sqs.redrive(dlq_url, url, 12)) == 12
    assert sqs.depth(dlq_url).visible == 3 and sqs.depth(url).visible == 12


def test_missing_queue_is_named(sqs: Sqs, endpoints) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueueNotFound, match="'ghost'"):
        sqs.depth(f"{endpoints.sqs_endpoint}/123456789012/ghost")


def test_unreachable_endpoint_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sqs = Sqs(f"http://127.0.0.1:{port}", "us-east-1", "test", "secretkey", connect_timeout=0.5)
    with pytest.raises(ServiceUnavailable, match=f"SQS at http://127.0.0.1:{port} failed") as info:
        sqs.list_queue_urls()
    assert "secretkey" not in str(info.value)


def test_requests_are_counted_by_operation(settings: Settings, endpoints: Endpoints) -> None:
    meter = Meter()
    sqs = Sqs.connect(settings, endpoints.sqs_endpoint, meter, caller="admin")
    url, _ = sqs.create_queue("counted", visibility_timeout=30)
    sqs.send_batch(url, ["a", "b"])
    sqs.receive(url, 10, 0)
    sqs.depth(url)
    assert meter.take()["sqs"] == {"CreateQueue": 1, "SendMessageBatch": 1, "ReceiveMessage": 1,
                                   "GetQueueAttributes": 1}  # fmt: skip
