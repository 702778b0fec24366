"""Worker: registers, heartbeats, and runs one consumer process per assignment.

Each tick reconciles: the assignments MongoDB gives this worker are the wanted
state, the consumers running them the actual state. The consumer processes
themselves are the pool's (orchestrator/roles/worker/pool.py); the worker owns every
MongoDB write about its jobs, which consumers report over their channels. A
job's outcome goes through an outbox (orchestrator/roles/worker/outbox.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator import tracing
from orchestrator.backends.protocols import WorkerStore
from orchestrator.backends.store import DAEMON_TIMEOUT_MS, Store
from orchestrator.config import Endpoints, Settings
from orchestrator.errors import OrchestratorError, ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import Assignment, FailureNote, WorkerRecord, utcnow
from orchestrator.roles.process import forkserver, processes, protocol
from orchestrator.roles.process.loop import Outage, retry
from orchestrator.roles.process.protocol import Live, Reason
from orchestrator.roles.process.signals import HANDLED, STOP, SignalQueue
from orchestrator.roles.process.status import Note, Reporter
from orchestrator.roles.worker.outbox import JobEnd, Outbox
from orchestrator.roles.worker.pool import ConsumerPool, Death, Process, Slot, SlotState

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger()

TICK_SECONDS = 0.1  # the loop also wakes at once for consumer events and signals
ASSIGNMENT_POLL_SECONDS = 0.25  # how soon a new assignment is picked up
SETTINGS_POLL_SECONDS = 1.0  # how soon a concurrency or pause change reaches consumers
FENCE_FRACTION = 0.7  # stop our consumers when heartbeats failed this part of WORKER_TIMEOUT
MEMORY_CHECK_SECONDS = 0.5  # how often busy consumers' RSS is checked against the limit


class Worker:
    """Runs the consumers of the queues assigned to it."""

    def __init__(
        self, settings: Settings, store: WorkerStore, spawn: Callable[[], Process]
    ) -> None:
        self.settings = settings
        self.store = store
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.meter = Meter()  # its consumers' counts and its own, until written
        self.pool = ConsumerPool(settings, spawn, self.meter)
        self.outbox = Outbox(self.meter)
        self.status = "active"
        self.started_at = utcnow()
        self.due: dict[str, float] = {}  # step → monotonic time it runs next
        self.outages: dict[str, Outage] = {}
        self.last_heartbeat = 0.0  # monotonic; set by register()
        self.fenced = False
        self.store_ok = True  # False from a failed store call until a heartbeat succeeds
        self.assigned: dict[str, Assignment] = {}  # by job id, as the last reconcile read
        self.tracer: Tracer | None = None  # set by run() when OTEL_* asks for traces
        self.spans: dict[str, Span] = {}  # each running job's, by job id
        self.reporter = Reporter(None)  # notes for the supervisor's probes (set by run())
        structlog.contextvars.bind_contextvars(worker_id=self.id)

    # --- the loop's one iteration -------------------------------------------------

    def register(self, now: float) -> None:
        record = WorkerRecord(self.id, socket.gethostname(), os.getpid(), self.started_at,
                              utcnow(), self.settings.max_load, self.status)  # fmt: skip
        self.store.register_worker(record)
        self.last_heartbeat = now
        log.info("worker.registered", max_load=self.settings.max_load)

    def tick(self, now: float) -> None:
        """Reap → outbox → heartbeat and fence → reconcile with the pool → relay settings;
        then watch the consumers (stalls, memory).

        Each step fails alone and is retried on its own schedule, so that a MongoDB
        error in one never starves the heartbeat (a silent worker is declared dead);
        after one store step fails the rest wait for the next tick rather than each
        waiting out its own timeout. Until fenced, the store calls of a tick must end by
        the time this worker must fence itself, whatever they wait for. Time comes only
        from `now` (monotonic seconds).
        """
        self._fence_if_silent(now)
        bound = (contextlib.nullcontext() if self.fenced
                 else self.store.deadline(self._fence_at() - now))  # fmt: skip
        with bound:
            self._steps(now)
        self._fence_if_silent(now)
        self.pool.watch(now)
        if now >= self.due.get("memory", 0.0):
            self.due["memory"] = now + MEMORY_CHECK_SECONDS
            self.pool.watch_memory()

    def _steps(self, now: float) -> None:
        self._step("reap", lambda: self.reap(now), now, 0)
        poll = min(ASSIGNMENT_POLL_SECONDS, self.settings.master_interval)
        steps: list[tuple[str, Callable[[], object], float]] = [
            ("outbox", lambda: self.outbox.flush(self.store), 0),
            ("heartbeat", lambda: self.heartbeat(now), self.settings.heartbeat_interval),
            ("metrics", lambda: self.outbox.flush_metrics(self.store),
             self.settings.heartbeat_interval),
        ]
        if self.status == "active" and not self.fenced:
            steps.append(("reconcile", lambda: self.reconcile(now), poll))
        steps.append(("settings", self.relay_settings, SETTINGS_POLL_SECONDS))
        for name, call, every in steps:
            if not self._step(name, call, now, every):
                break

    def _step(self, name: str, call: Callable[[], object], now: float, every: float) -> bool:
        """Run a step when due; False if it failed."""
        if now < self.due.get(name, 0.0):
            return True
        outage = self.outages.setdefault(name, Outage())
        try:
            call()
        except Exception as exc:  # logged once per problem (a bug with its traceback); retried
            self.due[name] = now + min(outage.failed(exc), self.settings.heartbeat_interval)
            if isinstance(exc, ServiceUnavailable):
                self.store_ok = False  # skip optional writes until a heartbeat gets through
            return False
        outage.recovered()
        self.due[name] = now + every
        return True

    # --- heartbeat and fencing -------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        # Stamped with the tick's time, before the write: fencing counts from no later
        # than the heartbeat MongoDB holds, so it can only come early, never late.
        found = self.store.heartbeat(self.id, utcnow(), self.pool.stats(), self.status)
        self.last_heartbeat = now
        self.store_ok = True
        self.reporter.note(Note.HEARTBEAT)
        if self.fenced:
            log.info("worker.unfenced")
            self.fenced = False
        if not found:
            # A master declared us dead and took our assignments: whatever our consumers
            # run is now somebody else's. Stop them, then come back as a new worker.
            log.warning("worker.declared_dead", action="stopping consumers, re-registering")
            self.pool.stop_all(Reason.RELEASED)
            self.register(now)

    def _fence_at(self) -> float:
        """When, without another heartbeat, this worker must fence itself."""
        return self.last_heartbeat + self.settings.worker_timeout * FENCE_FRACTION

    def _fence_if_silent(self, now: float) -> None:
        """Without heartbeats a master will soon give our queues to others: stop first,
        so that two consumers never run one queue."""
        if not self.fenced and now > self._fence_at():
            log.warning("worker.fenced", silent_seconds=round(now - self.last_heartbeat, 1))
            self.fenced = True
            self.reporter.note(Note.FENCED)
            self.pool.stop_all(Reason.FENCED)

    # --- reconciling -------------------------------------------------------------------

    def reconcile(self, now: float) -> None:
        wanted = {a.job_id: a for a in self.store.assignments(self.id)}
        self.assigned = wanted
        running = {s.job.job_id: s for s in self.pool.with_jobs() if s.job}
        for job_id, slot in running.items():
            if job_id not in wanted:  # released by someone else
                self.pool.stop(slot, Reason.RELEASED)
            elif wanted[job_id].yield_requested:  # a queue of higher priority waits
                self.pool.stop(slot, Reason.PREEMPTED)
        closing = self.outbox.job_ids()
        busy_queues = {s.job.queue_url for s in running.values() if s.job}
        new = [
            a for job_id, a in wanted.items()
            # A queue still being stopped here waits: one consumer per queue, always.
            if job_id not in running and job_id not in closing and a.queue_url not in busy_queues
        ]  # fmt: skip
        if not new:
            return
        queues = self.store.queues_by_id([a.queue_id for a in new])
        for assignment in new:
            queue = queues.get(assignment.queue_id)
            if queue is None:  # deleted while assigned
                self._close(JobEnd(assignment, Reason.QUEUE_DELETED, 0, 0, "queue deleted"))
                continue
            free = self.pool.acquire(now)
            if free is None:
                return  # spawning is backing off; the assignment waits for the next tick
            self.pool.assign(free, assignment, queue, now)
            self._job_span(assignment)

    def relay_settings(self) -> None:
        busy = [s for s in self.pool.with_jobs() if s.state is SlotState.BUSY]
        if not busy:
            return
        queues = self.store.queues_by_id([s.job.queue_id for s in busy if s.job])
        for slot in busy:
            assert slot.job is not None
            queue = queues.get(slot.job.queue_id)
            # A shard's share as the master last wrote it (reconcile reads it).
            share = self.assigned.get(slot.job.job_id, slot.job).share
            if queue is not None and self.pool.relay(slot, Live.of(queue, share)):
                log.info("queue.settings_changed", queue=queue.name, **dataclasses.asdict(
                    slot.live or Live(0)))  # fmt: skip

    # --- consumer events -----------------------------------------------------------------

    def on_readable(self, slot: Slot, now: float) -> None:
        for event in self.pool.receive(slot, now):
            self._on_event(slot, event)

    def _on_event(self, slot: Slot, event: protocol.ToWorker) -> None:
        """Record what a consumer reports. Store errors here must not lose the event:
        progress can be skipped, but a job's end goes through the outbox."""
        self.meter.merge(event.metrics)  # real counts, even for a job already closed
        job = slot.job
        if job is None or event.job_id != job.job_id:
            return  # news of a job already closed
        if not isinstance(event, protocol.Started) and event.failures:
            self._record_failures(job, event.failures)
        if isinstance(event, protocol.Done):
            self.pool.done(slot, abandoned=bool(event.abandoned))
            self._close(JobEnd.reported(job, event, (os.getpid(), slot.pid)))
            return
        if isinstance(event, protocol.Progress):
            slot.handled, slot.failed = event.handled, event.failed
        else:
            self.pool.started()
        if not self.store_ok:
            return  # skippable: waiting out a timeout here would starve the loop
        try:
            if isinstance(event, protocol.Started):
                self.store.job_started(job.job_id, os.getpid(), slot.pid, utcnow())
            else:
                assert isinstance(event, protocol.Progress)
                self.store.job_progress(job.job_id, slot.handled, slot.failed, utcnow(),
                                        effective=event.effective, running=event.running,
                                        oldest_age=event.oldest_age)  # fmt: skip
        except ServiceUnavailable:  # the next report repeats it; the steps say more
            self.store_ok = False
        except Exception:  # a bug: keep the traceback; the next report repeats it
            log.exception("worker.progress_write_failed", job_id=job.job_id)

    def _record_failures(self, job: Assignment, failures: tuple[FailureNote, ...]) -> None:
        """Keep the handlers' failures for the dead-letter browser; only a display: they
        are dropped while MongoDB fails, never retried."""
        if not self.store_ok:
            return
        try:
            self.store.record_failures(failures)
        except ServiceUnavailable:
            self.store_ok = False
        except Exception:  # a bug: keep the traceback, lose only the display
            log.exception("worker.failures_write_failed", job_id=job.job_id)

    def _job_span(self, job: Assignment) -> None:
        if self.tracer is not None:
            self.spans[job.job_id] = self.tracer.start_span(
                f"job {job.queue_name}", attributes={"messaging.destination.name": job.queue_name,
                                                     "orchestrator.job.id": job.job_id,
                                                     "orchestrator.shard": job.shard})

    def _end_span(self, end: JobEnd) -> None:
        span = self.spans.pop(end.job.job_id, None)
        if span is not None:
            span.set_attributes({"orchestrator.job.status": end.status,
                                 "orchestrator.job.reason": end.reason.value,
                                 "orchestrator.job.handled": end.handled,
                                 "orchestrator.job.failed": end.failed})
            if end.status == "failed":
                tracing.failed(span, end.error or end.reason.value, None)
            span.end()

    def _close(self, end: JobEnd) -> None:
        self._end_span(end)
        # Written at once unless MongoDB is failing: then the "outbox" step retries it.
        self.outbox.add(end, self.store if self.store_ok else None)

    # --- reaping ----------------------------------------------------------------------------

    def reap(self, now: float) -> None:
        """Collect dead consumers: close their jobs with the exit status, free the queue."""
        for slot, status in self.pool.exited():
            self.on_readable(slot, now)  # a last "done" may still be in the socket
            death = self.pool.remove(slot, status, now, count_death=self.status == "active")
            if death.job is not None:
                self._close(self._death_outcome(death))

    def _death_outcome(self, death: Death) -> JobEnd:
        assert death.job is not None
        if self.status == "draining":  # we are stopping: the job was cut short, not broken
            return JobEnd(death.job, Reason.SHUTDOWN, death.handled, death.failed,
                          f"consumer {death.pid} ended during shutdown: {death.how}",
                          pids=(os.getpid(), death.pid))  # fmt: skip
        error = f"consumer {death.pid} died: {death.how}" + (
            f" ({death.kill_reason})" if death.kill_reason else ""
        )
        return JobEnd(death.job, Reason.CONSUMER_DIED, death.handled, death.failed, error,
                      pids=(os.getpid(), death.pid))

    # --- shutdown ------------------------------------------------------------------------------

    def shutdown(
        self, grace: float, selector: selectors.BaseSelector, signals: SignalQueue
    ) -> None:
        """Graceful stop, in order, within `grace` seconds (a second signal cuts it short):
        1. stop taking work (status draining: masters assign us nothing more);
        2. ask busy consumers to stop receiving and finish their in-flight handlers;
        3. wait for their reports (their jobs end `interrupted`);
        4. TERM whatever runs, reap, KILL after the deadline (undeleted messages
           reappear in SQS; consumers hand back what they hold when they can);
        5. write outcomes, release what is still assigned (jobs `interrupted`), deregister.
        """
        deadline = time.monotonic() + grace
        self.status = "draining"
        self._quietly(self.heartbeat, time.monotonic())
        self.pool.stop_all(Reason.SHUTDOWN)
        self.pool.retire_idle()
        while time.monotonic() < deadline and self.pool.with_jobs():
            for key, _ in selector.select(timeout=0.1):
                if isinstance(key.data, Slot):
                    self._quietly(self.on_readable, key.data, time.monotonic())
            self._quietly(self.reap, time.monotonic())
            if any(s in STOP for s in signals.drain()):
                log.warning("worker.stopping_now", reason="second signal")
                deadline = time.monotonic()
        for slot in list(self.pool.slots.values()):
            self.pool.retire(slot)
        processes.stop_all([s.process for s in self.pool.slots.values()],
                           max(deadline - time.monotonic(), 0.5))  # fmt: skip
        self._quietly(self.reap, time.monotonic())
        self._quietly(self.outbox.flush, self.store)
        self._quietly(self.outbox.flush_metrics, self.store)
        self._quietly(self.store.release_worker, self.id, utcnow(), "worker stopped")
        self._quietly(self.store.delete_worker, self.id)
        log.info("worker.stopped")

    def _quietly(self, call: Callable[..., object], *args: Any) -> None:
        """During shutdown a failing step must not stop the rest of the sequence."""
        step = getattr(call, "__name__", "?")
        try:
            call(*args)
        except OrchestratorError as exc:  # MongoDB or SQS unreachable: say which, go on
            log.error("worker.shutdown_step_failed", step=step, error=str(exc))
        except Exception:  # a bug: keep the traceback, go on
            log.exception("worker.shutdown_step_failed", step=step)


