"""Worker.tick on the in-memory store with stand-in consumers: reconciling, reporting,
fencing and reaping, with time given only as the tick's argument."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator import config
from orchestrator.backends.memory import MemoryStore
from orchestrator.errors import ServiceUnavailable
from orchestrator.models import FailureNote, QueueRecord, Share
from orchestrator.roles.process import protocol
from orchestrator.roles.process.protocol import Reason
from orchestrator.roles.worker.pool import SlotState
from orchestrator.roles.worker.worker import Worker
from tests.unit.stubs import Spawner

SETTINGS = config.load("development", {"WORKER_TIMEOUT": "10", "HEARTBEAT_INTERVAL": "2"})
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Far from this machine's monotonic clock: the worker must use only what it is given.
START = 1_000_000.0


def setup(queues: int = 1) -> tuple[Worker, MemoryStore, Spawner, list[str]]:
    store, spawner = MemoryStore(), Spawner()
    worker = Worker(SETTINGS, store, spawner)
    worker.register(START)
    jobs = []
    for i in range(queues):
        queue = store.insert_queue(QueueRecord(f"q{i}", f"memory://sqs/q{i}", 4, "app:handle"))
        job_id = store.assign(queue, worker.id, T0)
        assert job_id
        jobs.append(job_id)
    return worker, store, spawner, jobs


def sent(spawner: Spawner, n: int = 0) -> list[protocol.ConsumerNote]:
    return spawner.made[n].channel.messages()


def test_an_assignment_runs_on_a_consumer_and_its_outcome_closes_the_job() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    [assign] = sent(spawner)
    assert isinstance(assign, protocol.Assign) and assign.job_id == job_id
    consumer = spawner.made[0]
    consumer.report(protocol.Started(job_id, consumer.pid))
    worker.on_readable(worker.pool.slots[consumer.pid], START + 0.1)
    assert (job := store.job(job_id)) and job.status == "running"
    consumer.report(protocol.Done(job_id, 12, 1, Reason.DRAINED))
    worker.on_readable(worker.pool.slots[consumer.pid], START + 0.2)
    job = store.job(job_id)
    assert job and (job.status, job.message_count, job.end_reason) == ("completed", 12, "drained")
    assert store.assignments() == []  # the queue may be assigned again
    assert worker.pool.slots[consumer.pid].state is SlotState.IDLE  # kept for reuse


def test_the_failures_a_consumer_reports_are_stored_as_the_notes_it_made() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    consumer = spawner.made[0]
    first = FailureNote("q0", "m-1", 2, "ValueError", "bad", "Traceback …", T0, "{}")
    second = FailureNote("q0", "m-2", 1, "KeyError", "'x'", "", T0)
    consumer.report(protocol.Started(job_id, consumer.pid))
    consumer.report(protocol.Progress(job_id, 0, 1, failures=(first,)))
    consumer.report(protocol.Done(job_id, 0, 2, Reason.DRAINED, failures=(second,)))
    worker.on_readable(worker.pool.slots[consumer.pid], START + 0.1)
    assert store.failure_docs == [first, second]


def test_an_assignment_taken_away_stops_its_consumer() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    store.release(job_id)  # a master took it back
    worker.tick(START + 1)
    assert sent(spawner)[-1] == protocol.Stop(job_id, Reason.RELEASED)


def test_settings_changes_are_relayed_to_the_running_consumer() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    store.update_queue("q0", {"concurrency": 9})
    worker.tick(START + 1.5)
    assert sent(spawner)[-1] == protocol.Retune(job_id, protocol.Live(concurrency=9))


def test_a_worker_that_cannot_heartbeat_fences_itself_before_a_master_would_give_up() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    store.fail_with = ServiceUnavailable("MongoDB at memory failed: down")
    now = START
    while not worker.fenced:
        now += 0.1
        worker.tick(now)
    assert now - START <= SETTINGS.worker_timeout * 0.7 + 0.2
    assert sent(spawner)[-1] == protocol.Stop(job_id, Reason.FENCED)
    store.fail_with = None
    worker.tick(now + 3)
    assert not worker.fenced


def test_a_worker_declared_dead_stops_its_consumers_and_registers_again() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    store.release_worker(worker.id, T0, "worker stopped heartbeating")
    store.delete_worker(worker.id)
    worker.tick(START + 2.5)
    assert sent(spawner)[-1] == protocol.Stop(job_id, Reason.RELEASED)
    assert worker.id in store.worker_docs


def test_a_consumer_that_dies_fails_its_job_and_frees_the_queue() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    spawner.made[0].exit(-9)
    worker.tick(START + 0.5)
    job = store.job(job_id)
    assert job and (job.status, job.end_reason) == ("failed", "consumer_died")
    assert job.error == f"consumer {spawner.made[0].pid} died: signal SIGKILL"
    assert store.assignments() == [] and worker.pool.slots == {}


def test_one_consumer_per_assignment_and_idle_ones_are_reused() -> None:
    worker, store, spawner, jobs = setup(queues=3)
    worker.tick(START)
    assert len(spawner.made) == 3
    for consumer, job_id in zip(spawner.made, jobs, strict=True):
        consumer.report(protocol.Done(job_id, 1, 0, Reason.DRAINED))
        worker.on_readable(worker.pool.slots[consumer.pid], START + 1)
    queue = store.insert_queue(QueueRecord("q9", "memory://sqs/q9", 4, "app:handle"))
    store.assign(queue, worker.id, T0)
    worker.tick(START + 2)
    assert len(spawner.made) == 3  # no new process: an idle one took it


def test_a_preempted_assignment_is_stopped_for_that_reason() -> None:
    worker, store, spawner, [job_id] = setup()
    worker.tick(START)
    store.request_yield(job_id, T0)
    worker.tick(START + 1)
    assert sent(spawner)[-1] == protocol.Stop(job_id, Reason.PREEMPTED)


def test_a_shard_runs_its_share_and_waits_until_it_is_granted() -> None:
    store, spawner = MemoryStore(), Spawner()
    worker = Worker(SETTINGS, store, spawner)
    worker.register(START)
    queue = store.insert_queue(QueueRecord("q", "memory://sqs/q", 6, "app:handle",
                                           rate_limit=4.0))  # fmt: skip
    job_id = store.assign(queue, worker.id, T0, shard=1, share=Share(3, 2.0, granted=False))
    assert job_id
    worker.tick(START)
    [assign] = sent(spawner)
    assert isinstance(assign, protocol.Assign)
    assert (assign.live.concurrency, assign.live.rate_limit) == (0, 2.0)  # not yet
    store.set_share(job_id, Share(3, 2.0, granted=True))
    worker.tick(START + 1.5)
    assert sent(spawner)[-1] == protocol.Retune(job_id, protocol.Live(3, rate_limit=2.0))
