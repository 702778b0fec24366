"""The queue CLI against real servers: outputs, exit codes, and bad input changing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from click.testing import Result

from orchestrator import validate
from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings

Run = Callable[..., Result]


def snapshot(store: Store, sqs: Sqs) -> dict[str, Any]:
    """Everything a command could change: queue documents and every SQS queue's state."""
    docs = list(store._db["queues"].find({}, {"updatedAt": 0}).sort("name", 1))
    queues = {}
    for url in sorted(sqs.list_queue_urls()):
        attrs = sqs.client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        queues[url] = {k: v for k, v in attrs.items() if k != "LastModifiedTimestamp"}
    return {"docs": docs, "sqs": queues}


def test_done_when_flow(run_cli: Run) -> None:
    assert run_cli("queue", "create", "demo", "--concurrency", "3").exit_code == 0
    sent = run_cli("queue", "send", "demo", "100")
    assert sent.exit_code == 0, sent.output
    listed = run_cli("queue", "list", "--json")
    assert listed.exit_code == 0
    [demo] = json.loads(listed.stdout)
    assert demo == {
        "name": "demo",
        "queueUrl": demo["queueUrl"],
        "concurrency": 3,
        "handler": "orchestrator.handlers:log",
        "paused": False,
        "managed": True,
        "region": "us-east-1",
        "account": "123456789012",
        "roleArn": None,
        "visible": 100,
        "inFlight": 0,
        "worker": None,
    }
    size = run_cli("queue", "size", "demo", "--json")
    assert json.loads(size.stdout) == {"name": "demo", "visible": 100, "inFlight": 0, "delayed": 0}
    table = run_cli("queue", "list").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "VISIBLE",
        "IN",
        "FLIGHT",
        "CONCURRENCY",
        "PAUSED",
        "WORKER",
    ]
    assert table[1].split() == ["demo", "100", "0", "3", "no", "-"]


def test_create_with_dlq_records_it(run_cli: Run, store: Store, sqs: Sqs) -> None:
    args = ["--dlq", "--max-receive-count", "4", "--visibility-timeout", "60"]
    result = run_cli("queue", "create", "orders", *args, "--handler", "orchestrator.handlers:noop")
    assert result.exit_code == 0, result.output
    q = store.get_queue("orders")
    assert (q.dlq_name, q.max_receive_count, q.visibility_timeout) == ("orders-dlq", 4, 60)
    assert q.dlq_url in sqs.list_queue_urls()
    assert q.handler == "orchestrator.handlers:noop"


def test_max_receive_count_alone_implies_a_dlq(run_cli: Run, store: Store) -> None:
    assert run_cli("queue", "create", "o2", "--max-receive-count", "2").exit_code == 0
    assert store.get_queue("o2").dlq_name == "o2-dlq"


def test_settings_changes_reach_the_document(run_cli: Run, store: Store) -> None:
    run_cli("queue", "create", "q")
    assert run_cli("queue", "set-concurrency", "q", "9").exit_code == 0
    assert run_cli("queue", "set-handler", "q", "orchestrator.handlers:sleep").exit_code == 0
    assert run_cli("queue", "pause", "q").exit_code == 0
    q = store.get_queue("q")
    assert (q.concurrency, q.handler, q.paused) == (9, "orchestrator.handlers:sleep", True)
    assert run_cli("queue", "resume", "q").exit_code == 0
    assert store.get_queue("q").paused is False


def test_queue_set_changes_several_settings_at_once(run_cli: Run, store: Store) -> None:
    created = run_cli("queue", "create", "tuned", "--processes", "2", "--batch-size", "5",
                      "--batch-window", "1.5")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "2 processes, batches of 5 within 1.5 s" in created.stdout
    q = store.get_queue("tuned")
    assert (q.processes, q.batch_size, q.batch_window) == (2, 5, 1.5)
    result = run_cli("queue", "set", "tuned", "--concurrency", "7", "--processes", "3",
                     "--batch-size", "1", "--batch-window", "0", "--handler", "m.n:f")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "tuned: concurrency 7, processes 3, batch size 1, batch window 0, handler m.n:f"
    )
    q = store.get_queue("tuned")
    assert (q.concurrency, q.processes, q.batch_size, q.batch_window, q.handler) == (
        7, 3, 1, 0.0, "m.n:f")  # fmt: skip


