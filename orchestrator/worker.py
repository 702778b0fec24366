"""Worker: registers, heartbeats, and runs one consumer process per assignment.

Each tick reconciles: the assignments MongoDB gives this worker are the wanted
state, the consumers running them the actual state. The worker owns every
MongoDB write about its jobs; consumers report to it over their channels.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import structlog

from orchestrator import policy, processes
from orchestrator.channel import ChannelClosed
from orchestrator.config import Settings
from orchestrator.embedded import Endpoints
from orchestrator.loop import Outage, retry
from orchestrator.models import Assignment, ConsumerStats, QueueRecord, WorkerRecord, utcnow
from orchestrator.processes import Child
from orchestrator.signals import SignalQueue
from orchestrator.store import Store

log = structlog.get_logger()

TICK_SECONDS = 0.1  # the loop also wakes at once for consumer events and signals
ASSIGNMENT_POLL_SECONDS = 0.25  # how soon a new assignment is picked up
SETTINGS_POLL_SECONDS = 1.0  # how soon a concurrency or pause change reaches consumers
STATUS_BY_REASON = {
    "drained": "completed",
    "max_time": "completed",
    "paused": "completed",
    "shutdown": "interrupted",
    "released": "interrupted",
    "worker_gone": "interrupted",
    "handler_import": "failed",
}


@dataclass(eq=False)  # identity-hashed: kept in sets and as selector data
class ConsumerSlot:
    """A consumer process and what it is doing for us."""

    child: Child
    usage_limit: int
    uses: int = 0
    job: Assignment | None = None
    pushed: tuple[int, bool] | None = None  # (concurrency, paused) last sent
    handled: int = 0
    failed: int = 0
    exiting: bool = False


class Worker:
    """Runs the consumers of the queues assigned to it."""

    def __init__(self, settings: Settings, store: Store, boot: dict[str, Any]) -> None:
        self.settings = settings
        self.store = store
        self.consumer_boot = boot
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.slots: dict[int, ConsumerSlot] = {}
        self.status = "active"
        self.started_at = utcnow()
        self.next_heartbeat = self.next_poll = self.next_settings = 0.0
        self.spawn_failures = 0
        self.next_spawn_at = 0.0
        self.rng = random.Random()
        structlog.contextvars.bind_contextvars(worker_id=self.id)

    # --- lifecycle -------------------------------------------------------------

    def register(self) -> None:
        now = utcnow()
        self.store.register_worker(
            WorkerRecord(
                id=self.id,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=self.started_at,
                heartbeat_at=now,
                max_load=self.settings.max_load,
                status=self.status,
            )
        )
        log.info("worker.registered", max_load=self.settings.max_load)

    def tick(self, mono: float) -> None:
        """One iteration: reap, heartbeat, reconcile assignments, relay queue settings."""
        self.reap()
        if mono >= self.next_heartbeat:
            self.heartbeat()
            self.next_heartbeat = mono + self.settings.heartbeat_interval
        if mono >= self.next_poll and self.status == "active":
            self.reconcile(mono)
            self.next_poll = mono + min(ASSIGNMENT_POLL_SECONDS, self.settings.master_interval)
        if mono >= self.next_settings:
            self.relay_settings()
            self.next_settings = mono + SETTINGS_POLL_SECONDS

    def heartbeat(self) -> None:
        stats = []
        for slot in self.slots.values():
            rss, cpu = slot.child.stats()
            queue = slot.job.queue_name if slot.job else None
            stats.append(ConsumerStats(slot.child.pid, queue, rss, cpu))
        if not self.store.heartbeat(self.id, utcnow(), stats, self.status):
            # A master declared us dead and took our assignments: whatever our consumers
            # run is now somebody else's. Stop them, then come back as a new worker.
            log.warning("worker.declared_dead", action="stopping consumers and re-registering")
            for slot in self.slots.values():
                if slot.job:
                    self._send(slot, {"op": "stop", "reason": "released"})
            self.register()

    # --- reconciling -------------------------------------------------------------

    def reconcile(self, mono: float) -> None:
        wanted = {a.job_id: a for a in self.store.assignments(self.id)}
        running = {s.job.job_id: s for s in self.slots.values() if s.job}
        for job_id, slot in running.items():
            if job_id not in wanted:  # released by someone else: stop the run
                self._send(slot, {"op": "stop", "reason": "released"})
        new = [a for job_id, a in wanted.items() if job_id not in running]
        if not new:
            return
        queues = self.store.queues_by_id([a.queue_id for a in new])
        for assignment in new:
            queue = queues.get(assignment.queue_id)
            if queue is None:  # deleted while assigned
                self._end_job(assignment, "failed", 0, 0, "queue_deleted", "queue was deleted")
                continue
            free = self._idle_slot() or self._spawn(mono)
            if free is None:
                return  # spawning is backing off; the assignment waits for the next tick
            self._start_job(free, assignment, queue)

    def _idle_slot(self) -> ConsumerSlot | None:
        for slot in self.slots.values():
            if slot.job is None and not slot.exiting:
                return slot
        return None

    def _spawn(self, mono: float) -> ConsumerSlot | None:
        if mono < self.next_spawn_at:
            return None
        child = processes.spawn("consumer", self.consumer_boot, channel=True)
        limit = policy.usage_limit(self.settings.consumer_usage_limit, self.rng.random())
        slot = ConsumerSlot(child, limit)
        self.slots[child.pid] = slot
        log.info("consumer.spawned", consumer_pid=child.pid, usage_limit=limit)
        return slot

    def _start_job(self, slot: ConsumerSlot, assignment: Assignment, queue: QueueRecord) -> None:
        slot.job, slot.uses, slot.handled, slot.failed = assignment, slot.uses + 1, 0, 0
        slot.pushed = (queue.concurrency, queue.paused)
        self._send(
            slot,
            {
                "op": "assign",
                "jobId": assignment.job_id,
                "queueName": queue.name,
                "queueUrl": queue.queue_url,
                "handler": queue.handler,
                "concurrency": queue.concurrency,
                "paused": queue.paused,
                "visibilityTimeout": queue.visibility_timeout,
            },
        )
        log.info("job.assigned_to_consumer", queue=queue.name, job_id=assignment.job_id,
                 consumer_pid=slot.child.pid)  # fmt: skip

    def relay_settings(self) -> None:
        busy = [s for s in self.slots.values() if s.job]
        if not busy:
            return
        queues = self.store.queues_by_id([s.job.queue_id for s in busy if s.job])
        for slot in busy:
            assert slot.job is not None
            queue = queues.get(slot.job.queue_id)
            if queue is None:
                continue
            wanted = (queue.concurrency, queue.paused)
            if wanted != slot.pushed:
                slot.pushed = wanted
                self._send(slot, {"op": "settings", "concurrency": wanted[0], "paused": wanted[1]})
                log.info("queue.settings_changed", queue=queue.name, concurrency=wanted[0],
                         paused=wanted[1])  # fmt: skip

    # --- consumer events ---------------------------------------------------------

    def on_readable(self, slot: ConsumerSlot) -> None:
        assert slot.child.channel is not None
        try:
            events = slot.child.channel.receive()
        except ChannelClosed:
            events = []  # it is exiting; reaping will tell how
        for event in events:
            self._on_event(slot, event)

    def _on_event(self, slot: ConsumerSlot, event: dict[str, Any]) -> None:
        job = slot.job
        if job is None or event.get("jobId") != job.job_id:
            return  # "ready", or news of a job we already closed
        kind = event["event"]
        if kind == "started":
            self.store.job_started(job.job_id, os.getpid(), slot.child.pid, utcnow())
        elif kind == "progress":
            slot.handled, slot.failed = event["handled"], event["failed"]
            self.store.job_progress(job.job_id, slot.handled, slot.failed, utcnow())
        elif kind == "done":
            reason = event["reason"]
            status = STATUS_BY_REASON.get(reason, "failed")
            handled, failed = event["handled"], event["failed"]
            self._end_job(job, status, handled, failed, reason, event.get("error"))
            slot.job = None
            self.spawn_failures = 0 if status == "completed" else self.spawn_failures
            self._maybe_recycle(slot)

    def _end_job(
        self, job: Assignment, status: str, handled: int, failed: int, reason: str,
        error: str | None = None,
    ) -> None:  # fmt: skip
        # Job first, then the assignment: the queue is assignable again only once its
        # job is closed, so a job is never left open without an assignment.
        self.store.job_ended(job.job_id, status, utcnow(), handled=handled, failed=failed,
                             reason=reason, error=error)  # fmt: skip
        self.store.release(job.job_id)
        log_event = log.info if status == "completed" else log.warning
        log_event(f"job.{status}", queue=job.queue_name, job_id=job.job_id, handled=handled,
                  failed=failed, reason=reason, error=error)  # fmt: skip

    def _maybe_recycle(self, slot: ConsumerSlot) -> None:
        rss, _ = slot.child.stats()
        max_rss = self.settings.consumer_max_rss_mb
        if policy.needs_recycling(slot.uses, slot.usage_limit, rss, max_rss):
            log.info("consumer.recycling", consumer_pid=slot.child.pid, uses=slot.uses, rss_mb=rss)
            self._retire(slot)

    def _retire(self, slot: ConsumerSlot) -> None:
        """Ask an idle consumer to exit; its exit is then expected, not a death."""
        slot.exiting = True
        self._send(slot, {"op": "exit"})

    def _send(self, slot: ConsumerSlot, message: dict[str, Any]) -> None:
        assert slot.child.channel is not None
        with contextlib.suppress(ChannelClosed):  # it died; reaping handles its job
            slot.child.channel.send(message)

    # --- reaping -----------------------------------------------------------------

    def reap(self) -> None:
        """Collect dead consumers: fail their jobs with the exit status, free the queue."""
        for pid, slot in list(self.slots.items()):
            status = slot.child.poll()
            if status is None:
                continue
            del self.slots[pid]
            if slot.child.channel:
                self.on_readable(slot)  # a last "done" may still be in the socket
                slot.child.channel.close()
            how = processes.describe_exit(status)
            if slot.job:
                self._end_job(slot.job, "failed", slot.handled, slot.failed, "consumer_died",
                              f"consumer {pid} died: {how}")  # fmt: skip
                self._backoff_spawning()
            if slot.exiting and status == 0:
                log.info("consumer.exited", consumer_pid=pid)
            else:
                log.warning("consumer.died", consumer_pid=pid, exit=how)

    def _backoff_spawning(self) -> None:
        """Replace dead consumers with exponential backoff and jitter (no crash loop)."""
        self.spawn_failures += 1
        delay = min(2 ** (self.spawn_failures - 1), 30) * (0.5 + self.rng.random())
        self.next_spawn_at = time.monotonic() + (delay if self.spawn_failures > 1 else 0)

    # --- shutdown ------------------------------------------------------------------

    def shutdown(
        self, grace: float, selector: selectors.BaseSelector, signals: SignalQueue
    ) -> None:
        """Graceful stop, in order, within `grace` seconds:
        1. stop taking work (status draining: masters assign us nothing more);
        2. ask busy consumers to stop receiving and finish their in-flight handlers;
        3. wait for their reports until the deadline (jobs end as `interrupted`);
        4. TERM whatever runs, reap, KILL after the deadline (their undeleted
           messages simply reappear in SQS);
        5. release what is still assigned, mark those jobs interrupted, deregister.
        """
        deadline = time.monotonic() + grace
        self.status = "draining"
        self.next_poll = float("inf")
        self._quietly(self.heartbeat)
        for slot in self.slots.values():
            if slot.job:
                self._send(slot, {"op": "stop", "reason": "shutdown"})
            else:
                self._retire(slot)
        while time.monotonic() < deadline and any(s.job for s in self.slots.values()):
            for key, _ in selector.select(timeout=0.1):
                if isinstance(key.data, ConsumerSlot):
                    self._quietly(self.on_readable, key.data)
            self._quietly(self.reap)
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in signals.drain()):
                log.warning("worker.stopping_now", reason="second signal")
                deadline = time.monotonic()  # a second signal: no more waiting
        for slot in self.slots.values():
            self._retire(slot)
        remaining = max(deadline - time.monotonic(), 0.5)
        processes.stop_all([s.child for s in self.slots.values()], remaining)
        self._quietly(self.reap)
        self._quietly(self._release_all)
        self._quietly(self.store.delete_worker, self.id)
        log.info("worker.stopped")

    def _release_all(self) -> None:
        gone = self.store.release_worker(self.id)
        self.store.interrupt_jobs([a.job_id for a in gone], utcnow(), "worker stopped")

    def _quietly(self, call: Any, *args: Any) -> None:
        """During shutdown a failing store call must not stop the rest of the sequence."""
        try:
            call(*args)
        except Exception as exc:
            log.error("worker.shutdown_step_failed", step=getattr(call, "__name__", "?"),
                      error=str(exc))  # fmt: skip


def run(settings: Settings, endpoints: Endpoints) -> None:
    """The worker process: register, then tick until SIGTERM/SIGINT or orphaned."""
    signals = SignalQueue((signal.SIGTERM, signal.SIGINT, signal.SIGCHLD))
    original_parent = os.getppid()
    store = Store(endpoints.mongodb_uri, settings.mongodb_name, job_ttl_days=settings.job_ttl_days)
    worker = Worker(settings, store, processes.boot_document(settings, endpoints))
    if not retry(store.ensure_indexes, signals, "MongoDB"):
        return
    if not retry(worker.register, signals, "MongoDB"):
        return
    selector = selectors.DefaultSelector()
    selector.register(signals.read_fd, selectors.EVENT_READ)
    outage = Outage()
    delay = 0.0
    stop = False
    while not stop and processes.parent_alive(original_parent):
        for key, _ in selector.select(timeout=delay):
            if isinstance(key.data, ConsumerSlot):
                _quiet_event(worker, key.data, outage)
        stop = any(s in (signal.SIGTERM, signal.SIGINT) for s in signals.drain())
        try:
            worker.tick(time.monotonic())
            outage.recovered()
            delay = TICK_SECONDS
        except Exception as exc:  # the process boundary: log, back off, carry on
            delay = outage.failed(exc)
        _watch_channels(selector, worker)
    log.info("worker.stopping", grace=settings.shutdown_grace)
    worker.shutdown(settings.shutdown_grace, selector, signals)


def _quiet_event(worker: Worker, slot: ConsumerSlot, outage: Outage) -> None:
    try:
        worker.on_readable(slot)
    except Exception as exc:
        outage.failed(exc)


def _watch_channels(selector: selectors.BaseSelector, worker: Worker) -> None:
    """Keep the selector's channels equal to the live consumers'."""
    watched = {k.data for k in selector.get_map().values() if isinstance(k.data, ConsumerSlot)}
    current = set(worker.slots.values())
    for slot in watched - current:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(slot.child.channel)  # type: ignore[arg-type]
    for slot in current - watched:
        selector.register(slot.child.channel, selectors.EVENT_READ, slot)  # type: ignore[arg-type]
