"""One fleet runs queues of several regions and accounts (docs/design.md §5, "Queues
elsewhere"): every call for a queue goes to its region, as its role; a role that cannot
be assumed stalls its own queue only, and its queue runs once the role can be assumed.

The daemon talks to moto (SQS and STS) through a pass-through proxy (tests/sqs_tap.py)
that notes where each call went and as whom, and refuses AssumeRole for one role.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.config import Endpoints
from tests.http import call
from tests.integration.test_adopt import ROLE, as_role, client, team_queue, to_dlq
from tests.process.conftest import Daemon, api_url, holds_for, records, wait_for
from tests.sqs_tap import SqsTap

pytestmark = pytest.mark.timeout(240)
LOCKED = "arn:aws:iam::222222222222:role/locked-out"


def handled(record_dir: Path) -> Counter[str]:
    return Counter(r["queue"] for r in records(record_dir))


def visible(sqs: Any, url: str) -> int:
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(found["Attributes"]["ApproximateNumberOfMessages"])


def test_queues_of_two_regions_and_two_roles_run_in_one_fleet(
    start_daemon: Callable[..., Daemon], admin: QueueAdmin, endpoints: Endpoints,
    record_dir: Path,
) -> None:  # fmt: skip
    assert endpoints.sqs_endpoint
    home, eu = client(endpoints), client(endpoints, region="eu-west-1")
    team, locked = as_role(endpoints), as_role(endpoints, role=LOCKED)
    urls = {"home": team_queue(home, "home", dlq=False), "eu": team_queue(eu, "eu"),
            "team": team_queue(team, "team", dlq=False),
            "locked": team_queue(locked, "locked", dlq=False)}  # fmt: skip
    handler = {"handler": "tests.handlers:record", "concurrency": 4}
    admin.adopt(urls["home"], **handler)
    admin.adopt(urls["eu"], region="eu-west-1", **handler)
    admin.adopt("arn:aws:sqs:us-east-1:111111111111:team", role_arn=ROLE, **handler)
    admin.adopt("arn:aws:sqs:us-east-1:222222222222:locked", role_arn=LOCKED, **handler)
    to_dlq(eu, urls["eu"], 2)
    for name, sqs in (("home", home), ("eu", eu), ("team", team), ("locked", locked)):
        sqs.send_message_batch(QueueUrl=urls[name], Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"seq": i})} for i in range(10)])

    with SqsTap(endpoints.sqs_endpoint) as tap:
        tap.refused_roles.add(LOCKED)
        daemon = start_daemon("--mode", "MW", env={"AWS_SQS_ENDPOINT": tap.url})
        wait_for(lambda: handled(record_dir) == {"home": 10, "eu": 10, "team": 10}, 60,
                 "the three reachable queues handled")  # fmt: skip
        # The locked-out queue waits, its messages untouched; nothing else stalled for it.
        holds_for(lambda: visible(locked, urls["locked"]) == 10
                  and "locked" not in handled(record_dir), 3, "the locked queue untouched")
        refused = daemon.events("sqs.role_refused")
        assert refused and {e["role_arn"] for e in refused} == {LOCKED}
        assert tap.refusals > len(refused)  # retried after its backoff, logged once a problem

        # Each queue's calls went to its region, as its role (moto's assumed-role keys
        # are ASIA...; the fleet's own are "test"); the API's DLQ look at eu went to eu.
        [dead] = call("GET", f"{api_url(daemon)}/api/queues/eu/dlq?limit=10")[1:] or [[]]
        assert len(dead) == 2
        eu_dlq = admin.store.get_queue("eu").dlq_url
        for name, region, own_keys in (("home", "us-east-1", True), ("eu", "eu-west-1", True),
                                       ("team", "us-east-1", False)):  # fmt: skip
            calls = tap.sqs_calls(urls[name])
            assert {c.operation for c in calls} >= {"GetQueueAttributes", "ReceiveMessage",
                                                    "DeleteMessageBatch"}, (name, calls)
            assert {c.region for c in calls} == {region}, (name, calls)
            assert {c.access_key == "test" for c in calls} == {own_keys}, (name, calls)
        assert {(c.operation, c.region) for c in tap.sqs_calls(eu_dlq or "")} >= {
            ("ReceiveMessage", "eu-west-1")}

        tap.refused_roles.clear()  # the role is fixed: its queue runs after the backoff
        wait_for(lambda: handled(record_dir)["locked"] == 10, 90, "the locked queue handled")
        assert daemon.events("sqs.role_assumed_again")
        assert daemon.stop() == 0
