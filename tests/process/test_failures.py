"""Failure handling end to end: kills, signals, poison, bad handlers, outages.

Delivery is at least once: after every scenario each message must have been
handled (duplicates are allowed, losses are not) and no job or assignment
may be left dangling.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from orchestrator import config
from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.embedded import servers as embedded
from tests.conftest import base_environ
from tests.http import call
from tests.process.conftest import Daemon, api_url, holds_for, records, wait_for

pytestmark = pytest.mark.timeout(240)
SLOW = "tests.handlers:slow_record"  # 100 ms unless the body says otherwise


def seqs(record_dir: Path, queue: str) -> set[int]:
    return {json.loads(r["body"])["seq"] for r in records(record_dir) if r["queue"] == queue}


def settled(store: Store) -> bool:
    """No open job and no assignment left."""
    open_jobs = [j for j in store.jobs(limit=10_000) if j.status in ("queued", "running")]
    return not open_jobs and not store.assignments()


def busy_consumers(store: Store, queue: str | None = None) -> list[tuple[str, int, int]]:
    """(worker id, worker pid, consumer pid) of consumers running a queue."""
    return [
        (w.id, w.pid, c.pid)
        for w in store.workers()
        for c in w.consumers
        if c.queue_name and (queue is None or c.queue_name == queue)
    ]


def test_sigkill_of_a_worker_and_its_consumers_loses_nothing(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    names = ["k1", "k2", "k3"]
    for name in names:  # the killed ones' messages are back within 5 s
        admin.create(name, handler=SLOW, concurrency=2, visibility_timeout=5)
        admin.send(name, 80)
    start_daemon("--mode", "MW", "--workers", "2")
    busy = wait_for(lambda: len(records(record_dir)) >= 20 and busy_consumers(store), 60,
                    "consumers at work")  # fmt: skip
    dead_id, dead_pid, _ = busy[0]
    family = [psutil.Process(dead_pid), *psutil.Process(dead_pid).children(recursive=True)]
    os.killpg(dead_pid, signal.SIGKILL)  # the worker and its consumers, at once

    wait_for(lambda: all(seqs(record_dir, n) == set(range(80)) for n in names), 150,
             "every message handled")  # fmt: skip
    wait_for(lambda: settled(store), 30, "no open job, no assignment")
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert dead_id not in {w.id for w in store.workers()}
    assert dead_id not in {a.worker for a in store.assignments()}
    cut_short = [j for j in store.jobs(limit=1000) if j.worker_id == dead_id]
    assert cut_short and {j.status for j in cut_short} <= {"interrupted", "completed"}


def test_sigkill_of_a_consumer_fails_its_job_and_a_replacement_drains(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("c", handler=SLOW, concurrency=2, visibility_timeout=5)
    admin.send("c", 80)
    start_daemon("--mode", "MW")
    [(_, _, consumer_pid)] = wait_for(
        lambda: len(records(record_dir)) >= 10 and busy_consumers(store, "c"), 60, "a consumer"
    )
    os.kill(consumer_pid, signal.SIGKILL)

    failed = wait_for(lambda: [j for j in store.jobs(queue="c") if j.status == "failed"], 30,
                      "its job failed")  # fmt: skip
    assert f"consumer {consumer_pid} died: signal SIGKILL" in (failed[0].error or "")
    wait_for(lambda: seqs(record_dir, "c") == set(range(80)), 90, "the rest drained")
    wait_for(lambda: settled(store), 30, "settled")
    assert any(j.status == "completed" for j in store.jobs(queue="c"))


def test_a_poison_message_goes_to_the_dlq_and_the_rest_is_handled(
    admin: QueueAdmin, store: Store, sqs: Sqs, record_dir: Path,
    start_daemon: Callable[..., Daemon],
) -> None:  # fmt: skip
    queue = admin.create("pq", handler="tests.handlers:poison", dlq=True, max_receive_count=2)
    assert queue.dlq_url
    sqs.send_batch(queue.queue_url, [json.dumps({"seq": i}) for i in range(10)])
    sqs.send_batch(queue.queue_url, ['{"seq": -1, "poison": true}'])
    sqs.send_batch(queue.queue_url, [json.dumps({"seq": i}) for i in range(10, 20)])
    start_daemon("--mode", "MW")

    wait_for(lambda: sqs.depth(queue.dlq_url or "").visible == 1, 90, "the poison in the DLQ")
    wait_for(lambda: seqs(record_dir, "pq") == set(range(20)), 30, "every good message handled")
    [dead] = sqs.receive(queue.dlq_url, 10, 1)
    assert "poison" in dead.body
    # Received twice before SQS moved it (maxReceiveCount 2), and its handler failed on
    # it. Not necessarily twice: with several receives under way the embedded server can
    # hand one message to two of them (docs/design.md §13), and the copy is dropped
    # unrun (counted in the job's `duplicates`), a receive all the same.
    assert dead.receive_count >= 2
    assert sum(j.failed_count for j in store.jobs(queue="pq")) >= 1


def test_a_huge_error_is_kept_and_logged_cut_to_a_few_kib(
    admin: QueueAdmin, store: Store, sqs: Sqs, start_daemon: Callable[..., Daemon]
) -> None:
    """ValueError("E" * 9_000_000) made 18 MB failure documents (MongoDB refuses 16 MiB),
    18 MB API answers and 18 MB log lines."""
    queue = admin.create("huge", handler="tests.handlers:huge_error", dlq=True,
                         max_receive_count=1, failure_bodies=True)  # fmt: skip
    body = json.dumps({"pad": "b" * 200_000})
    sqs.send_batch(queue.queue_url, [body])
    daemon = start_daemon("--mode", "MW")

    [doc] = wait_for(lambda: list(store._db["failures"].find({"queueName": "huge"})), 60,
                     "the failure recorded")  # fmt: skip
    assert doc["errorType"] == "ValueError"
    assert doc["error"].startswith("EEEE") and doc["error"].endswith(" bytes]")
    assert "…[truncated 8,99" in doc["error"] and len(doc["error"]) < 4200
    assert "…[truncated" in doc["traceback"] and len(doc["traceback"]) < 8300
    assert doc["body"].startswith(body[:1000]) and "…[truncated 13" in doc["body"]
    assert len(doc["body"]) < 66_000
    [line] = wait_for(lambda: daemon.events("message.failed"), 10, "the failure logged")
    assert len(line["error"]) < 4200
    assert max(len(x) for x in daemon.log().splitlines()) < 20_000
    wait_for(lambda: sqs.depth(queue.dlq_url or "").visible == 1, 60, "the message in the DLQ")
    daemon.stop()
    assert daemon.log_path.stat().st_size < 1_000_000


def test_a_handler_that_does_not_import_fails_its_job_with_backoff(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("broken", handler="no_such_package.handlers:handle")
    admin.send("broken", 3)
    admin.create("fine", handler="tests.handlers:record")
    admin.send("fine", 20)
    daemon = start_daemon("--mode", "MW")

    failed = wait_for(lambda: [j for j in store.jobs(queue="broken") if j.status == "failed"],
                      30, "the broken queue's job failed")  # fmt: skip
    assert "no_such_package.handlers:handle" in (failed[0].error or "")
    # It never started, yet the job names the consumer that tried (and its worker).
    spawned = {e["consumer_pid"] for e in daemon.events("consumer.spawned")}
    assert failed[0].consumer_pid in spawned and failed[0].worker_pid
    wait_for(lambda: seqs(record_dir, "fine") == set(range(20)), 60, "the other queue handled")
    holds_for(lambda: daemon.proc.poll() is None, 8, "the daemon stays up")
    # Retried with backoff (2 s, 4 s, 8 s …), not in a tight loop (every master tick).
    assert 2 <= len(store.jobs(queue="broken", limit=100)) <= 6
    assert daemon.events("queue.backing_off")
    assert admin.depth("broken").visible == 3  # its messages wait, untouched


def test_a_job_that_abandons_a_handler_is_failed_saying_so(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("stuck", handler=SLOW, visibility_timeout=5)
    admin.send("stuck", 1, body=json.dumps({"ms": 600_000}))  # never returns, in effect
    daemon = start_daemon("--mode", "MW", env={"ASSIGNMENT_MAX_SECONDS": "2",
                                               "SHUTDOWN_GRACE": "1"})  # fmt: skip

    [job] = wait_for(lambda: [j for j in store.jobs(queue="stuck") if j.ended_at], 30,
                     "the job to end")  # fmt: skip
    assert (job.status, job.end_reason) == ("failed", "abandoned")
    assert "1 handler(s) had not returned" in (job.error or "")
    assert job.message_count == 0
    assert daemon.stop() == 0


def test_sigterm_exits_within_the_grace_and_releases_everything(
    admin: QueueAdmin, store: Store, sqs: Sqs, record_dir: Path,
    start_daemon: Callable[..., Daemon], settings: Settings,
) -> None:  # fmt: skip
    url = admin.create("g", handler=SLOW, concurrency=3).queue_url
    for start in range(0, 60, 10):
        sqs.send_batch(url, [json.dumps({"ms": 300, "seq": i}) for i in range(start, start + 10)])
    daemon = start_daemon("--mode", "MW", "--workers", "2")
    wait_for(lambda: len(records(record_dir)) >= 5, 60, "some messages handled")

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=settings.shutdown_grace) == 0

    assert settled(store) and store.workers() == []
    assert {j.status for j in store.jobs(queue="g")} <= {"interrupted", "completed"}
    handled = seqs(record_dir, "g")
    back: set[int] = set()
    while got := sqs.receive(url, 10, 1):
        back |= {json.loads(m.body)["seq"] for m in got}
    assert handled | back == set(range(60))  # handled, or visible again at once


def test_a_second_signal_stops_at_once(
    admin: QueueAdmin, sqs: Sqs, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    url = admin.create("hang", handler=SLOW, concurrency=2, visibility_timeout=3).queue_url
    sqs.send_batch(url, [json.dumps({"ms": 60_000, "seq": i}) for i in range(4)])
    daemon = start_daemon("--mode", "MW")
    wait_for(lambda: sqs.depth(url).in_flight == 2, 60, "two handlers running")

    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: daemon.events("supervisor.stopping"), 10, "the graceful stop began")
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=10)  # not the 60 s the handlers would take

    # Nothing was deleted: after their visibility timeout all four are back.
    wait_for(lambda: sqs.depth(url).visible == 4, 30, "all messages visible again")
    assert records(record_dir) == []


def test_the_standby_master_takes_over_within_the_lease(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon],
    settings: Settings,
) -> None:  # fmt: skip
    masters = [start_daemon("--mode", "M"), start_daemon("--mode", "M")]
    start_daemon("--mode", "W")
    lease = wait_for(store.lease, 30, "a leader")
    [leader] = [m for m in masters for e in m.events("master.leading")
                if e["master_id"] == lease.holder]  # fmt: skip
    [standby] = [m for m in masters if m is not leader]
    wait_for(lambda: store.workers(), 30, "a worker")

    leader.kill_tree()
    killed_at = time.monotonic()
    admin.create("after", handler="tests.handlers:record")
    admin.send("after", 5)
    # The log line follows the write: wait for the line, which names who assigned.
    wait_for(lambda: standby.events("queue.assigned"), settings.lease_ttl + 10,
             "new work assigned by the standby")  # fmt: skip
    took = time.monotonic() - killed_at
    assert standby.events("master.leading")
    assert took < settings.lease_ttl + 10
    wait_for(lambda: seqs(record_dir, "after") == set(range(5)), 30, "the new work done")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OwnServers:
    """Embedded servers of the test's own, on fixed ports: a server stopped or killed
    comes back where the daemon expects it."""

    env: dict[str, str]
    settings: Settings
    store: Store
    admin: QueueAdmin
    mongodb_pid: int


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[OwnServers]:
    ports = {"EMBEDDED_MONGODB_PORT": str(_free_port()), "EMBEDDED_SQS_PORT": str(_free_port())}
    env = {"DATA_DIR": str(tmp_path / "data"), "MONGODB_NAME": "own", **ports}
    settings = config.load(environ=base_environ(tmp_path / "data", **env))
    ends = embedded.ensure(settings)
    store = Store(ends.mongodb_uri, "own", job_ttl_days=1)
    sqs = Sqs(ends.sqs_endpoint, "us-east-1", "test", "test")
    pid = json.loads((tmp_path / "data" / "services.json").read_text())["mongodb"]["pid"]
    yield OwnServers(env, settings, store, QueueAdmin(settings, lambda: store, lambda: sqs), pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
    embedded.stop(settings)


def test_a_mongodb_outage_mid_run_loses_nothing(
    own_servers: OwnServers, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    own = own_servers
    own.admin.create("o", handler=SLOW, concurrency=2)
    own.admin.send("o", 150)
    daemon = start_daemon("--mode", "MW", env=own.env)
    wait_for(lambda: len(records(record_dir)) >= 20, 60, "work under way")

    os.kill(own.mongodb_pid, signal.SIGKILL)
    holds_for(lambda: daemon.proc.poll() is None, 10, "the daemon rides out the outage")
    embedded.ensure(own.settings)  # the server comes back, on the same port

    wait_for(lambda: seqs(record_dir, "o") == set(range(150)), 150, "every message handled")
    wait_for(lambda: settled(own.store), 60, "no open job, no assignment")
    assert daemon.events("service.unavailable")  # the outage was seen
    assert not daemon.events("child.died")  # carried on without a restart
    assert not daemon.events("loop.error")  # no traceback per loop
    assert len(daemon.events("service.unavailable")) < 40  # a line per problem


def test_a_hung_mongodb_is_an_outage_not_a_hang(
    own_servers: OwnServers, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """A MongoDB that accepts connections but never answers (SIGSTOP): every role must
    time out, say so and carry on; the worker fences itself before it could be declared
    dead; the API still answers; after SIGCONT every message is handled."""
    own = own_servers
    own.admin.create("h", handler=SLOW, concurrency=2)
    own.admin.send("h", 150)
    daemon = start_daemon("--mode", "MW", env=own.env)
    base = api_url(daemon)
    wait_for(lambda: len(records(record_dir)) >= 20, 60, "work under way")

    os.kill(own.mongodb_pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        [fenced] = wait_for(lambda: daemon.events("worker.fenced"), 15, "the worker to fence")
        # At 0.7 x WORKER_TIMEOUT of silence, not when a hung store call gives up: the last
        # heartbeat came at most HEARTBEAT_INTERVAL before the stop (+0.3 s for the loop).
        fence = own.settings.worker_timeout * 0.7
        took = datetime.fromisoformat(fenced["timestamp"]).timestamp() - stopped_at
        assert took <= fence + 0.3, f"fenced {took:.1f} s after the stop; due by {fence} s"
        started = time.monotonic()
        _, health = call("GET", f"{base}/health")
        assert time.monotonic() - started < 12 and health["mongodb"] is False, health
    finally:
        os.kill(own.mongodb_pid, signal.SIGCONT)

    wait_for(lambda: seqs(record_dir, "h") == set(range(150)), 150, "every message handled")
    wait_for(lambda: settled(own.store), 60, "no open job, no assignment")
    assert daemon.events("service.unavailable")
    assert not daemon.events("child.died")


def test_a_hung_sqs_is_an_outage_and_keeps_the_consumer(
    own_servers: OwnServers, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """SQS that accepts connections but never answers for 35 s (SIGSTOP), longer than
    the worker's stall watchdog: the consumer's calls time out inside it, the consumer
    says SQS is unavailable and carries on, and after SIGCONT every message is handled."""
    own = own_servers
    sqs_pid = json.loads((Path(own.env["DATA_DIR"]) / "services.json").read_text())["sqs"]["pid"]
    own.admin.create("s", handler=SLOW, concurrency=2, visibility_timeout=5)
    own.admin.send("s", 60)
    daemon = start_daemon("--mode", "MW", env=own.env)
    wait_for(lambda: len(records(record_dir)) >= 10, 60, "work under way")

    os.kill(sqs_pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        reports = lambda: [e for e in daemon.events("service.unavailable")  # noqa: E731
                           if e.get("role") == "consumer"]  # fmt: skip
        wait_for(reports, 20, "the consumer to report SQS")
        # past the worker's 30 s stall watchdog
        holds_for(lambda: not daemon.events("consumer.stalled"), stopped + 33 - time.monotonic(),
                  "no consumer is stalled")  # fmt: skip
    finally:
        os.kill(sqs_pid, signal.SIGCONT)

    wait_for(lambda: seqs(record_dir, "s") == set(range(60)), 120, "every message handled")
    assert not daemon.events("consumer.stalled")
    assert not [j for j in own.store.jobs(queue="s") if j.end_reason == "consumer_died"]


def test_a_consumer_over_its_memory_limit_stops_its_job_and_is_replaced(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("fat", handler="tests.handlers:grow", concurrency=1)
    admin.send("fat", 3, body=json.dumps({"mb": 250, "ms": 1500}))  # over 200, under 400
    daemon = start_daemon("--mode", "MW", env={"CONSUMER_MAX_RSS_MB": "200"})

    wait_for(lambda: len(records(record_dir)) >= 3, 90, "every message handled")
    [stop, *_] = wait_for(lambda: daemon.events("consumer.over_memory"), 10, "the stop")
    assert stop["action"] == "stop" and stop["rss_mb"] > 200
    ended = [j for j in store.jobs(queue="fat", limit=20) if j.end_reason == "memory"]
    assert ended and ended[0].status == "interrupted" and ended[0].message_count >= 1
    assert len({r["pid"] for r in records(record_dir)}) >= 2  # each over-limit one replaced
    assert admin.depth("fat").visible == 0 and not daemon.events("consumer.stalled")
    assert daemon.stop() == 0


def test_a_consumer_far_over_its_memory_limit_is_killed_and_loses_nothing(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon]
) -> None:
    admin.create("bloat", handler="tests.handlers:grow", concurrency=1, visibility_timeout=5)
    admin.send("bloat", 1, body=json.dumps({"mb": 2000, "ms": 60_000}))
    daemon = start_daemon("--mode", "MW", env={"CONSUMER_MAX_RSS_MB": "200"})

    [job] = wait_for(lambda: [j for j in store.jobs(queue="bloat") if j.ended_at], 60,
                     "the job to end")  # fmt: skip
    assert (job.status, job.end_reason) == ("failed", "consumer_died")
    assert "over 2 x CONSUMER_MAX_RSS_MB (200)" in (job.error or "")
    [kill] = [e for e in daemon.events("consumer.over_memory") if e["action"] == "kill"][:1]
    assert 400 <= kill["rss_mb"] < 1000  # caught on its way up, not at the end
    depth = admin.depth("bloat")
    assert depth.visible + depth.in_flight == 1  # it comes back to SQS
    assert daemon.stop() == 0
