"""One consumer never starts a message twice (docs/design.md §3 `jobs.duplicates`, §5).

SQS can hand a message still running to another receive: two receives under way can
both get it, and so can one after its visibility ran out. Here the second delivery is
made the way SQS makes the latter, on a real daemon: while the handler runs, the
message's visibility is set to 0 through the SQS API with the receipt the consumer was
given (seen through a pass-through proxy), so the consumer's next receive gets it again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Endpoints
from tests.process.conftest import Daemon, records, wait_for
from tests.sqs_tap import SqsTap

pytestmark = pytest.mark.timeout(120)


def test_a_message_received_again_while_it_runs_is_not_started_twice(
    start_daemon: Callable[..., Daemon], admin: QueueAdmin, store: Store, sqs: Sqs,
    endpoints: Endpoints, record_dir: Path,
) -> None:  # fmt: skip
    assert endpoints.sqs_endpoint
    with SqsTap(endpoints.sqs_endpoint) as tap:
        queue = admin.create("dup", handler="tests.handlers:hold", concurrency=2)
        admin.send("dup", 1, body='{"seq": 0, "ms": 6000}')
        daemon = start_daemon("--mode", "MW", env={"AWS_SQS_ENDPOINT": tap.url})

        def starts() -> list[dict[str, Any]]:
            return [r for r in records(record_dir) if r.get("phase") == "start"]

        wait_for(starts, 30, "the handler to start")
        [message_id] = tap.receipts
        [first] = tap.received(message_id)
        sqs.client.change_message_visibility(QueueUrl=queue.queue_url, ReceiptHandle=first,
                                             VisibilityTimeout=0)  # fmt: skip
        wait_for(lambda: len(tap.received(message_id)) >= 2, 30,
                 "the consumer to receive the running message again")  # fmt: skip

        ends = wait_for(lambda: [r for r in records(record_dir) if r.get("phase") == "end"],
                        30, "the handler to end")  # fmt: skip
        assert len(ends) == 1 and len(starts()) == 1, records(record_dir)
        # Deleted with the newer receipt: it never comes back, and the job counts the copy.
        depth = lambda: vars(sqs.depth(queue.queue_url))  # noqa: E731
        wait_for(lambda: not any(depth().values()), 30, "the message deleted")
        assert daemon.stop() == 0
        [job] = store.jobs(queue="dup")
        assert job.duplicates == 1, job
        assert len(tap.received(message_id)) == 2 and len(starts()) == 1
