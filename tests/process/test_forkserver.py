"""Consumers forked from a worker's fork server (CONSUMER_START, docs/design.md §2)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from tests.process.conftest import Daemon, records, wait_for
from tests.process.test_failures import busy_consumers, seqs, settled

pytestmark = pytest.mark.timeout(240)
SLOW = "tests.handlers:slow_record"  # 100 ms unless the body says otherwise
HOLD = "tests.handlers:hold"  # records its start, sleeps the body's ms, records its end


def consumer_of(store: Store, queue: str) -> psutil.Process:
    [(_, _, pid)] = wait_for(lambda: busy_consumers(store, queue), 60, "a consumer")
    return psutil.Process(pid)


def test_a_consumer_is_forked_from_its_workers_fork_server(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon],
    daemon_env: dict[str, str],
) -> None:  # fmt: skip
    admin.create("f", handler=SLOW, concurrency=2)
    admin.send("f", 40)
    token = "fork-server-secret-token"
    daemon = start_daemon("--mode", "MW", env={**daemon_env, "API_TOKEN": token})
    consumer = consumer_of(store, "f")
    server = consumer.parent()
    assert server is not None and (consumer.name(), server.name()) == (
        "orc-consumer", "orc-forkserver")  # fmt: skip
    worker = server.parent()
    assert worker is not None and worker.cmdline()[-1] == "worker"
    # the boot document (secrets included) went through a socket, not the command line
    assert all(token not in " ".join(p.cmdline()) for p in (server, consumer))
    wait_for(lambda: seqs(record_dir, "f") == set(range(40)), 90, "every message handled")
    assert daemon.stop() == 0
    wait_for(lambda: not server.is_running(), 10, "the fork server gone with its worker")


def test_consumer_start_spawn_starts_fresh_interpreters(
    admin: QueueAdmin, store: Store, record_dir: Path, start_daemon: Callable[..., Daemon],
    daemon_env: dict[str, str],
) -> None:  # fmt: skip
    admin.create("s", handler=SLOW, concurrency=2)
    admin.send("s", 20)
    daemon = start_daemon("--mode", "MW", env={**daemon_env, "CONSUMER_START": "spawn"})
    consumer = consumer_of(store, "s")
    assert consumer.cmdline()[-2:] == ["orchestrator.roles.process.child", "consumer"]
    parent = consumer.parent()
    assert parent is not None and parent.cmdline()[-1] == "worker"
    wait_for(lambda: seqs(record_dir, "s") == set(range(20)), 90, "every message handled")
    assert daemon.stop() == 0


def test_a_dead_fork_server_takes_its_consumers_and_the_next_one_is_forked_again(
    admin: QueueAdmin, store: Store, sqs: Sqs, record_dir: Path,
    start_daemon: Callable[..., Daemon],
) -> None:  # fmt: skip
    """multiprocessing reports the children of a dead fork server as exited (255), though
    they run on: the worker kills such a one at once, so that it never runs its handlers
    unsupervised beside its replacement; its messages come back, nothing is lost."""
    queue = admin.create("d", handler=HOLD, concurrency=2, visibility_timeout=5)
    sqs.send_batch(queue.queue_url, [json.dumps({"seq": i, "ms": 15_000}) for i in range(3)])
    daemon = start_daemon("--mode", "MW")
    wait_for(lambda: len(records(record_dir)) >= 2, 60, "two handlers started")
    consumer = consumer_of(store, "d")
    server = consumer.parent()
    assert server is not None and server.name() == "orc-forkserver"
    os.kill(server.pid, signal.SIGKILL)

    failed = wait_for(lambda: [j for j in store.jobs(queue="d") if j.status == "failed"], 30,
                      "its job failed")  # fmt: skip
    assert f"consumer {consumer.pid} died" in (failed[0].error or "")
    # well before its 15 s handlers could have finished
    wait_for(lambda: not consumer.is_running() or consumer.status() == psutil.STATUS_ZOMBIE,
             5, "the orphaned consumer killed")  # fmt: skip
    ended = {json.loads(r["body"])["seq"] for r in records(record_dir) if r["phase"] == "end"}
    assert not ended  # none of its handlers ran to the end
    wait_for(lambda: {json.loads(r["body"])["seq"] for r in records(record_dir)
                      if r["phase"] == "end"} == {0, 1, 2}, 120, "every message handled")
    wait_for(lambda: settled(store), 30, "settled")
    spawned = [e for e in daemon.events("consumer.spawned") if e["consumer_pid"] != consumer.pid]
    assert spawned  # forked by a new fork server: multiprocessing starts one when needed