def test_send_spreads_fifo_messages_over_groups(run_cli: Run, store: Store, sqs: Sqs) -> None:
    assert run_cli("queue", "create", "o.fifo").exit_code == 0
    assert run_cli("queue", "send", "o.fifo", "6", "--groups", "3").exit_code == 0
    assert run_cli("queue", "send", "o.fifo", "2", "--group-id", "vip").exit_code == 0
    url = store.get_queue("o.fifo").queue_url
    groups: dict[str, list[int]] = {}
    while messages := sqs.receive(url, 10, 0):
        for m in messages:
            groups.setdefault(m.group, []).append(
                json.loads(m.body)["seq"])  # fmt: skip
        sqs.delete_batch(url, [m.receipt for m in messages])
    assert groups == {"g0": [0, 3], "g1": [1, 4], "g2": [2, 5], "vip": [0, 1]}
    bad = run_cli("queue", "send", "o.fifo", "2", "--group-id", "a b")
    assert bad.exit_code == 2 and "group id 'a b' must be" in bad.stderr
    both = run_cli("queue", "send", "o.fifo", "2", "--group-id", "a", "--groups", "2")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_purge_delete_and_sync(run_cli: Run, store: Store, sqs: Sqs) -> None:
    run_cli("queue", "create", "p", "--dlq")
    run_cli("queue", "send", "p", "12")
    assert run_cli("queue", "purge", "p").exit_code == 0
    assert sqs.depth(store.get_queue("p").queue_url).visible == 0

    original = store.get_queue("p")
    sqs.delete_queue(original.queue_url)  # SQS lost it (e.g. the embedded server restarted)
    synced = run_cli("queue", "sync")
    assert synced.exit_code == 0 and "created p in SQS" in synced.stdout
    assert original.queue_url in sqs.list_queue_urls()
    assert store.get_queue("p").id == original.id
    assert "0 queue(s) created" in run_cli("queue", "sync").stdout

    assert run_cli("queue", "delete", "p").exit_code == 0
    assert store.find_queue("p") is None
    assert sqs.list_queue_urls() == []


def test_redrive_through_the_cli(run_cli: Run, store: Store, sqs: Sqs) -> None:
    run_cli("queue", "create", "r", "--dlq")
    q = store.get_queue("r")
    assert q.dlq_url
    sqs.send_batch(q.dlq_url, ["x", "y", "z"])
    result = run_cli("queue", "redrive", "r")
    assert result.exit_code == 0 and "moved 3 messages" in result.stdout
    assert sqs.depth(q.queue_url).visible == 3


