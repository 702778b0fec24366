"""Adopted queues: made outside the product (here with boto3, as Terraform would), run
without being changed, in other regions and other accounts (moto's STS), against the real
servers through the real CLI (docs/design.md §3, "Adopted queues")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from click.testing import Result

from orchestrator.backends.store import Store
from orchestrator.config import Endpoints

Run = Callable[..., Result]
ROLE = "arn:aws:iam::111111111111:role/orchestrator-consumer"


def client(endpoints: Endpoints, service: str = "sqs", region: str = "us-east-1",
           **keys: str) -> Any:  # fmt: skip
    keys = keys or {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return boto3.client(service, endpoint_url=endpoints.sqs_endpoint, region_name=region, **keys)


def as_role(endpoints: Endpoints, region: str = "us-east-1", role: str = ROLE) -> Any:
    """An SQS client acting as `role`: moto runs its calls in the role's account."""
    creds = client(endpoints, "sts").assume_role(RoleArn=role,
                                                 RoleSessionName="team")["Credentials"]  # fmt: skip
    return client(endpoints, region=region, aws_access_key_id=creds["AccessKeyId"],
                  aws_secret_access_key=creds["SecretAccessKey"],
                  aws_session_token=creds["SessionToken"])  # fmt: skip


def team_queue(sqs: Any, name: str, *, visibility: int = 45, dlq: bool = True) -> str:
    """A queue (with its own DLQ, maxReceiveCount 1) made the way a team's IaC makes it."""
    attributes = {"VisibilityTimeout": str(visibility)}
    if dlq:
        dlq_url = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn,
                                                  "maxReceiveCount": "1"})  # fmt: skip
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def to_dlq(sqs: Any, url: str, count: int) -> None:
    """Send `count` messages and let SQS move them to the DLQ (received once, then moved
    by the next receive: maxReceiveCount 1)."""
    for i in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"seq": i}))
    seen: set[str] = set()
    while len(seen) < count:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        seen |= {m["MessageId"] for m in got.get("Messages", [])}
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)


def test_an_outside_queue_is_adopted_browsed_redriven_and_left_in_sqs_by_delete(
    run_cli: Run, store: Store, endpoints: Endpoints
) -> None:
    sqs = client(endpoints)
    url = team_queue(sqs, "team")
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    result = run_cli("queue", "adopt", url, "--handler", "tests.handlers:record",
                     "--concurrency", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"adopted team: {url} (us-east-1, account 123456789012" in result.output
    record = store.get_queue("team")
    assert (record.managed, record.region, record.account, record.role_arn) == (
        False, "us-east-1", "123456789012", None)  # fmt: skip
    assert (record.visibility_timeout, record.dlq_name, record.max_receive_count) == (
        45, "team-dead", 1)  # fmt: skip
    assert record.dlq_url and record.dlq_url.endswith("/team-dead")

    to_dlq(sqs, url, 3)
    looked = run_cli("queue", "dlq", "team", "--json")
    assert looked.exit_code == 0, looked.output
    assert len(json.loads(looked.output)) == 3

    # Its messages are its team's: purges need --yes-really, and change nothing without it.
    for args in (("purge", "team"), ("dlq-purge", "team")):
        refused = run_cli("queue", *args)
        assert refused.exit_code == 2 and "--yes-really" in refused.output, refused.output
    redriven = run_cli("queue", "redrive", "team")
    assert redriven.exit_code == 0 and "moved 3 messages" in redriven.output, redriven.output
    depth = run_cli("queue", "size", "team", "--json")
    assert json.loads(depth.output)["visible"] == 3

    gone = run_cli("queue", "delete", "team")
    assert gone.exit_code == 0 and "forgot team" in gone.output and "stay in SQS" in gone.output
    assert store.find_queue("team") is None
    after = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert {k: after[k] for k in ("VisibilityTimeout", "RedrivePolicy")} == {
        k: before[k] for k in ("VisibilityTimeout", "RedrivePolicy")}  # fmt: skip
    assert sqs.get_queue_url(QueueName="team-dead")["QueueUrl"]


def test_purges_of_an_adopted_queue_go_through_with_yes_really(
    run_cli: Run, endpoints: Endpoints
) -> None:
    sqs = client(endpoints)
    url = team_queue(sqs, "team2")
    assert run_cli("queue", "adopt", url).exit_code == 0
    to_dlq(sqs, url, 2)
    done = run_cli("queue", "dlq-purge", "team2", "--yes-really")
    assert done.exit_code == 0, done.output
    sqs.send_message(QueueUrl=url, MessageBody="x")
    assert run_cli("queue", "purge", "team2", "--yes-really").exit_code == 0


def test_create_of_a_name_sqs_has_with_other_attributes_points_at_adopt(
    run_cli: Run, store: Store, endpoints: Endpoints
) -> None:
    sqs = client(endpoints)
    url = team_queue(sqs, "made-elsewhere", dlq=False)
    result = run_cli("queue", "create", "made-elsewhere")
    assert result.exit_code == 2, result.output
    assert "already exists in SQS with other attributes (VisibilityTimeout 45)" in result.output
    assert f"orchestrator queue adopt {url}" in result.output
    assert store.find_queue("made-elsewhere") is None
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "45"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("not-a-url",), "neither a queue URL"),
        (("arn:aws:sqs:us-east-1:123456789012:nowhere",), "queue 'nowhere (arn:aws:sqs"),
        (("{url}", "--name", "x.fifo"), "must end in .fifo exactly when"),
        (("{url}", "--role-arn", "arn:aws:iam::1:role/x"), "is not an IAM role ARN"),
        (("{url}", "--region", "eu-west-1", "--concurrency", "0"), "concurrency"),
    ],
)  # fmt: skip
def test_bad_adopts_exit_2_and_change_nothing(
    run_cli: Run, store: Store, endpoints: Endpoints, args: tuple[str, ...], why: str
) -> None:
    url = team_queue(client(endpoints), "plain", dlq=False)
    result = run_cli("queue", "adopt", *(a.format(url=url) for a in args))
    assert result.exit_code == 2 if "nowhere" not in why else result.exit_code == 1
    assert why in result.output, result.output
    assert store.list_queues() == []


