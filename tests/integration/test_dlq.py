"""The dead-letter browser: list a DLQ's messages with their last failure, redrive or delete
all or chosen ones (CLI and API), against the real servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import Result

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Endpoints, Settings
from orchestrator.models import FailureNote, utcnow

Run = Callable[..., Result]


@pytest.fixture
def admin(settings: Settings, store: Store, sqs: Sqs) -> QueueAdmin:
    return QueueAdmin(settings, lambda: store, lambda: sqs)


def dead_letters(admin: QueueAdmin, sqs: Sqs, name: str, count: int) -> list[str]:
    """`count` messages of `name` moved to its DLQ the way SQS does it (maxReceiveCount 1:
    received once, then moved by the next receive); their message ids."""
    queue = admin.create(name, dlq=True, max_receive_count=1, visibility_timeout=1)
    admin.send(name, count)
    ids: list[str] = []
    while len(ids) < count:
        got = sqs.receive(queue.queue_url, 10, 0, visibility_timeout=0)
        ids += [m.message_id for m in got if m.message_id not in ids]
    sqs.receive(queue.queue_url, 10, 0)  # moto moves them on the receive after
    assert queue.dlq_url
    assert sqs.depth(queue.dlq_url).visible == count
    return ids


def test_the_cli_lists_redrives_and_deletes_chosen_dead_letters(
    run_cli: Run, admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    ids = dead_letters(admin, sqs, "orders", 4)
    store.record_failures([FailureNote("orders", ids[0], 1, "ValueError", "bad total",
                                       "Traceback …\nValueError: bad total", utcnow())])
    listed = run_cli("queue", "dlq", "orders", "--json")
    assert listed.exit_code == 0, listed.output
    found = {d["messageId"]: d for d in json.loads(listed.stdout)}
    assert set(found) == set(ids)
    assert found[ids[0]]["lastFailure"]["error"] == "bad total"
    assert found[ids[1]]["lastFailure"] is None and "seq" in found[ids[1]]["body"]
    table = run_cli("queue", "dlq", "orders").stdout
    assert "ValueError: bad total" in table

    moved = run_cli("queue", "redrive", "orders", "--id", ids[0])
    assert moved.exit_code == 0 and "orders: moved 1 message back" in moved.stdout
    deleted = run_cli("queue", "dlq-purge", "orders", "--id", ids[1], "--id", ids[2])
    assert deleted.exit_code == 0 and "deleted 2 messages" in deleted.stdout
    left = json.loads(run_cli("queue", "dlq", "orders", "--json").stdout)
    assert [d["messageId"] for d in left] == [ids[3]]
    queue = store.get_queue("orders")
    assert sqs.depth(queue.queue_url).visible == 1  # the one redriven is back
    assert run_cli("queue", "dlq-purge", "orders").exit_code == 0
    assert json.loads(run_cli("queue", "dlq", "orders", "--json").stdout) == []


def test_bad_dlq_requests_exit_2_or_1_and_change_nothing(
    run_cli: Run, admin: QueueAdmin, sqs: Sqs
) -> None:
    dead_letters(admin, sqs, "bad", 2)
    admin.create("plain")
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("queue", "redrive", "bad", "--id", "not an id!"), 2, "not an SQS message id"),
        (("queue", "dlq", "bad", "--limit", "0"), 2, "0"),
        (("queue", "dlq", "plain"), 1, "has no DLQ"),
        (("queue", "dlq-purge", "nope"), 1, "does not exist"),
    ]
    for args, code, words in cases:
        result = run_cli(*args)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output
    assert len(json.loads(run_cli("queue", "dlq", "bad", "--json").stdout)) == 2


def test_the_api_does_the_same_behind_the_token(
    admin: QueueAdmin, sqs: Sqs, store: Store, settings: Settings
) -> None:
    import dataclasses

    from orchestrator.http.api import Api, Request
    from orchestrator.http.fleet import Fleet

    ids = dead_letters(admin, sqs, "api-dlq", 3)
    token_settings = dataclasses.replace(settings, api_token="t0ken")
    app = Api(token_settings, Fleet(token_settings, store, sqs), None,  # type: ignore[arg-type]
              lambda: {"status": "ok"})  # fmt: skip
    host = {"host": "127.0.0.1:3000"}

    def call(method: str, path: str, body: Any = None, token: bool = True) -> Any:
        headers = {**host, "content-type": "application/json"}
        if token:
            headers["authorization"] = "Bearer t0ken"
        raw = json.dumps(body).encode() if body is not None else b""
        return app.dispatch(Request(method, path, {}, headers, raw))

    assert call("GET", "/api/queues/api-dlq/dlq", token=False).status == 401
    listed = call("GET", "/api/queues/api-dlq/dlq")
    assert listed.status == 200 and len(json.loads(listed.body)) == 3
    assert call("POST", "/api/queues/api-dlq/redrive", {"ids": [ids[0]]},
                token=False).status == 401  # fmt: skip
    assert call("POST", "/api/queues/api-dlq/redrive", {"ids": "x"}).status == 400
    assert call("POST", "/api/queues/api-dlq/redrive", {"ids": None}).status == 400  # not "all"
    assert call("POST", "/api/queues/api-dlq/dlq/purge", {"ids": None}).status == 400
    assert call("POST", "/api/queues/api-dlq/redrive", {"ids": ["no good"]}).status == 422
    moved = call("POST", "/api/queues/api-dlq/redrive", {"ids": [ids[0], "bogus-1"]})
    assert moved.status == 200
    assert json.loads(moved.body) == {"name": "api-dlq", "moved": 1, "notFound": ["bogus-1"]}
    purged = call("POST", "/api/queues/api-dlq/dlq/purge", {"ids": [ids[1]]})
    assert purged.status == 200
    assert json.loads(purged.body) == {"name": "api-dlq", "deleted": 1, "notFound": []}
    left = json.loads(call("GET", "/api/queues/api-dlq/dlq").body)
    assert [d["messageId"] for d in left] == [ids[2]]
    everything = call("POST", "/api/queues/api-dlq/dlq/purge", {})
    assert everything.status == 200
    assert json.loads(everything.body) == {"name": "api-dlq", "deleted": None, "notFound": []}
    again = call("POST", "/api/queues/api-dlq/dlq/purge", {})  # SQS: one purge a minute
    assert again.status == 409 and "less than 60 s ago" in json.loads(again.body)["message"]


def test_redrive_sizes_its_batches_so_large_messages_go_back(
    run_cli: Run, admin: QueueAdmin, store: Store, sqs: Sqs
) -> None:
    """Three 400 KB messages each fit a message (moto takes up to 1 MiB, as SQS does now)
    but not one batch together: redrive sends them in batches within the batch limit."""
    queue = admin.create("large", dlq=True)
    assert queue.dlq_url
    bodies = [c * 400_000 for c in "abc"]
    for body in bodies:
        sqs.send_batch(queue.dlq_url, [body])
    moved = run_cli("queue", "redrive", "large")
    assert moved.exit_code == 0, moved.output
    assert "moved 3 messages" in moved.stdout
    back = []
    while len(back) < 3:
        back += [m.body for m in sqs.receive(queue.queue_url, 10, 1)]
    assert sorted(back) == bodies
    assert sqs.depth(queue.dlq_url).visible == 0


def test_ids_not_found_are_named_and_exit_1(run_cli: Run, admin: QueueAdmin, sqs: Sqs) -> None:
    ids = dead_letters(admin, sqs, "missing", 2)
    for command, did in (("redrive", "moved 0 messages back"), ("dlq-purge", "deleted 0 messages")):
        result = run_cli("queue", command, "missing", "--id", "bogus")
        assert result.exit_code == 1, result.output
        assert did in result.stdout
        assert "not found in its DLQ: bogus" in result.stderr
    partly = run_cli("queue", "redrive", "missing", "--id", ids[0], "--id", "gone-1")
    assert partly.exit_code == 1
    assert "missing: moved 1 message back" in partly.stdout
    assert "1 message id not found in its DLQ: gone-1" in partly.stderr
    left = json.loads(run_cli("queue", "dlq", "missing", "--json").stdout)
    assert [d["messageId"] for d in left] == [ids[1]]


def test_send_says_message_for_one(run_cli: Run, admin: QueueAdmin) -> None:
    admin.create("one")
    assert run_cli("queue", "send", "one", "1").stdout.strip() == "sent 1 message to one"


def test_a_fifo_dlq_shows_ten_of_a_group_and_says_so(run_cli: Run, admin: QueueAdmin,
                                                      sqs: Sqs) -> None:
    """SQS's group lock: while a look holds a group's first 10 messages, the rest of that
    group is not returned. The look says it saw fewer than the DLQ holds; an id past the
    first 10 is reported not found, never a silent 0; a redrive of all moves them all."""
    queue = admin.create("locked.fifo", dlq=True)
    assert queue.dlq_url
    ids: list[str] = []
    for start in range(0, 25, 10):
        sent = sqs.client.send_message_batch(QueueUrl=queue.dlq_url, Entries=[
            {"Id": str(i), "MessageBody": f"m{i}", "MessageGroupId": "g",
             "MessageDeduplicationId": f"d{i}"} for i in range(start, min(start + 10, 25))])
        ids += [s["MessageId"] for s in sorted(sent["Successful"], key=lambda s: int(s["Id"]))]
    listed = run_cli("queue", "dlq", "locked.fifo", "--limit", "50", "--json")
    assert listed.exit_code == 0, listed.output
    assert [d["messageId"] for d in json.loads(listed.stdout)] == ids[:10]
    assert "showing 10 of about 25" in listed.stderr and "group" in listed.stderr
    late = run_cli("queue", "redrive", "locked.fifo", "--id", ids[14])
    assert late.exit_code == 1 and f"not found in its DLQ: {ids[14]}" in late.stderr
    everything = run_cli("queue", "redrive", "locked.fifo")
    assert everything.exit_code == 0 and "moved 25 messages" in everything.stdout


def test_a_look_shows_each_message_once_and_receives_each_once(admin: QueueAdmin,
                                                                sqs: Sqs) -> None:
    """A look at 100 messages from an SQS that answers each receive in 0.3 s takes longer
    than any fixed short hide: what it has read stays hidden until it ends (renewed while
    it runs), then is handed back at once."""
    queue = admin.create("deep", dlq=True)
    assert queue.dlq_url
    for start in range(0, 100, 10):
        sqs.send_batch(queue.dlq_url, [f"m{i}" for i in range(start, start + 10)])
    # SQS's latency, simulated: not a wait for anything.
    sqs.client.meta.events.register("before-send.sqs.ReceiveMessage",
                                    lambda **_: time.sleep(0.3))  # fmt: skip
    first = admin.dlq("deep", 1000)
    assert len(first.letters) == 100
    assert len({d.message.message_id for d in first.letters}) == 100
    assert sorted(d.message.body for d in first.letters) == sorted(f"m{i}" for i in range(100))
    assert sqs.depth(queue.dlq_url).visible == 100  # all handed back at once
    second = admin.dlq("deep", 1000)
    assert sorted(d.message.receive_count for d in second.letters) == [2] * 100


def test_one_dlq_operation_at_a_time_across_processes(
    run_cli: Run, admin: QueueAdmin, store: Store, sqs: Sqs, settings: Settings,
    endpoints: Endpoints,
) -> None:  # fmt: skip
    """A redrive by one API process holds the queue's DLQ for the fleet: the CLI (exit 1)
    and another API process (409) are refused until it ends, and it leaves nothing behind."""
    from orchestrator.http.api import Api, Request
    from orchestrator.http.fleet import Fleet

    queue = admin.create("shared", dlq=True)
    assert queue.dlq_url
    for start in range(0, 30, 10):
        sqs.send_batch(queue.dlq_url, [f"m{i}" for i in range(start, start + 10)])
    slow = Sqs(endpoints.sqs_endpoint, settings.aws_region, "test", "test")
    receiving = threading.Event()

    def latency(**_: Any) -> None:  # SQS's latency, simulated: not a wait for anything
        receiving.set()
        time.sleep(0.5)

    slow.client.meta.events.register("before-send.sqs.ReceiveMessage", latency)
    first = Fleet(settings, store, slow)
    other_store = Store(endpoints.mongodb_uri, settings.mongodb_name, job_ttl_days=1)
    second = Api(settings, Fleet(settings, other_store, sqs), None,  # type: ignore[arg-type]
                 lambda: {"status": "ok"})  # fmt: skip
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(first.redrive("shared")))
    worker.start()
    try:
        assert receiving.wait(10)
        refused = run_cli("queue", "dlq", "shared")
        assert refused.exit_code == 1, refused.output
        assert "already running" in refused.stderr
        answer = second.dispatch(Request("POST", "/api/queues/shared/redrive", {},
                                         {"host": "127.0.0.1:3000",
                                          "content-type": "application/json"}, b"{}"))
        assert answer.status == 409, answer.body
    finally:
        worker.join(30)
        other_store.close()
    assert result["moved"] == 30
    assert sqs.depth(queue.dlq_url).visible == 0
    assert sqs.depth(queue.queue_url).visible == 30
    assert run_cli("queue", "dlq", "shared").exit_code == 0  # released


def test_a_dlq_lock_is_renewed_while_its_operation_runs(admin: QueueAdmin, store: Store) -> None:
    """Held past its length, a lock stays its holder's: renewed every third of it."""
    from datetime import timedelta

    from orchestrator.models import utcnow

    with admin.dlq_lock("long", seconds=1.5):
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:  # twice its length: taking it must keep failing
            now = utcnow()
            assert store.take_lock("dlq:long", "other", now, now + timedelta(seconds=1))
            time.sleep(0.25)  # polling a condition that must hold throughout
    now = utcnow()
    assert store.take_lock("dlq:long", "other", now, now + timedelta(seconds=1)) is None