INVALID = [
    (("queue", "create", "bad name"), "bad name"),
    (("queue", "create", "x" * 81), "81 characters"),
    (("queue", "create", "a.b"), "'.'"),
    (("queue", "create", "plain.fifo.x"), "not allow"),
    (("queue", "create", "y" * 77, "--dlq"), "too long for a DLQ"),
    (("queue", "create", "ok", "--concurrency", "0"), "concurrency 0 is out of range 1..50"),
    (("queue", "create", "ok", "--concurrency", "51"), "concurrency 51"),
    (("queue", "create", "ok", "--concurrency", "two"), "'two' is not a valid integer"),
    (("queue", "create", "ok", "--handler", "nocolon"), "handler 'nocolon' must look like"),
    (("queue", "create", "ok", "--handler", "a:b:c"), "handler 'a:b:c'"),
    (("queue", "create", "ok", "--handler", ""), "handler '' must look like"),
    (("queue", "create", "ok", "--max-receive-count", "0"), "max receive count 0"),
    (("queue", "create", "ok", "--no-dlq", "--max-receive-count", "3"), "needs a DLQ"),
    (("queue", "create", "ok", "--visibility-timeout", "-1"), "visibility timeout -1"),
    (("queue", "set-concurrency", "exists", "0"), "concurrency 0"),
    (("queue", "set-concurrency", "exists", "1.5"), "'1.5' is not a valid integer"),
    (("queue", "set-concurrency", "exists", "-2"), "concurrency -2 is out of range"),
    (("queue", "set-handler", "exists", "not a path"), "handler 'not a path'"),
    (("queue", "send", "exists", "0"), "count 0 is out of range 1..1,000,000"),
    (("queue", "send", "exists", "-5"), "count -5 is out of range"),
    (("queue", "send", "exists", "1000000000000"), "count 1000000000000 is out of range"),
    # bodies are checked as SQS would, before anything is sent
    (("queue", "send", "exists", "5", "--body", ""), "message body is 0 bytes"),
    (("queue", "send", "exists", "5", "--body", "ok\x01"), "U+0001 at character 2"),
    (("queue", "send", "exists", "5", "--body", "\ufffe"), "U+FFFE"),
    # what Python makes of argv bytes that are not UTF-8 (here b"\xff")
    (("queue", "send", "exists", "5", "--body", "ab\udcff"), "not valid UTF-8 (byte 0xff"),
    (("queue", "send", "exists", "5", "--body", "x" * 1_048_577), "1,048,577 bytes"),
    (("queue", "send", "exists", "5", "--body", "\u00e9" * 524_289), "1,048,578 bytes"),
    # a traceparent attribute (72 bytes) counts toward SQS's limit too
    (("queue", "send", "exists", "1", "--trace", "--body", "x" * 1_048_505),
     "1,048,505 bytes and its attributes 72"),
    # names are checked before the lookup: invalid, not missing
    (("queue", "pause", "../x"), "has characters SQS does not allow: './'"),
    (("queue", "send", "", "1"), "queue name '' is empty"),
    (("queue", "delete", "a b"), "has characters SQS does not allow"),
    (("queue", "create", "ok", "--visibility-timeout", "0"), "would make every message visible"),
    (("queue", "send", "exists", "many"), "'many' is not a valid integer"),
    (("queue", "create", "ok", "--processes", "0"), "processes 0 is out of range 1..8"),
    (("queue", "create", "ok", "--processes", "9"), "processes 9 is out of range"),
    (("queue", "create", "ok", "--batch-size", "101"), "batch size 101 is out of range 1..100"),
    (("queue", "create", "ok", "--batch-window", "20.5"), "batch window 20.5 is out of range"),
    (("queue", "create", "ok", "--batch-window", "nan"), "'nan' is not a valid number"),
    (("queue", "set", "exists"), "nothing to set"),
    (("queue", "set", "exists", "--concurrency", "3", "--processes", "0"), "processes 0"),
    (("queue", "set", "exists", "--batch-size", "0", "--handler", "m:f"), "batch size 0"),
    (("queue", "set", "exists", "--batch-window", "-1"), "batch window -1"),
    (("queue", "set", "exists", "--concurrency", "51"), "concurrency 51"),
    (("queue", "send", "exists", "3", "--group-id", "g"), "not a FIFO queue"),
    (("queue", "send", "exists", "3", "--groups", "2"), "not a FIFO queue"),
    # integers are ASCII digits, nothing else (int() would take each of these)
    (("queue", "create", "ok", "--concurrency", " 5"), "' 5' is not a valid integer"),
    (("queue", "create", "ok", "--concurrency", "+5"), "'+5' is not a valid integer"),
    (("queue", "create", "ok", "--concurrency", "\u0665"), "is not a valid integer"),
    (("queue", "set-concurrency", "exists", "5_0"), "'5_0' is not a valid integer"),
    (("queue", "set", "exists", "--batch-window", "1_0"), "'1_0' is not a valid number"),
    (("queue", "send", "exists", " 3"), "' 3' is not a valid integer"),
    # flow control (issue 14)
    (("queue", "create", "ok", "--rate-limit", "0"), "rate limit 0 is out of range"),
    (("queue", "set", "exists", "--rate-limit", "-2"), "rate limit -2 is out of range"),
    (("queue", "set", "exists", "--rate-limit", "fast"), "'fast' is not a valid number"),
    (("queue", "set", "exists", "--rate-limit", "1e9"), "rate limit 1000000000 is out of range"),
    (("queue", "set", "exists", "--rate-limit", "100000.0000000001"),
     "rate limit 100000.0000000001 is out of range"),
    (("queue", "set", "exists", "--batch-window", "20.000000000000004"),
     "batch window 20.000000000000004 is out of range"),
    (("queue", "create", "ok", "--priority", "10"), "priority 10 is out of range 0..9"),
    (("queue", "set", "exists", "--priority", "-1"), "priority -1 is out of range"),
    (("queue", "create", "ok", "--max-shards", "0"), "max shards 0 is out of range 1..8"),
    (("queue", "set", "exists", "--max-shards", "9", "--priority", "3"), "max shards 9"),
]


