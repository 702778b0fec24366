"""jobs list/show, workers list and status against real servers."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import Result

from orchestrator.backends.store import Store
from orchestrator.models import ConsumerStats, QueueRecord, WorkerRecord, utcnow

Run = Callable[..., Result]


def seed(store: Store, run_cli: Run) -> str:
    run_cli("queue", "create", "a")
    run_cli("queue", "create", "b")
    run_cli("queue", "send", "a", "3")
    now = utcnow()
    store.register_worker(WorkerRecord("h:1:x", "h", 1, now, now, 5,
                                       consumers=(ConsumerStats(42, "a", 30.5, 1.5),)))  # fmt: skip
    a: QueueRecord = store.get_queue("a")
    job_id = store.assign(a, "h:1:x", now)
    assert job_id
    store.job_started(job_id, 1, 42, now)
    done = store.assign(store.get_queue("b"), "h:1:x", now)
    assert done
    store.job_ended(done, "completed", now, handled=4, failed=1, reason="drained")
    store.release(done)
    return job_id


def test_jobs_list_and_show(run_cli: Run, store: Store) -> None:
    job_id = seed(store, run_cli)
    jobs = json.loads(run_cli("jobs", "list", "--json").stdout)
    assert {(j["queueName"], j["status"]) for j in jobs} == {("a", "running"), ("b", "completed")}
    only = json.loads(run_cli("jobs", "list", "--status", "completed", "--json").stdout)
    assert [(j["queueName"], j["messageCount"], j["failedCount"]) for j in only] == [("b", 4, 1)]
    by_queue = json.loads(run_cli("jobs", "list", "--queue", "a", "--json").stdout)
    assert [j["id"] for j in by_queue] == [job_id]
    assert len(json.loads(run_cli("jobs", "list", "--limit", "1", "--json").stdout)) == 1
    shown = json.loads(run_cli("jobs", "show", job_id, "--json").stdout)
    assert shown["processor"] == {"workerId": "h:1:x", "workerPid": 1, "consumerPid": 42}
    assert run_cli("jobs", "show", job_id).stdout.startswith(f"id: {job_id}")
    assert "QUEUE" in run_cli("jobs", "list").stdout


def test_jobs_bad_input(run_cli: Run, store: Store) -> None:
    bad = run_cli("jobs", "show", "nothex")
    assert bad.exit_code == 2 and "not a 24-digit hex ObjectId" in bad.stderr
    missing = run_cli("jobs", "show", "0" * 24)
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    assert run_cli("jobs", "list", "--status", "weird").exit_code == 2
    assert run_cli("jobs", "list", "--limit", "0").exit_code == 2


def test_workers_list_and_status(run_cli: Run, store: Store) -> None:
    seed(store, run_cli)
    [w] = json.loads(run_cli("workers", "list", "--json").stdout)
    assert (w["id"], w["load"], w["maxLoad"], w["status"]) == ("h:1:x", 1, 5, "active")
    assert w["consumers"] == [{"pid": 42, "queueName": "a", "rssMb": 30.5, "cpuPercent": 1.5}]
    assert w["heartbeatAgeSeconds"] >= 0
    status = json.loads(run_cli("status", "--json").stdout)
    assert {q["name"]: (q["visible"], q["worker"]) for q in status["queues"]} == {
        "a": (3, "h:1:x"), "b": (0, None),
    }  # fmt: skip
    assert status["jobs"] == {"queued": 0, "running": 1, "completed": 1, "failed": 0,
                              "interrupted": 0}  # fmt: skip
    assert status["leader"] is None
    text = run_cli("status").stdout
    assert "jobs: queued 0, running 1, completed 1" in text and "leader: none" in text
