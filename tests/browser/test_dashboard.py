"""The dashboard in headless Chromium against a running daemon: it shows a queue
draining, and changes made through the page reach MongoDB (with the token only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from tests.process.conftest import Daemon, api_url, wait_for

TOKEN = "browser-test-token"


def depth(page: Any, queue: str) -> int | None:
    text = page.text_content(f'tr[data-queue="{queue}"] td[data-field="visible"]') or ""
    return int(text) if text.strip().isdigit() else None


@pytest.mark.timeout(180)
def test_the_dashboard_shows_the_queue_draining_and_changes_its_concurrency(
    admin: QueueAdmin,
    store: Store,
    sqs: Sqs,
    browser: Any,
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    admin.create("web", concurrency=2, handler="tests.handlers:slow_record", dlq=True)
    admin.send("web", 60, body=json.dumps({"ms": 150}))
    daemon = start_daemon("--mode", "MW", env={"API_TOKEN": TOKEN})
    base = api_url(daemon)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/?refresh=500")

    # The depth falls as the daemon works
    first = wait_for(lambda: depth(page, "web"), 30, "the queue's depth on the page")
    # 0 is a fall too (`or first` took a drained queue's 0 for "not shown" and waited on)
    wait_for(lambda: (d := depth(page, "web")) is not None and d < first, 60,
             "the depth to fall on the page")  # fmt: skip
    row = page.locator('tr[data-queue="web"]')
    wait_for(lambda: row.locator('td[data-field="worker"]').text_content() != "—", 30,
             "the assigned worker on the page")  # fmt: skip
    assert page.locator('tr[data-dlq="web"] td[data-field="dlqName"]').text_content() == "web-dlq"

    # Without the token the change is refused, and MongoDB keeps the old value
    concurrency = row.locator('input[data-field="concurrency"]')
    concurrency.fill("4")
    row.locator('button[data-action="save-settings"]').click()
    wait_for(lambda: "token" in (page.text_content("#message") or ""), 10, "the token prompt")
    assert store.get_queue("web").concurrency == 2

    # With it, the change reaches MongoDB and the page says so
    page.fill("#token", TOKEN)
    concurrency.fill("4")
    concurrency.press("Enter")
    wait_for(lambda: store.get_queue("web").concurrency == 4, 10, "concurrency 4 in MongoDB")
    wait_for(lambda: "4" in (page.text_content("#message") or ""), 10, "the confirmation")
    wait_for(lambda: concurrency.input_value() == "4", 10, "the page to keep showing 4")

    # The paused toggle
    row.locator('input[data-action="toggle-paused"]').check()
    wait_for(lambda: store.get_queue("web").paused, 10, "paused in MongoDB")

    # Several settings saved together (paused: the handler takes no lists); a bad one
    # refuses them all
    row.locator('input[data-field="processes"]').fill("2")
    row.locator('input[data-field="batchSize"]').fill("3")
    row.locator('input[data-field="batchWindow"]').fill("99")
    row.locator('button[data-action="save-settings"]').click()
    wait_for(lambda: "batch window" in (page.text_content("#message") or ""), 10, "the 422")
    queue = store.get_queue("web")
    assert (queue.processes, queue.batch_size, queue.batch_window) == (1, 1, 0.0)
    row.locator('input[data-field="batchWindow"]').fill("0.5")
    row.locator('button[data-action="save-settings"]').click()
    wait_for(lambda: store.get_queue("web").processes == 2, 10, "processes 2 in MongoDB")
    queue = store.get_queue("web")
    assert (queue.batch_size, queue.batch_window, queue.concurrency) == (3, 0.5, 4)

    # The DLQ's depth shows, and its redrive button moves the messages back
    dlq_url = store.get_queue("web").dlq_url
    assert dlq_url
    sqs.send_batch(dlq_url, ["dead-1", "dead-2"])
    dlq_row = page.locator('tr[data-dlq="web"]')
    wait_for(lambda: dlq_row.locator('td[data-field="dlqVisible"]').text_content() == "2", 10,
             "the DLQ depth on the page")  # fmt: skip
    page.evaluate("window.__noConfirm = true")
    dlq_row.locator('button[data-action="redrive"]').click()
    wait_for(lambda: "redrove 2" in (page.text_content("#message") or ""), 20, "the redrive")
    assert sqs.depth(dlq_url).visible == 0

    # Workers and jobs appear; the jobs filter narrows the list
    assert page.locator("#workers tr[data-worker]").count() == 1
    wait_for(lambda: page.locator("#jobs tr[data-job]").count() >= 1, 20, "a job on the page")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)  # kept for a look
    page.select_option("#job-status", "failed")
    wait_for(lambda: page.locator("#jobs tr[data-job]").count() == 0, 10, "the status filter")
    assert errors == []
    assert daemon.stop() == 0