def test_flow_control_settings_are_set_shown_and_cleared(run_cli: Run, store: Store) -> None:
    created = run_cli("queue", "create", "fc", "--rate-limit", "12.5", "--priority", "7",
                      "--adaptive", "--max-shards", "3")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "at most 12.5 starts/s, priority 7, adaptive, up to 3 shards" in created.stdout
    q = store.get_queue("fc")
    assert (q.rate_limit, q.priority, q.adaptive, q.max_shards) == (12.5, 7, True, 3)
    changed = run_cli("queue", "set", "fc", "--rate-limit", "none", "--no-adaptive")
    assert changed.exit_code == 0, changed.output
    assert changed.stdout.strip() == "fc: rate limit none, adaptive False"
    q = store.get_queue("fc")
    assert (q.rate_limit, q.priority, q.adaptive, q.max_shards) == (None, 7, False, 3)


@pytest.mark.parametrize(("args", "message"), INVALID, ids=[" ".join(a)[:40] for a, _ in INVALID])
def test_invalid_input_exits_2_and_changes_nothing(
    run_cli: Run, store: Store, sqs: Sqs, args: tuple[str, ...], message: str
) -> None:
    env = {"MAX_CONCURRENCY": "50"}
    assert run_cli("queue", "create", "exists", "--concurrency", "2", env=env).exit_code == 0
    before = snapshot(store, sqs)
    result = run_cli(*args, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(store, sqs) == before


def test_large_bodies_go_in_batches_of_at_most_1_mib(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    """SQS refuses a batch over 1 MiB in all, attributes included."""
    admin = QueueAdmin(settings, lambda: store, lambda: sqs)
    admin.create("big")
    batches: list[int] = []

    def sizes(params: dict[str, Any], **_: Any) -> None:
        entries = params["Entries"]
        batches.append(sum(len(e["MessageBody"]) + validate.attributes_size(
            e.get("MessageAttributes")) for e in entries))

    sqs.client.meta.events.register("provide-client-params.sqs.SendMessageBatch", sizes)
    admin.send("big", 5, "b" * 400_000)
    assert batches == [800_000, 800_000, 400_000]
    admin.send("big", 3, "t" * 524_252, trace=True)  # 524,324 with its traceparent: one a batch
    assert batches[3:] == [524_324] * 3
    assert sqs.depth(store.get_queue("big").queue_url).visible == 8


def test_a_body_of_1_mib_is_sent_and_the_embedded_server_takes_it(
    run_cli: Run, store: Store, sqs: Sqs
) -> None:
    """262,145 bytes was refused when SQS's limit was 256 KiB; the embedded moto server
    takes up to 1 MiB (a batch of that in all) and refuses a byte more, as SQS does."""
    assert run_cli("queue", "create", "mib").exit_code == 0
    for size in (262_145, validate.MAX_BODY_BYTES):
        sent = run_cli("queue", "send", "mib", "1", "--body", "m" * size)
        assert sent.exit_code == 0, sent.output
    url = store.get_queue("mib").queue_url
    assert sqs.depth(url).visible == 2
    with pytest.raises(ClientError):
        sqs.client.send_message(QueueUrl=url, MessageBody="m" * (validate.MAX_BODY_BYTES + 1))
    with pytest.raises(ClientError):
        sqs.client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": "a", "MessageBody": "m" * 524_288}, {"Id": "b", "MessageBody": "m" * 524_289}])


def test_create_existing_exits_1_and_changes_nothing(run_cli: Run, store: Store, sqs: Sqs) -> None:
    assert run_cli("queue", "create", "twice", "--visibility-timeout", "40").exit_code == 0
    before = snapshot(store, sqs)
    result = run_cli("queue", "create", "twice", "--visibility-timeout", "90", "--dlq")
    assert result.exit_code == 1
    assert "queue 'twice' already exists" in result.stderr
    assert snapshot(store, sqs) == before


MISSING = [
    ("queue", "delete", "ghost"),
    ("queue", "size", "ghost"),
    ("queue", "send", "ghost", "3"),
    ("queue", "set-concurrency", "ghost", "3"),
    ("queue", "set-handler", "ghost", "m:f"),
    ("queue", "set", "ghost", "--concurrency", "3"),
    ("queue", "pause", "ghost"),
    ("queue", "resume", "ghost"),
    ("queue", "purge", "ghost"),
    ("queue", "redrive", "ghost"),
]


@pytest.mark.parametrize("args", MISSING, ids=[a[1] for a in MISSING])
def test_missing_queue_exits_1_naming_it(run_cli: Run, args: tuple[str, ...]) -> None:
    result = run_cli(*args)
    assert result.exit_code == 1
    assert "queue 'ghost' does not exist" in result.stderr


def test_queue_missing_from_sqs_points_to_sync(run_cli: Run, store: Store, sqs: Sqs) -> None:
    run_cli("queue", "create", "lost")
    sqs.delete_queue(store.get_queue("lost").queue_url)
    result = run_cli("queue", "send", "lost", "1")
    assert result.exit_code == 1
    assert "queue 'lost' does not exist in SQS (`orchestrator queue sync`" in result.stderr


def test_redrive_without_dlq_says_so(run_cli: Run) -> None:
    run_cli("queue", "create", "nodlq")
    result = run_cli("queue", "redrive", "nodlq")
    assert result.exit_code == 1
    assert "queue 'nodlq' has no DLQ (it was created without --dlq)" in result.stderr


@pytest.mark.parametrize(
    "args",
    [("queue", "list"), ("config", "show"), ("services", "status"), ("queue", "create", "x")],
)
def test_bad_setting_stops_any_command(run_cli: Run, store: Store, args: tuple[str, ...]) -> None:
    result = run_cli(*args, env={"MAX_LOAD": "abc"})
    assert result.exit_code == 2
    assert "MAX_LOAD" in result.stderr and "'abc'" in result.stderr
    assert store.find_queue("x") is None


def test_queue_name_used_by_a_dlq_is_refused(run_cli: Run, store: Store, sqs: Sqs) -> None:
    assert run_cli("queue", "create", "a", "--dlq").exit_code == 0
    before = snapshot(store, sqs)
    taken = run_cli("queue", "create", "a-dlq")
    assert taken.exit_code == 1 and "it is queue 'a's DLQ" in taken.stderr
    assert run_cli("queue", "create", "b").exit_code == 0
    before = snapshot(store, sqs)
    clash = run_cli("queue", "create", "b-dlq-owner", "--dlq")
    assert clash.exit_code == 0  # sanity: an unrelated DLQ name is fine
    run_cli("queue", "delete", "b-dlq-owner")
    assert run_cli("queue", "create", "c-dlq").exit_code == 0
    before = snapshot(store, sqs)
    refused = run_cli("queue", "create", "c", "--dlq")
    assert refused.exit_code == 1 and "DLQ name 'c-dlq' is taken" in refused.stderr
    assert snapshot(store, sqs) == before


def test_invalid_input_fails_fast_when_services_are_down(run_cli: Run) -> None:
    down = {"MONGODB_URI": "mongodb://127.0.0.1:1/", "AWS_SQS_ENDPOINT": "http://127.0.0.1:1"}
    for args in (("queue", "create", "bad name!"), ("queue", "set-concurrency", "q", "0"),
                 ("queue", "set-handler", "q", "nope"), ("queue", "send", "q", "0")):  # fmt: skip
        result = run_cli(*args, env=down)
        assert result.exit_code == 2, (args, result.output)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"MONGODB_URI": "mongodb://u:hunter2@127.0.0.1:99999/"}, "MONGODB_URI"),
        ({"MONGODB_URI": "mongodb://"}, "MONGODB_URI"),
        ({"AWS_SQS_ENDPOINT": "http://"}, "AWS_SQS_ENDPOINT"),
    ],
)
def test_unusable_addresses_exit_2_naming_the_setting(
    run_cli: Run, env: dict[str, str], key: str
) -> None:
    result = run_cli("queue", "sync", env=env)  # needs both MongoDB and SQS
    assert result.exit_code == 2, result.output
    assert key in result.stderr and "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_services_start_never_prints_a_password(run_cli: Run) -> None:
    env = {"MONGODB_URI": "mongodb://admin:hunter2@127.0.0.1:1/"}
    result = run_cli("services", "start", env=env)
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "mongodb://***@127.0.0.1:1/" in result.stdout