def test_a_queue_is_adopted_once_and_names_stay_unique(run_cli: Run, endpoints: Endpoints) -> None:
    url = team_queue(client(endpoints), "once", dlq=False)
    assert run_cli("queue", "adopt", url).exit_code == 0
    again = run_cli("queue", "adopt", url, "--name", "once-again")
    assert again.exit_code == 1 and "is already queue 'once'" in again.output, again.output
    other = team_queue(client(endpoints, region="eu-west-1"), "once-eu", dlq=False)
    taken = run_cli("queue", "adopt", other, "--region", "eu-west-1", "--name", "once")
    assert taken.exit_code == 1 and "already exists" in taken.output, taken.output


def test_queues_of_another_region_and_another_account_are_reached_where_they_are(
    run_cli: Run, store: Store, endpoints: Endpoints
) -> None:
    eu = client(endpoints, region="eu-west-1")
    eu_url = team_queue(eu, "orders", dlq=False)
    theirs = as_role(endpoints)
    their_url = team_queue(theirs, "orders")  # the same name, in account 111111111111
    assert "111111111111" in their_url

    assert run_cli("queue", "adopt", eu_url, "--region", "eu-west-1", "--name",
                   "orders-eu").exit_code == 0  # fmt: skip
    # Without the role, the other account's queue is not found; with it, it is.
    arn = "arn:aws:sqs:us-east-1:111111111111:orders"
    assert run_cli("queue", "adopt", arn, "--name", "orders-team").exit_code == 1
    adopted = run_cli("queue", "adopt", arn, "--name", "orders-team", "--role-arn", ROLE)
    assert adopted.exit_code == 0, adopted.output
    team = store.get_queue("orders-team")
    assert (team.account, team.role_arn, team.dlq_name) == ("111111111111", ROLE, "orders-dead")

    assert run_cli("queue", "send", "orders-eu", "2").exit_code == 0
    assert run_cli("queue", "send", "orders-team", "3").exit_code == 0
    assert eu.get_queue_attributes(QueueUrl=eu_url, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "2"
    assert theirs.get_queue_attributes(QueueUrl=their_url, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "3"
    listed = {q["name"]: q for q in json.loads(run_cli("queue", "list", "--json").output)}
    assert (listed["orders-eu"]["visible"], listed["orders-eu"]["region"]) == (2, "eu-west-1")
    assert (listed["orders-team"]["visible"], listed["orders-team"]["account"],
            listed["orders-team"]["managed"]) == (3, "111111111111", False)  # fmt: skip
