"""Worker and consumer processes driven directly: protocol and outcome bookkeeping."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from orchestrator.backends.queues import QueueAdmin
from orchestrator.backends.store import Store
from orchestrator.config import Endpoints, Settings
from orchestrator.models import utcnow
from orchestrator.roles.process import processes, protocol
from orchestrator.roles.process.processes import Child
from orchestrator.roles.process.protocol import Reason
from orchestrator.roles.worker.outbox import JobEnd
from orchestrator.roles.worker.worker import Worker
from tests.process.conftest import wait_for

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T", bound=protocol.ConsumerNote)


def spawner(settings: Settings, endpoints: Endpoints) -> Callable[[], Child]:
    boot = processes.boot_document(settings, endpoints)
    return lambda: processes.spawn("consumer", boot, channel=True)


@pytest.fixture
def consumer(settings: Settings, endpoints: Endpoints) -> Iterator[Child]:
    child = processes.spawn("consumer", processes.boot_document(settings, endpoints), channel=True)
    yield child
    processes.stop_all([child], 5)


def next_event(child: Child, kind: type[T], timeout: float = 30) -> T:
    assert child.channel
    seen: list[protocol.ConsumerNote] = []

    def find() -> T | None:
        assert child.channel
        seen.extend(protocol.decode(doc) for doc in child.channel.receive())
        while seen:
            event = seen.pop(0)
            if isinstance(event, kind):
                return event
        return None

    return wait_for(find, timeout, f"consumer event {kind.type}", interval=0.05)


def assign(admin: QueueAdmin, name: str, job_id: str) -> dict[str, Any]:
    q = admin.store.get_queue(name)
    return protocol.encode(protocol.Assign(job_id, q.name, q.queue_url,
                                           "orchestrator.handlers:noop", 30,
                                           protocol.Live(concurrency=2, paused=False)))


def test_a_stale_stop_does_not_end_the_next_job(admin: QueueAdmin, consumer: Child) -> None:
    for name, count in (("first", 3), ("second", 2)):
        admin.create(name)
        admin.send(name, count)
    assert consumer.channel
    consumer.channel.send(assign(admin, "first", "job-a"))
    assert next_event(consumer, protocol.Done).handled == 3
    consumer.channel.send(protocol.encode(protocol.Stop("job-a", Reason.RELEASED)))  # late
    consumer.channel.send(assign(admin, "second", "job-b"))
    done = next_event(consumer, protocol.Done)
    assert (done.job_id, done.handled, done.reason) == ("job-b", 2, "drained")
    assert consumer.poll() is None  # still alive, ready for more


def dead_store(settings: Settings) -> Store:
    """A real client for a MongoDB that is not there (a closed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Store(f"mongodb://127.0.0.1:{port}/", settings.mongodb_name,
                 job_ttl_days=1, timeout_ms=200)  # fmt: skip


def test_outcomes_wait_in_the_outbox_through_a_mongodb_outage(
    settings: Settings, endpoints: Endpoints, store: Store, admin: QueueAdmin
) -> None:
    worker = Worker(settings, store, spawner(settings, endpoints))
    worker.register(time.monotonic())
    queue = admin.create("q")
    job_id = store.assign(queue, worker.id, utcnow())
    assert job_id
    [assignment] = store.assignments(worker.id)

    worker.store = dead_store(settings)
    worker._close(JobEnd(assignment, Reason.DRAINED, 7, 0))
    for _ in range(3):
        worker.tick(time.monotonic())
    assert len(worker.outbox.pending) == 1  # kept, not lost
    assert worker.pool.slots == {}  # and its still-assigned queue was not started again

    worker.store = store
    worker.due.clear()
    worker.tick(time.monotonic())
    assert worker.outbox.pending == []
    job = store.job(job_id)
    assert job and (job.status, job.message_count) == ("completed", 7)
    assert store.assignments() == []


def test_a_worker_that_cannot_heartbeat_fences_itself(
    settings: Settings, endpoints: Endpoints, store: Store
) -> None:
    worker = Worker(settings, store, spawner(settings, endpoints))
    worker.register(time.monotonic())
    worker.store = dead_store(settings)
    start = time.monotonic()
    wait_for(lambda: worker.tick(time.monotonic()) or worker.fenced, 30, "the worker to fence")
    assert time.monotonic() - start < settings.worker_timeout  # before a master gives up on it
    worker.store = store
    worker.due.clear()
    worker.tick(time.monotonic())
    assert not worker.fenced