def test_config_show_redacts_secrets(run_cli: Run) -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-key", "API_TOKEN": "tok-9", "MAX_LOAD": "7"}
    shown = run_cli("config", "show", "--json", env=env)
    values = json.loads(shown.stdout)
    assert values["MAX_LOAD"] == 7 and values["AWS_SECRET_ACCESS_KEY"] == "***"
    text = run_cli("config", "show", env=env).stdout
    for out in (shown.stdout, text):
        assert "s3cr3t-key" not in out and "tok-9" not in out
    assert "MAX_LOAD=7" in text


def test_real_console_script_exit_codes(run_console: Callable[..., Any]) -> None:
    ok = run_console("queue", "create", "cs")
    assert ok.returncode == 0, ok.stderr
    bad = run_console("queue", "set-concurrency", "cs", "0")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "Error: concurrency 0 is out of range 1..100 (MAX_CONCURRENCY)",
    )
    missing = run_console("queue", "size", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (1, "Error: queue 'nope' does not exist")
    wrong = run_console("queue", "list", env={"MAX_LOAD": "abc"})
    assert wrong.returncode == 2 and "MAX_LOAD" in wrong.stderr


def test_services_status_json_shape(  # type: ignore[no-untyped-def]
    run_cli: Run, endpoints, settings: Settings
) -> None:
    doc = json.loads(run_cli("services", "status", "--json").stdout)
    assert doc["mongodb"]["running"] is True and isinstance(doc["mongodb"]["pid"], int)
    assert doc["sqs"] == {
        "endpoint": endpoints.sqs_endpoint,
        "pid": doc["sqs"]["pid"],
        "running": True,
    }
    assert doc["mongodb"]["uri"] == endpoints.mongodb_uri
    assert doc["dataDir"] == settings.data_dir and settings.data_dir.startswith("/")


@pytest.mark.parametrize(
    "args",
    [
        ("queue", "create", "new", "--handler", "os:system"),
        ("queue", "set-handler", "exists", "builtins:eval"),
        ("queue", "set", "exists", "--handler", "myapplication:f"),
    ],
)
def test_a_handler_outside_handler_modules_is_refused(
    run_cli: Run, store: Store, sqs: Sqs, args: tuple[str, ...]
) -> None:
    env = {"HANDLER_MODULES": "myapp,orchestrator.handlers"}
    assert run_cli("queue", "create", "exists", env=env).exit_code == 0
    before = snapshot(store, sqs)
    result = run_cli(*args, env=env)
    assert result.exit_code == 2, result.output
    assert "is outside HANDLER_MODULES (myapp, orchestrator.handlers)" in result.stderr
    assert snapshot(store, sqs) == before


def test_send_reads_a_long_body_from_a_file_or_standard_input(
    run_cli: Run, environ: dict[str, str], store: Store, sqs: Sqs, tmp_path: Path
) -> None:
    """A body over ~128 KiB cannot be one argument (execve: Argument list too long):
    --body-file takes it from a file, or from standard input with `-`."""
    assert run_cli("queue", "create", "long").exit_code == 0
    url = store.get_queue("long").queue_url
    from_file = tmp_path / "body.json"
    from_file.write_bytes(b'{"k": "' + b"f" * (validate.MAX_BODY_BYTES - 10) + b'"}\n')
    sent = run_cli("queue", "send", "long", "1", "--body-file", str(from_file))
    assert sent.exit_code == 0, sent.output
    piped = "\u00e9" * 300_000  # 600,000 bytes, through the real console script's stdin
    done = subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli.main import main; main()",
         "queue", "send", "long", "2", "--body-file", "-"],
        input=piped.encode(), env={**os.environ, **environ}, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    bodies = sorted(m.body for m in sqs.peek(url, 10))
    assert bodies == sorted([from_file.read_text(), piped, piped])


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b"x", ("--body", "y"), "give either --body or --body-file, not both"),
        (b"", (), "message body is 0 bytes"),
        (b"ab\xff", (), "not valid UTF-8 (byte 0xff at character 2)"),
        (b"x" * 1_048_577, (), "is over 1,048,576 bytes"),
        (None, (), "cannot read"),
    ],
)
def test_a_bad_body_file_exits_2_and_sends_nothing(
    run_cli: Run, store: Store, sqs: Sqs, tmp_path: Path,
    content: bytes | None, extra: tuple[str, ...], message: str,
) -> None:  # fmt: skip
    assert run_cli("queue", "create", "long").exit_code == 0
    path = tmp_path / "body"
    if content is not None:
        path.write_bytes(content)
    before = snapshot(store, sqs)
    result = run_cli("queue", "send", "long", "1", "--body-file", str(path), *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert snapshot(store, sqs) == before
