"""Queue URLs and ARNs: where an adopted queue lives (orchestrator/queueref.py)."""

from __future__ import annotations

import pytest

from orchestrator import queueref
from orchestrator.errors import InvalidValue
from orchestrator.queueref import QueueRef


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/111111111111/orders",
         QueueRef("orders", "111111111111", "eu-west-1",
                  "https://sqs.eu-west-1.amazonaws.com/111111111111/orders")),
        ("https://ap-south-1.queue.amazonaws.com/111111111111/a.fifo",
         QueueRef("a.fifo", "111111111111", "ap-south-1",
                  "https://ap-south-1.queue.amazonaws.com/111111111111/a.fifo")),
        ("https://queue.amazonaws.com/111111111111/old",
         QueueRef("old", "111111111111", "us-east-1",
                  "https://queue.amazonaws.com/111111111111/old")),
        ("https://sqs.us-gov-west-1.amazonaws.com/111111111111/gov/",
         QueueRef("gov", "111111111111", "us-gov-west-1",
                  "https://sqs.us-gov-west-1.amazonaws.com/111111111111/gov")),
        ("arn:aws:sqs:eu-central-1:222222222222:billing",
         QueueRef("billing", "222222222222", "eu-central-1", None)),
        ("arn:aws-cn:sqs:cn-north-1:222222222222:x", QueueRef("x", "222222222222", "cn-north-1",
                                                               None)),
        # A local server's URL names no region: the default one.
        ("http://127.0.0.1:4566/000000000000/local",
         QueueRef("local", "000000000000", "us-east-1", "http://127.0.0.1:4566/000000000000/local")),
    ],
)  # fmt: skip
def test_urls_and_arns_say_where_the_queue_is(ref: str, expected: QueueRef) -> None:
    assert queueref.parse(ref, "us-east-1") == expected


def test_region_is_for_urls_that_name_none_and_may_not_contradict_one() -> None:
    assert queueref.parse("http://localhost:9324/000000000000/q", "us-east-1",
                          "eu-west-2").region == "eu-west-2"  # fmt: skip
    assert queueref.parse("arn:aws:sqs:eu-west-2:111111111111:q", "us-east-1",
                          "eu-west-2").region == "eu-west-2"  # fmt: skip
    with pytest.raises(InvalidValue, match=r"--region us-west-2 disagrees with .* names eu-west-1"):
        queueref.parse("https://sqs.eu-west-1.amazonaws.com/111111111111/q", "us-east-1",
                       "us-west-2")  # fmt: skip
    with pytest.raises(InvalidValue, match="'mars' is not a region name"):
        queueref.parse("http://localhost:9324/000000000000/q", "us-east-1", "mars")


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("orders", "neither a queue URL"),
        ("https://sqs.eu-west-1.amazonaws.com/orders", "must end in /ACCOUNT/NAME"),
        ("https://sqs.eu-west-1.amazonaws.com/1234/orders", "not a 12-digit account id"),
        ("https://sqs.eu-west-1.amazonaws.com/111111111111/bad name", "characters SQS does not"),
        ("https://sqs.eu-west-1.amazonaws.com/111111111111/q?x=1", "must end in /ACCOUNT/NAME"),
        ("arn:aws:sqs:eu-west-1:111111111111", "not an SQS queue ARN"),
        ("arn:aws:sns:eu-west-1:111111111111:topic", "not an SQS queue ARN"),
    ],
)  # fmt: skip
def test_a_bad_reference_is_named_with_why(ref: str, why: str) -> None:
    with pytest.raises(InvalidValue, match=why):
        queueref.parse(ref, "us-east-1")


def test_role_arns() -> None:
    good = "arn:aws:iam::111111111111:role/team/orchestrator-consumer"
    assert queueref.check_role_arn(good) == good
    for bad in ("arn:aws:iam::111111111111:user/x", "role/x", "arn:aws:iam::1:role/x"):
        with pytest.raises(InvalidValue, match="is not an IAM role ARN"):
            queueref.check_role_arn(bad)
