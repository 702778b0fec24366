"""The dashboard's dead-letter browser and charts, in headless Chromium against a daemon."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from tests.process.conftest import Daemon, api_url, wait_for

TOKEN = "browser-dlq-token"


def path_d(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.get_attribute("d") or "")


@pytest.mark.timeout(180)
def test_dead_letters_are_browsed_redriven_and_deleted_from_the_page(
    admin: QueueAdmin, store: Store, sqs: Sqs, browser: Any,
    start_daemon: Callable[..., Daemon],
) -> None:  # fmt: skip
    queue = admin.create("dl", handler="tests.handlers:poison", dlq=True, max_receive_count=1,
                         visibility_timeout=1)  # fmt: skip
    sqs.send_batch(queue.queue_url, [json.dumps({"seq": i, "poison": True}) for i in range(3)])
    daemon = start_daemon("--mode", "MW", env={"API_TOKEN": TOKEN})
    assert queue.dlq_url
    wait_for(lambda: sqs.depth(queue.dlq_url or "").visible == 3, 90, "3 messages in the DLQ")
    admin.set_paused("dl", True)  # a redriven message must stay where the test can see it
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{api_url(daemon)}/?refresh=500")
    page.fill("#token", TOKEN)
    dlq_row = page.locator('tr[data-dlq="dl"]')
    wait_for(lambda: dlq_row.count() == 1, 20, "the DLQ row")
    dlq_row.locator('button[data-action="browse-dlq"]').click()
    rows = page.locator("#dlq-messages tr[data-message]")
    wait_for(lambda: rows.count() == 3, 20, "the 3 dead letters listed")
    first = rows.nth(0)
    # Each carries the failure the worker kept: ValueError from the poison handler
    wait_for(lambda: "ValueError: poison message" in (first.text_content() or ""), 10,
             "the last error shown")  # fmt: skip
    assert '"poison": true' in (first.locator('td[data-field="body"]').text_content() or "")

    first.locator('button[data-action="redrive-one"]').click()
    wait_for(lambda: "redrove 1" in (page.text_content("#message") or ""), 20, "one redriven")
    wait_for(lambda: rows.count() == 2, 20, "two left")
    rows.nth(0).locator("input[type=checkbox]").check()
    rows.nth(1).locator("input[type=checkbox]").check()
    page.click("#dlq-delete-selected")
    wait_for(lambda: "deleted 2" in (page.text_content("#message") or ""), 20, "two deleted")
    wait_for(lambda: rows.count() == 0, 20, "the DLQ empty on the page")
    assert sqs.depth(queue.dlq_url).visible == 0 and sqs.depth(queue.queue_url).visible == 1
    assert errors == []


@pytest.mark.timeout(180)
def test_a_queue_chart_draws_and_moves_as_messages_are_handled(
    admin: QueueAdmin, store: Store, browser: Any, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("charted", handler="tests.handlers:slow_record", concurrency=4)
    admin.send("charted", 40, body=json.dumps({"ms": 50}))
    daemon = start_daemon("--mode", "MW")
    page = browser.new_page()
    page.goto(f"{api_url(daemon)}/?refresh=500")
    spark = 'tr[data-queue="charted"] td.spark svg path.line.a'
    first = wait_for(lambda: (d := path_d(page, spark)) and "L" in d and d, 60,
                     "the queue's sparkline drawn")  # fmt: skip
    admin.send("charted", 80, body=json.dumps({"ms": 50}))
    wait_for(lambda: path_d(page, spark) != first, 60, "the sparkline to move")
    page.locator('tr[data-queue="charted"] td[data-field="name"]').click()
    wait_for(lambda: "L" in path_d(page, "#queue-chart svg path.line.a"), 20,
             "the queue's own larger chart")  # fmt: skip
    assert "handled/s" in (page.text_content("#queue-page-now") or "")
    worker_spark = "#workers tr[data-worker] td.spark svg path.line.a"
    wait_for(lambda: path_d(page, worker_spark), 30, "the worker's load chart")
