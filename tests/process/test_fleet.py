"""What a platform needs from the fleet: backlogs visible with no worker, the figures an
autoscaler scales on, and a worker given SIGTERM (a scale-down) handing its queues on."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from tests.http import call
from tests.process.conftest import Daemon, api_url, wait_for

pytestmark = pytest.mark.timeout(120)
SLOW = "tests.handlers:slow_record"


def queue_view(url: str, name: str) -> dict[str, object]:
    status, doc = call("GET", f"{url}/api/queues/{name}")
    assert status == 200, doc
    return doc  # type: ignore[no-any-return]


def test_with_only_a_master_the_backlog_shows_in_the_api_and_metrics(
    admin: QueueAdmin, settings: Settings, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("waiting")
    admin.send("waiting", 4)
    master = start_daemon("--mode", "M")
    url = api_url(master)
    wait_for(lambda: call("GET", f"{url}/health")[1].get("leader"), 30, "the master to lead")
    led = time.monotonic()
    wait_for(lambda: queue_view(url, "waiting")["visible"] == 4, 2 * settings.idle_check_max + 5,
             "visible 4 with no worker at all")  # fmt: skip
    assert time.monotonic() - led <= 2 * settings.idle_check_max + 5
    _, metrics = call("GET", f"{url}/metrics")
    assert 'orchestrator_queue_messages{queue="waiting"} 4.0' in metrics
    assert master.stop() == 0


def test_the_fleet_figures_with_one_worker_of_load_one_and_three_busy_queues(
    admin: QueueAdmin, start_daemon: Callable[..., Daemon]
) -> None:
    for name in ("a", "b", "c"):
        admin.create(name, handler=SLOW)
        admin.send(name, 20, json.dumps({"ms": 500}))
    daemon = start_daemon("--mode", "MW", env={"MAX_LOAD": "1"})
    url = api_url(daemon)
    want = {"liveWorkers": 1, "capacity": 1, "wanted": 3, "desiredWorkers": 3}
    seen: list[dict[str, object]] = []

    def figures() -> bool:
        seen.append(call("GET", f"{url}/api/fleet")[1])
        return {k: seen[-1].get(k) for k in want} == want

    try:
        wait_for(figures, 30, f"/api/fleet {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last answers: {seen[-3:]}") from None
    assert seen[-1]["updatedAt"]
    # two queues wait for room: the longest wait grows (docs/design.md §10, backlog age)
    first = float(wait_for(lambda: call("GET", f"{url}/api/fleet")[1]["largestWaitSeconds"],
                           10, "a wait to show"))  # fmt: skip
    wait_for(lambda: call("GET", f"{url}/api/fleet")[1]["largestWaitSeconds"] > first + 0.5,
             10, "the wait to grow")  # fmt: skip
    _, metrics = call("GET", f"{url}/metrics")
    assert "orchestrator_fleet_desired_workers 3.0" in metrics
    assert "orchestrator_fleet_capacity 1.0" in metrics
    assert daemon.stop() == 0


def test_a_worker_given_sigterm_hands_its_queue_to_another_at_once(
    admin: QueueAdmin, store: Store, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("busy", handler=SLOW, concurrency=2)
    admin.send("busy", 200, json.dumps({"ms": 200}))
    grace = {"SHUTDOWN_GRACE": "30"}  # the hand-off must not wait for the grace
    start_daemon("--mode", "M", env=grace)
    first = start_daemon("--mode", "W", env=grace)
    held = wait_for(lambda: store.assignments(), 30, "the queue assigned")[0]
    second = start_daemon("--mode", "W", env=grace)
    wait_for(lambda: len(store.workers()) == 2, 30, "the second worker registered")
    owner, other = (first, second) if f":{first_worker_pid(first)}:" in held.worker \
        else (second, first)  # fmt: skip
    owner.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    moved = wait_for(lambda: [a for a in store.assignments() if a.worker != held.worker], 10,
                     "the queue reassigned to the other worker")  # fmt: skip
    took = time.monotonic() - signalled
    assert f":{first_worker_pid(other)}:" in moved[0].worker
    assert owner.proc.wait(timeout=30) == 0
    [job] = [j for j in store.jobs(queue="busy", limit=10) if j.id == held.job_id]
    assert job.status == "interrupted"
    assert took < 10  # well within SHUTDOWN_GRACE (30 s): handed back as its consumer stopped


def first_worker_pid(daemon: Daemon) -> int:
    found = wait_for(lambda: daemon.events("worker.registered"), 30, "a worker registered")
    return int(str(found[0]["worker_id"]).split(":")[1])
