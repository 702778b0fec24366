"""The Producer against the embedded servers: sends by queue name, batches by count and
bytes, FIFO groups and deduplication, the doorbell, and bad input refused before a send."""

from __future__ import annotations

import json

import pytest

from orchestrator import Producer, tracing
from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.errors import InvalidValue, QueueNotFound

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def admin(settings: Settings, store: Store, sqs: Sqs) -> QueueAdmin:
    return QueueAdmin(settings, lambda: store, lambda: sqs)


def received(sqs: Sqs, url: str, count: int) -> list[dict[str, object]]:
    """Every message of the queue (at most `count`), with its attributes."""
    out: list[dict[str, object]] = []
    for _ in range(20):
        got = sqs.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                         MessageAttributeNames=["All"], WaitTimeSeconds=0)
        out += got.get("Messages", [])
        if len(out) >= count or not got.get("Messages"):
            break
    return out


def test_a_send_by_name_arrives_with_a_traceparent_and_rings_the_doorbell(
    admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    queue = admin.create("orders")
    clock = Clock()
    producer = Producer(store, sqs, clock=clock)
    message_id = producer.send("orders", '{"order": 1}')
    [got] = received(sqs, queue.queue_url, 1)
    assert got["MessageId"] == message_id and got["Body"] == '{"order": 1}'
    attributes = got["MessageAttributes"]
    assert isinstance(attributes, dict) and tracing.TRACEPARENT in attributes
    rung = store.get_queue("orders").doorbell_at
    assert rung is not None
    producer.send("orders", "again", trace=False)
    assert store.get_queue("orders").doorbell_at == rung  # once a second per queue at most
    clock.now += 1.0
    producer.send("orders", "later")
    assert store.get_queue("orders").doorbell_at != rung


def test_a_batch_goes_in_requests_sized_by_count_and_bytes(
    admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    queue = admin.create("big")
    bodies = [json.dumps({"i": i, "pad": "x" * 150_000}) for i in range(12)]  # ~1.8 MB
    ids = Producer(store, sqs).send_batch("big", bodies, trace=False)
    assert len(ids) == len(set(ids)) == 12
    got = received(sqs, queue.queue_url, 12)
    assert sorted(json.loads(str(m["Body"]))["i"] for m in got) == list(range(12))


def test_fifo_groups_and_deduplication_ids_reach_sqs(
    admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    queue = admin.create("jobs.fifo")
    producer = Producer(store, sqs)
    producer.send("jobs.fifo", "a", group="tenant-1", dedup_id="same")
    producer.send("jobs.fifo", "a again", group="tenant-1", dedup_id="same")  # deduplicated
    got = sqs.client.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=10,
                                     AttributeNames=["MessageGroupId"])["Messages"]  # fmt: skip
    assert [(m["Body"], m["Attributes"]["MessageGroupId"]) for m in got] == [("a", "tenant-1")]


def test_a_group_on_a_standard_queue_is_its_tenant(
    admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    """SQS fair queues (2025): a MessageGroupId on a standard queue names the tenant; the
    embedded server keeps it (docs/design.md §13)."""
    queue = admin.create("shared")
    Producer(store, sqs).send("shared", "from a", group="tenant-a")
    got = sqs.client.receive_message(
        QueueUrl=queue.queue_url, MessageSystemAttributeNames=["MessageGroupId"])["Messages"]
    assert [m["Attributes"].get("MessageGroupId") for m in got] == ["tenant-a"]


@pytest.mark.parametrize(("queue", "options", "error"), [
    ("plain", {"dedup_id": "d"}, "not a FIFO queue"),
    ("plain", {"delay": 901}, "out of range 0..900"),
    ("plain.fifo", {"delay": 5}, "takes no delay per message"),
    ("plain.fifo", {"group": "has space"}, "group id"),
])  # fmt: skip
def test_bad_input_is_refused_before_anything_is_sent(
    admin: QueueAdmin, store: Store, sqs: Sqs, queue: str, options: dict[str, object],
    error: str,
) -> None:  # fmt: skip
    created = admin.create(queue)
    with pytest.raises(InvalidValue, match=error):  # QueueTypeMismatch for the first two
        Producer(store, sqs).send(queue, "body", **options)  # type: ignore[arg-type]
    assert not received(sqs, created.queue_url, 1)
    assert store.get_queue(queue).doorbell_at is None


def test_an_unknown_queue_and_an_invalid_body_are_refused(
    admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    admin.create("q")
    producer = Producer(store, sqs)
    with pytest.raises(QueueNotFound):
        producer.send("nope", "body")
    with pytest.raises(InvalidValue, match=r"not valid UTF-8|character"):
        producer.send("q", "bad \udc80 byte")
    with pytest.raises(InvalidValue, match=r"send 1\.\.10,000"):
        producer.send_batch("q", [])


def test_the_public_producer_connects_from_the_settings(
    admin: QueueAdmin, settings: Settings, sqs: Sqs
) -> None:
    queue = admin.create("public")
    producer = Producer.from_settings(settings)
    try:
        producer.send("public", "hello")
    finally:
        producer.close()
    assert [m["Body"] for m in received(sqs, queue.queue_url, 1)] == ["hello"]