def run(settings: Settings, endpoints: Endpoints, reporter: Reporter | None = None) -> None:
    """The worker process: register, then tick until SIGTERM/SIGINT or orphaned."""
    signals = SignalQueue(HANDLED)
    original_parent = os.getppid()
    store = Store.connect(settings, endpoints.mongodb_uri, timeout_ms=DAEMON_TIMEOUT_MS)
    boot = processes.boot_document(settings, endpoints)
    worker = Worker(settings, store, _consumer_spawner(settings, boot))
    worker.tracer = tracing.tracer("worker")
    worker.reporter = reporter or Reporter(None)
    if not retry(store.ensure_indexes, signals, "MongoDB"):  # SchemaTooNew: raised
        return
    if not retry(lambda: worker.register(time.monotonic()), signals, "MongoDB"):
        return
    selector = selectors.DefaultSelector()
    selector.register(signals.read_fd, selectors.EVENT_READ)
    while processes.parent_alive(original_parent):
        for key, _ in selector.select(timeout=TICK_SECONDS):
            if isinstance(key.data, Slot):
                worker.on_readable(key.data, time.monotonic())
        if any(s in STOP for s in signals.drain()):
            break
        worker.tick(time.monotonic())
        _watch_channels(selector, worker)
    log.info("worker.stopping", grace=settings.shutdown_grace)
    worker.shutdown(settings.shutdown_grace, selector, signals)
    tracing.shutdown(settings.shutdown_grace)


def _consumer_spawner(settings: Settings, boot: dict[str, Any]) -> Callable[[], Process]:
    """How this worker starts a consumer: forked from its fork server, or (CONSUMER_START
    spawn, or no fork server on this platform) as a fresh interpreter."""
    if settings.consumer_start == "fork" and forkserver.available():
        server = forkserver.ForkServer()
        return lambda: server.spawn("consumer", boot)
    return lambda: processes.spawn("consumer", boot, channel=True)


def _watch_channels(selector: selectors.BaseSelector, worker: Worker) -> None:
    """Keep the selector's channels equal to the live consumers'."""
    watched = {k.data for k in selector.get_map().values() if isinstance(k.data, Slot)}
    current = set(worker.pool.slots.values())
    for slot in watched - current:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(slot.process.channel)  # type: ignore[arg-type]
    for slot in current - watched:
        selector.register(slot.process.channel, selectors.EVENT_READ, slot)  # type: ignore[arg-type]
