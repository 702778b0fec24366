"""The IAM policies of docs/iam/ are valid documents, and the checker the session runs
against them (tests/iam.py) finds what they lack."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.sqs import Sqs
from tests import iam

pytestmark = pytest.mark.timeout(30)

ACTION = re.compile(r"sqs:[A-Z][A-Za-z]+")  # a name, no wildcard
PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"


def sqs_operations() -> set[str]:
    """Every SQS operation botocore knows (making a client sends nothing)."""
    client = Sqs("http://127.0.0.1:9", "us-east-1", "t", "t").client
    return set(client.meta.service_model.operation_names)


@pytest.mark.parametrize("caller", iam.CALLERS)
def test_each_policy_is_a_valid_least_privilege_document(caller: str) -> None:
    policy = iam.load_policies()[caller]
    assert policy["Version"] == "2012-10-17"
    assert policy["Statement"], "no statements"
    known = sqs_operations() - iam.BATCH_ACTIONS.keys()  # IAM has no batch actions
    for statement in policy["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource"}, statement
        # Allow only: the checker does not evaluate Deny, NotAction or conditions.
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        assert isinstance(actions, list) and actions, statement
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        if actions == ["sts:AssumeRole"]:  # the roles of adopted queues in other accounts
            assert all(r.startswith("arn:aws:iam::QUEUE_ACCOUNT_ID:role/") for r in resources)
            continue
        for action in actions:
            assert ACTION.fullmatch(action), f"{action!r} is not one named sqs: action"
            assert action.removeprefix("sqs:") in known, f"{action!r} is no SQS action"
        for resource in resources:
            # Placeholders the operator replaces; never every queue of every account.
            assert resource.startswith("arn:aws:sqs:REGION:ACCOUNT_ID:"), resource
    every = [a for s in policy["Statement"] for a in s["Action"]]
    assert len(every) == len(set(every)), "an action is granted twice"


def test_batch_operations_map_to_their_single_action() -> None:
    assert iam.iam_action("SendMessageBatch") == "sqs:SendMessage"
    assert iam.iam_action("DeleteMessageBatch") == "sqs:DeleteMessage"
    assert iam.iam_action("ChangeMessageVisibilityBatch") == "sqs:ChangeMessageVisibility"
    assert iam.iam_action("ReceiveMessage") == "sqs:ReceiveMessage"


def policy(*actions: str) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    return {"Version": "2012-10-17", "Statement": [statement]}


def test_the_checker_reports_an_operation_its_callers_policy_lacks() -> None:
    policies = {"daemon": policy("sqs:ReceiveMessage", "sqs:DeleteMessage"),
                "admin": policy("sqs:SendMessage")}  # fmt: skip
    records = {("ReceiveMessage", "daemon"), ("DeleteMessageBatch", "daemon"),
               ("SendMessageBatch", "admin")}  # fmt: skip
    assert iam.missing(records, policies) == []

    # The admin may send, but the daemon may not: the caller's own policy decides.
    problems = iam.missing(records | {("SendMessageBatch", "daemon"), ("PurgeQueue", "admin")},
                           policies)  # fmt: skip
    assert problems == [
        "PurgeQueue by the admin role needs sqs:PurgeQueue, which docs/iam/admin.json does "
        "not allow",
        "SendMessageBatch by the daemon role needs sqs:SendMessage, which "
        "docs/iam/daemon.json does not allow",
    ]
    assert iam.missing({("ListQueues", "cron")}, policies) == [
        "ListQueues by caller 'cron': no policy docs/iam/cron.json"
    ]


def test_deny_statements_grant_nothing_and_case_is_ignored() -> None:
    doc = {"Statement": [{"Effect": "Deny", "Action": ["sqs:PurgeQueue"], "Resource": "*"},
                         {"Effect": "Allow", "Action": "SQS:receivemessage", "Resource": "*"}]}
    assert iam.allowed_actions(doc) == {"sqs:receivemessage"}


def test_the_product_makes_its_clients_through_connect_with_a_caller() -> None:
    """`Sqs(...)` records nothing (it is for the tests' own clients); the product's
    clients come from `Sqs.connect`, whose `caller` is required (mypy checks the rest)."""
    direct = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "sqs" and path.parent.parent.name == "backends":
            continue  # the Sqs package itself (its clients for other regions and roles)
        for node in ast.walk(ast.parse(path.read_text())):
            called = node.func if isinstance(node, ast.Call) else None
            if isinstance(called, ast.Name) and called.id == "Sqs":
                direct.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert direct == []


def test_the_cross_account_role_policies_grant_what_an_adopted_queue_needs_and_no_more() -> None:
    """docs/iam/queue-role*.json: the role a team makes in its own account for an adopted
    queue. Never CreateQueue, DeleteQueue or SetQueueAttributes: adopted queues are not
    changed (PurgeQueue is left for the team to add if it wants --yes-really purges)."""
    trust = json.loads((iam.POLICY_DIR / "queue-role-trust.json").read_text())
    [statement] = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRole" and "AWS" in statement["Principal"]
    role = json.loads((iam.POLICY_DIR / "queue-role.json").read_text())
    granted = iam.allowed_actions(role)
    daemon = iam.allowed_actions(iam.load_policies()["daemon"])
    assert daemon - {"sqs:createqueue", "sts:assumerole"} <= granted
    assert {"sqs:getqueueurl", "sqs:sendmessage"} <= granted
    assert not granted & {"sqs:createqueue", "sqs:deletequeue", "sqs:setqueueattributes",
                          "sqs:purgequeue"}  # fmt: skip
