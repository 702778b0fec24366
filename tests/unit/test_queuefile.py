"""Queue files: reading with line numbers, planning, and dumping (orchestrator/queuefile.py)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from orchestrator import config, queuefile
from orchestrator.config import Settings
from orchestrator.errors import QueueFileInvalid
from orchestrator.models import QueueRecord

URL = "https://sqs.eu-west-1.amazonaws.com/111111111111/billing"
ROLE = "arn:aws:iam::111111111111:role/orchestrator"
EXAMPLE = f"""\
queues:
  - name: orders
    create:
      visibilityTimeout: 30
      dlq: true
      maxReceiveCount: 5
    handler: myapp.jobs:handle
    concurrency: 8
  - name: billing-eu
    adopt: arn:aws:sqs:eu-west-1:111111111111:billing
    roleArn: {ROLE}
    handler: billing.handlers:handle
    rateLimit: 50
"""


@pytest.fixture(scope="module")
def settings() -> Settings:
    return config.load("development", {"MAX_CONCURRENCY": "100"})


def load(text: str, settings: Settings) -> list[queuefile.Spec]:
    return queuefile.load(textwrap.dedent(text), "q.yaml", settings)


def problems(text: str, settings: Settings) -> list[str]:
    with pytest.raises(QueueFileInvalid) as caught:
        load(text, settings)
    return caught.value.problems


def managed(name: str, **fields: Any) -> QueueRecord:
    base: dict[str, Any] = {"queue_url": f"http://localhost/000000000000/{name}",
                            "concurrency": 5, "handler": "orchestrator.handlers:log"}  # fmt: skip
    return QueueRecord(name=name, **{**base, **fields})


def adopted(name: str, **fields: Any) -> QueueRecord:
    return managed(name, **{"queue_url": URL, "managed": False, "region": "eu-west-1",
                            "account": "111111111111", **fields})  # fmt: skip


def test_the_example_reads_with_its_lines(settings: Settings) -> None:
    orders, billing = load(EXAMPLE, settings)
    assert orders.create == queuefile.Create(30, True, 5)
    assert orders.tuning == {"handler": "myapp.jobs:handle", "concurrency": 8}
    assert (orders.lines[""], orders.lines["concurrency"]) == (2, 8)
    assert billing.create is None and billing.ref is not None
    assert (billing.ref.name, billing.ref.region, billing.role_arn) == ("billing", "eu-west-1",
                                                                         ROLE)  # fmt: skip
    assert billing.tuning["rate_limit"] == 50.0
    assert billing.at("rateLimit") == "q.yaml:13"


@pytest.mark.parametrize("create", ["true", "{}", ""])
def test_create_may_be_true_or_empty(settings: Settings, create: str) -> None:
    [spec] = load(f"queues:\n  - name: a\n    create: {create}\n", settings)
    assert spec.create == queuefile.Create()


def test_three_errors_are_all_reported_with_their_lines(settings: Settings) -> None:
    found = problems(
        """\
        queues:
          - name: a
            create: true
            concurrency: true
          - name: b
            create: {visibilityTimeout: 0}
          - name: c
            create: true
            colour: blue
        """,
        settings,
    )
    assert [p.split(":")[1] for p in found] == ["4", "6", "9"]
    assert found[0] == "q.yaml:4: concurrency must be an integer, not true"
    assert "visibility timeout 0" in found[1]
    assert found[2].startswith("q.yaml:9: unknown key 'colour'")


@pytest.mark.parametrize(
    ("entry", "line", "message"),
    [
        ("- name: a\n    create: true\n  - name: a\n    create: true", 4, "already in the file"),
        ("- name: a", 2, "give either create or adopt"),
        (f"- name: a\n    create: true\n    adopt: {URL}", 4, "not both"),
        ("- name: a\n    create: true\n    region: eu-west-1", 4, "region is for adopted"),
        (f"- name: a\n    create: true\n    roleArn: {ROLE}", 4, "roleArn is for adopted"),
        ("- name: a\n    adopt: https://example.com/x", 3, "is not a queue URL"),
        (f"- name: a\n    adopt: {URL}\n    region: us-east-1", 3, "disagrees"),
        (f"- name: a\n    adopt: {URL}\n    region: moon", 4, "not a region name"),
        (f"- name: a\n    adopt: {URL}\n    roleArn: bob", 4, "not an IAM role ARN"),
        (f"- name: a.fifo\n    adopt: {URL}", 2, "FIFO"),
        ("- name: ../x\n    create: true", 2, "characters SQS does not allow"),
        ("- name: a\n    create: {maxReceiveCount: 3}", 3, "needs dlq: true"),
        ("- name: a\n    create: {dlq: yes please}", 3, "dlq must be true or false"),
        ("- name: a\n    create: 5", 3, "create"),
        ("- name: a\n    create: true\n    concurrency: 101", 4, "out of range 1..100"),
        ("- name: a\n    create: true\n    rateLimit: fast", 4, "rateLimit must be a number"),
        ("- name: a\n    create: true\n    handler: nope", 4, "package.module:function"),
        ("- name: a\n    create: true\n    paused: 1", 4, "paused must be true or false"),
        ("- name: a\n    create: true\n    concurrency: 8.0", 4, "an integer, not 8.0"),
        (
            "- name: a\n    create: true\n    handler: !!python/object/apply:os.system [x]",
            4,
            "could not determine a constructor",
        ),  # safe loading: no object is built
        ("- name: a\n    create: true\n    name: b", 4, "name is given twice"),
        ("- name: a\n    create: {dlq: true}\n  - name: a-dlq\n    create: true", 3, "DLQ"),
    ],
)
def test_each_problem_names_its_line(
    settings: Settings, entry: str, line: int, message: str
) -> None:
    [found] = problems(f"queues:\n  {entry}\n", settings)
    assert found.startswith(f"q.yaml:{line}: "), found
    assert message in found, found


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("queues:\n  - name: a\n    create: [\n", 4, "not valid YAML"),
        ("", 1, "the file is empty"),
        ("queues: 5\n", 1, "must be a list"),
        ("queue: []\n", 1, "unknown key 'queue'"),
        ("- name: a\n", 1, "must be a mapping"),
    ],
)
def test_a_file_of_the_wrong_shape_is_one_problem(
    settings: Settings, text: str, line: int, message: str
) -> None:
    found = problems(text, settings)
    assert found[0].startswith(f"q.yaml:{line}: "), found
    assert message in found[0]


def test_a_json_file_reads_the_same(settings: Settings) -> None:
    text = ('{"queues": [\n  {"name": "a", "create": {"dlq": true}, "concurrency": 3},\n'
            '  {"name": "b", "create": true, "priority": 12}\n]}\n')  # fmt: skip
    assert problems(text, settings) == ["q.yaml:3: priority 12 is out of range 0..9"]
    [a] = load(text.replace('"priority": 12', '"priority": 2').replace(
        ',\n  {"name": "b", "create": true, "priority": 2}', ""), settings)  # fmt: skip
    assert (a.create, a.tuning) == (queuefile.Create(None, True, None), {"concurrency": 3})


def lines(changes: list[queuefile.Change]) -> list[str]:
    return [line for change in changes for line in change.lines()]


def test_plan_creates_adopts_and_updates(settings: Settings) -> None:
    specs = load(EXAMPLE, settings)
    assert lines(queuefile.plan(specs, [], False, default_region="us-east-1")) == [
        "+ create orders with visibilityTimeout: 30, dlq: true, maxReceiveCount: 5, "
        "concurrency: 8, handler: myapp.jobs:handle",
        "+ adopt billing-eu (arn:aws:sqs:eu-west-1:111111111111:billing) with roleArn: "
        f"{ROLE}, handler: billing.handlers:handle, rateLimit: 50",
    ]
    records = [managed("orders", dlq_name="orders-dlq", max_receive_count=5, concurrency=4,
                       handler="myapp.jobs:handle"),
               adopted("billing-eu", handler="billing.handlers:handle")]  # fmt: skip
    assert lines(queuefile.plan(specs, records, False, default_region="us-east-1")) == [
        "~ update orders concurrency: 4 → 8",
        "~ update billing-eu rateLimit: null → 50",
        f"~ update billing-eu roleArn: null → {ROLE}",
    ]


def test_omitted_fields_are_left_alone_and_prune_removes_the_rest(settings: Settings) -> None:
    specs = load("queues:\n  - name: a\n    create: true\n", settings)
    records = [managed("a", concurrency=9, visibility_timeout=60, dlq_name="a-dlq",
                       max_receive_count=3, paused=True),
               managed("gone", dlq_name="gone-dlq"), adopted("theirs")]  # fmt: skip
    assert queuefile.plan(specs, records, False, default_region="us-east-1") == []
    assert lines(queuefile.plan(specs, records, True, default_region="us-east-1")) == [
        "- remove gone (managed: deleted in SQS with its DLQ gone-dlq)",
        "- remove theirs (adopted: only forgotten here, the queue stays in SQS)",
    ]


@pytest.mark.parametrize(
    ("entry", "record", "what"),
    [
        ("create: {visibilityTimeout: 60}", managed("q"), "create.visibilityTimeout 30 → 60"),
        ("create: {dlq: true}", managed("q"), "create.dlq false → true"),
        ("create: {dlq: true, maxReceiveCount: 3}",
         managed("q", dlq_name="q-dlq", max_receive_count=5), "create.maxReceiveCount 5 → 3"),
        ("create: true", adopted("q"), "adopted → created"),
        (f"adopt: {URL}", managed("q"), "created → adopted"),
        (f"adopt: {URL}", adopted("q", account="222222222222"), "the queue it adopts"),
        (f"adopt: {URL}", adopted("q", region=None), "the queue it adopts"),
        (f"adopt: {URL.replace('billing', 'other')}", adopted("q"), "the queue it adopts"),
    ],
)  # fmt: skip
def test_what_cannot_change_in_place_is_an_error_of_the_plan(
    settings: Settings, entry: str, record: QueueRecord, what: str
) -> None:
    specs = load(f"queues:\n  - name: q\n    {entry}\n    concurrency: 7\n", settings)
    with pytest.raises(QueueFileInvalid) as caught:
        queuefile.plan(specs, [record], False, default_region="us-east-1")
    [found] = caught.value.problems
    assert found.startswith("q.yaml:3: queue 'q': "), found
    assert f"{what}" in found and "cannot change in place" in found, found


@pytest.mark.parametrize(
    ("entry", "record", "message"),
    [
        ("name: a-dlq\n    create: true", managed("a", dlq_name="a-dlq"),
         "q.yaml:2: name 'a-dlq' is taken: it is queue 'a''s DLQ"),
        ("name: b\n    create: {dlq: true}", managed("b-dlq"),
         "q.yaml:3: queue 'b''s DLQ name 'b-dlq' is taken by a queue"),
    ],
)  # fmt: skip
def test_names_taken_by_dlqs_are_errors_of_the_plan(
    settings: Settings, entry: str, record: QueueRecord, message: str
) -> None:
    specs = load(f"queues:\n  - {entry}\n", settings)
    with pytest.raises(QueueFileInvalid) as caught:
        queuefile.plan(specs, [record], False, default_region="us-east-1")
    assert caught.value.problems == [message]


def test_a_region_of_none_is_the_default_region(settings: Settings) -> None:
    specs = load(f"queues:\n  - name: q\n    adopt: {URL}\n", settings)
    record = adopted("q", region=None)
    assert queuefile.plan(specs, [record], False, default_region="eu-west-1") == []


def test_dump_reads_back_as_no_changes(settings: Settings) -> None:
    records = [managed("a", dlq_name="a-dlq", max_receive_count=7, rate_limit=2.5,
                       batch_window=0.5, paused=True),
               managed("b.fifo", visibility_timeout=90),
               adopted("theirs", role_arn=ROLE, region=None, max_shards=3)]  # fmt: skip
    text = queuefile.dump(records, "eu-west-1")
    specs = queuefile.load(text, "-", settings)
    assert queuefile.plan(specs, records, True, default_region="eu-west-1") == []
    assert "maxReceiveCount" not in text.split("name: b.fifo")[1].split("name: theirs")[0]
    assert f"adopt: {URL}\n  region: eu-west-1\n  roleArn: {ROLE}\n" in text
