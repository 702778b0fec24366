"""A dead-letter look through a real daemon's API: each message shown and received once,
and the one-operation-at-a-time lock holding across processes (the CLI is refused while
the API's look runs, and runs once it ended)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import MongoClient

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.config import Endpoints, Settings
from tests.http import call
from tests.process.conftest import Daemon, api_url, wait_for

pytestmark = pytest.mark.timeout(180)
COUNT = 300


def test_a_look_through_the_api_reads_each_once_and_locks_the_dlq_for_the_fleet(
    admin: QueueAdmin, sqs: Sqs, settings: Settings, endpoints: Endpoints,
    start_daemon: Callable[..., Daemon], run_console: Callable[..., Any],
) -> None:
    queue = admin.create("dead", dlq=True)
    assert queue.dlq_url
    for start in range(0, COUNT, 10):
        sqs.send_batch(queue.dlq_url, [f"m{i}" for i in range(start, start + 10)])
    url = api_url(start_daemon("--mode", "M"))
    looked: dict[str, Any] = {}
    look = threading.Thread(target=lambda: looked.update(
        answer=call("GET", f"{url}/api/queues/dead/dlq?limit=1000")))
    locks = MongoClient(endpoints.mongodb_uri)[settings.mongodb_name]["locks"]
    try:
        look.start()
        wait_for(lambda: locks.find_one({"_id": "dlq:dead"}), 30, "the look to hold the lock")
        refused = run_console("queue", "redrive", "dead")
        assert refused.returncode == 1 and "already running" in refused.stderr, refused.stderr
        look.join(120)
    finally:
        locks.database.client.close()
    status, letters = looked["answer"]
    assert status == 200
    ids = [d["messageId"] for d in letters]
    assert len(ids) == COUNT and len(set(ids)) == COUNT  # each shown once
    assert {d["receiveCount"] for d in letters} == {1}  # each received once
    moved = run_console("queue", "redrive", "dead")
    assert moved.returncode == 0 and f"moved {COUNT} messages" in moved.stdout, moved.stderr
