"""Worker: registers, heartbeats, and runs one consumer process per assignment.

Each tick reconciles: the assignments MongoDB gives this worker are the wanted
state, the consumers running them the actual state. The worker owns every
MongoDB write about its jobs; consumers report to it over their channels.
A job's outcome goes through an outbox (orchestrator/outbox.py).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from orchestrator import policy
from orchestrator.backends.store import DAEMON_TIMEOUT_MS, Store
from orchestrator.config import Endpoints, Settings
from orchestrator.errors import OrchestratorError, ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import Assignment, ConsumerStats, QueueRecord, WorkerRecord, utcnow
from orchestrator.roles import processes
from orchestrator.roles.channel import ChannelClosed
from orchestrator.roles.loop import Outage, retry
from orchestrator.roles.outbox import JobEnd, Outbox
from orchestrator.roles.processes import Child
from orchestrator.roles.signals import HANDLED, STOP, SignalQueue

log = structlog.get_logger()

TICK_SECONDS = 0.1  # the loop also wakes at once for consumer events and signals
ASSIGNMENT_POLL_SECONDS = 0.25  # how soon a new assignment is picked up
SETTINGS_POLL_SECONDS = 1.0  # how soon a concurrency or pause change reaches consumers
STALL_SECONDS = 30.0  # a busy consumer silent this long is stuck: kill it
FENCE_FRACTION = 0.7  # stop our consumers when heartbeats failed this part of WORKER_TIMEOUT
MEMORY_CHECK_SECONDS = 0.5  # how often busy consumers' RSS is checked against the limit


@dataclass(eq=False)  # identity-hashed: kept in sets and as selector data
class ConsumerSlot:
    """A consumer process and what it is doing for us."""

    child: Child
    usage_limit: int
    uses: int = 0
    job: Assignment | None = None
    pushed: dict[str, Any] | None = None  # the live settings last sent
    handled: int = 0
    failed: int = 0
    stop_sent: bool = False
    exiting: bool = False
    kill_reason: str | None = None
    over_memory: bool = False  # stopped for its memory: replace it once its job ends
    last_event: float = field(default_factory=time.monotonic)


class Worker:
    """Runs the consumers of the queues assigned to it."""

    def __init__(self, settings: Settings, store: Store, boot: dict[str, Any]) -> None:
        self.settings = settings
        self.store = store
        self.consumer_boot = boot
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.slots: dict[int, ConsumerSlot] = {}
        self.meter = Meter()  # its consumers' counts and its own, until written
        self.outbox = Outbox(self.meter)
        self.status = "active"
        self.started_at = utcnow()
        self.due: dict[str, float] = {}  # step → monotonic time it runs next
        self.outages: dict[str, Outage] = {}
        self.last_heartbeat = time.monotonic()
        self.fenced = False
        self.store_ok = True  # False from a failed store call until a heartbeat succeeds
        self.spawn_failures = 0
        self.next_spawn_at = 0.0
        self.rng = random.Random()
        structlog.contextvars.bind_contextvars(worker_id=self.id)

    # --- the loop's one iteration -------------------------------------------------

    def register(self) -> None:
        now = utcnow()
        record = WorkerRecord(self.id, socket.gethostname(), os.getpid(), self.started_at, now,
                              self.settings.max_load, self.status)  # fmt: skip
        self.store.register_worker(record)
        self.last_heartbeat = time.monotonic()
        log.info("worker.registered", max_load=self.settings.max_load)

    def tick(self, mono: float) -> None:
        """Reap, write outcomes, heartbeat, reconcile, relay settings, watch for stalls.

        Each step fails alone and is retried on its own schedule, so that a MongoDB
        error in one never starves the heartbeat (a silent worker is declared dead);
        after one store step fails the rest wait for the next tick rather than each
        waiting out its own timeout. Until fenced, the store calls of a tick must end by
        the time this worker must fence itself, whatever they wait for.
        """
        self._fence_if_silent(mono)
        bound = (contextlib.nullcontext() if self.fenced
                 else self.store.deadline(self._fence_at() - mono))  # fmt: skip
        with bound:
            self._steps(mono)
        self._fence_if_silent(mono)
        self._watchdog(mono)
        if mono >= self.due.get("memory", 0.0):
            self.due["memory"] = mono + MEMORY_CHECK_SECONDS
            self._watch_memory()

    def _steps(self, mono: float) -> None:
        self._step("reap", self.reap, mono, 0)
        poll = min(ASSIGNMENT_POLL_SECONDS, self.settings.master_interval)
        steps: list[tuple[str, Callable[[], object], float]] = [
            ("outbox", lambda: self.outbox.flush(self.store), 0),
            ("heartbeat", self.heartbeat, self.settings.heartbeat_interval),
            ("metrics", lambda: self.outbox.flush_metrics(self.store),
             self.settings.heartbeat_interval),
        ]
        if self.status == "active" and not self.fenced:
            steps.append(("reconcile", lambda: self.reconcile(mono), poll))
        steps.append(("settings", self.relay_settings, SETTINGS_POLL_SECONDS))
        for name, call, every in steps:
            if not self._step(name, call, mono, every):
                break

    def _step(self, name: str, call: Callable[[], object], mono: float, every: float) -> bool:
        """Run a step when due; False if it failed."""
        if mono < self.due.get(name, 0.0):
            return True
        outage = self.outages.setdefault(name, Outage())
        try:
            call()
        except Exception as exc:  # logged once per problem (a bug with its traceback); retried
            self.due[name] = mono + min(outage.failed(exc), self.settings.heartbeat_interval)
            if isinstance(exc, ServiceUnavailable):
                self.store_ok = False  # skip optional writes until a heartbeat gets through
            return False
        outage.recovered()
        self.due[name] = mono + every
        return True

    # --- heartbeat and fencing -------------------------------------------------------

    def heartbeat(self) -> None:
        stats = []
        for slot in self.slots.values():
            rss, cpu = slot.child.stats()
            queue = slot.job.queue_name if slot.job else None
            stats.append(ConsumerStats(slot.child.pid, queue, rss, cpu))
        found = self.store.heartbeat(self.id, utcnow(), stats, self.status)
        self.last_heartbeat = time.monotonic()
        self.store_ok = True
        if self.fenced:
            log.info("worker.unfenced")
            self.fenced = False
        if not found:
            # A master declared us dead and took our assignments: whatever our consumers
            # run is now somebody else's. Stop them, then come back as a new worker.
            log.warning("worker.declared_dead", action="stopping consumers, re-registering")
            self._stop_busy("released")
            self.register()

    def _fence_at(self) -> float:
        """When, without another heartbeat, this worker must fence itself."""
        return self.last_heartbeat + self.settings.worker_timeout * FENCE_FRACTION

    def _fence_if_silent(self, mono: float) -> None:
        """Without heartbeats a master will soon give our queues to others: stop first,
        so that two consumers never run one queue."""
        silent = mono - self.last_heartbeat
        if not self.fenced and mono > self._fence_at():
            log.warning("worker.fenced", silent_seconds=round(silent, 1))
            self.fenced = True
            self._stop_busy("fenced")

    def _stop_busy(self, reason: str) -> None:
        for slot in self.slots.values():
            if slot.job and not slot.stop_sent:
                slot.stop_sent = True
                self._send(slot, {"op": "stop", "jobId": slot.job.job_id, "reason": reason})

    # --- reconciling -------------------------------------------------------------------

    def reconcile(self, mono: float) -> None:
        wanted = {a.job_id: a for a in self.store.assignments(self.id)}
        running = {s.job.job_id: s for s in self.slots.values() if s.job}
        for job_id, slot in running.items():
            if job_id not in wanted and not slot.stop_sent:  # released by someone else
                slot.stop_sent = True
                self._send(slot, {"op": "stop", "jobId": job_id, "reason": "released"})
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
                self._close(JobEnd(assignment, "failed", 0, 0, "queue_deleted", "queue deleted"))
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
        slot.stop_sent, slot.last_event = False, time.monotonic()
        slot.pushed = live_settings(queue)
        self._send(slot, {
            "op": "assign",
            "jobId": assignment.job_id,
            "queueName": queue.name,
            "queueUrl": queue.queue_url,
            "handler": queue.handler,
            "visibilityTimeout": queue.visibility_timeout,
            **slot.pushed,
        })  # fmt: skip
        log.info("job.assigned_to_consumer", queue=queue.name, job_id=assignment.job_id,
                 consumer_pid=slot.child.pid)  # fmt: skip

    def relay_settings(self) -> None:
        busy = [s for s in self.slots.values() if s.job and not s.stop_sent]
        if not busy:
            return
        queues = self.store.queues_by_id([s.job.queue_id for s in busy if s.job])
        for slot in busy:
            assert slot.job is not None
            queue = queues.get(slot.job.queue_id)
            wanted = live_settings(queue) if queue else None
            if wanted is None or wanted == slot.pushed:
                continue
            slot.pushed = wanted
            self._send(slot, {"op": "settings", "jobId": slot.job.job_id, **wanted})
            log.info("queue.settings_changed", queue=queue.name if queue else None, **wanted)

    def _watchdog(self, mono: float) -> None:
        """A busy consumer reports at least every second; one silent for STALL_SECONDS is
        stuck (a hanging import, a deadlock): kill it, and reaping fails its job."""
        for slot in self.slots.values():
            if slot.job and not slot.kill_reason and mono - slot.last_event > STALL_SECONDS:
                slot.kill_reason = f"stalled: no report for {STALL_SECONDS:.0f} s"
                log.error(
                    "consumer.stalled", consumer_pid=slot.child.pid, queue=slot.job.queue_name
                )
                slot.child.signal(signal.SIGKILL)

    def _watch_memory(self) -> None:
        """A consumer over CONSUMER_MAX_RSS_MB stops its job and is replaced; at twice the
        limit it cannot be let finish: kill it (its messages reappear in SQS)."""
        limit = self.settings.consumer_max_rss_mb
        for slot in self.slots.values():
            if not slot.job or slot.kill_reason:
                continue
            rss = slot.child.largest_rss()
            action = policy.memory_action(rss, limit)
            if action == "kill":
                slot.kill_reason = (f"{rss:.0f} MB, over {policy.MEMORY_KILL_FACTOR} x "
                                    f"CONSUMER_MAX_RSS_MB ({limit})")  # fmt: skip
                log.error("consumer.over_memory", consumer_pid=slot.child.pid, rss_mb=rss,
                          limit_mb=limit, action="kill", queue=slot.job.queue_name)  # fmt: skip
                slot.child.kill_tree()
            elif action == "stop" and not slot.over_memory:
                slot.over_memory = True
                log.warning("consumer.over_memory", consumer_pid=slot.child.pid, rss_mb=rss,
                            limit_mb=limit, action="stop", queue=slot.job.queue_name)  # fmt: skip
                if not slot.stop_sent:
                    slot.stop_sent = True
                    self._send(slot, {"op": "stop", "jobId": slot.job.job_id, "reason": "memory"})

    # --- consumer events -----------------------------------------------------------------

    def on_readable(self, slot: ConsumerSlot) -> None:
        assert slot.child.channel is not None
        try:
            events = slot.child.channel.receive()
        except ChannelClosed:
            events = []  # it is exiting; reaping will tell how
        for event in events:
            slot.last_event = time.monotonic()
            self._on_event(slot, event)

    def _on_event(self, slot: ConsumerSlot, event: dict[str, Any]) -> None:
        """Record what a consumer reports. Store errors here must not lose the event:
        progress can be skipped, but a job's end goes through the outbox."""
        self.meter.merge(event.get("metrics"))  # real counts, even for a job already closed
        job = slot.job
        if job is None or event.get("jobId") != job.job_id:
            return  # news of a job already closed
        kind = event["event"]
        if kind in ("started", "progress"):
            slot.handled, slot.failed = event.get("handled", 0), event.get("failed", 0)
            if kind == "started":
                self.spawn_failures = 0
            if not self.store_ok:
                return  # skippable: waiting out a timeout here would starve the loop
            try:
                if kind == "started":
                    self.store.job_started(job.job_id, os.getpid(), slot.child.pid, utcnow())
                else:
                    self.store.job_progress(job.job_id, slot.handled, slot.failed, utcnow())
            except ServiceUnavailable:  # the next report repeats it; the steps say more
                self.store_ok = False
            except Exception:  # a bug: keep the traceback; the next report repeats it
                log.exception("worker.progress_write_failed", job_id=job.job_id)
        elif kind == "done":
            slot.job = None
            if event.get("abandoned"):
                slot.exiting = True  # it exits: its stuck handler threads cannot be stopped
            self._close(JobEnd.reported(job, event))
            if not slot.exiting:
                self._maybe_recycle(slot)

    def _close(self, end: JobEnd) -> None:
        # Written at once unless MongoDB is failing: then the "outbox" step retries it.
        self.outbox.add(end, self.store if self.store_ok else None)

    def _maybe_recycle(self, slot: ConsumerSlot) -> None:
        rss, _ = slot.child.stats()
        max_rss = self.settings.consumer_max_rss_mb
        if slot.over_memory or policy.needs_recycling(slot.uses, slot.usage_limit, rss, max_rss):
            log.info("consumer.recycling", consumer_pid=slot.child.pid, uses=slot.uses, rss_mb=rss)
            self.meter.count("consumerRestartsRecycled")
            self._retire(slot)

    def _retire(self, slot: ConsumerSlot) -> None:
        """Ask an idle consumer to exit; its exit is then expected, not a death."""
        slot.exiting = True
        self._send(slot, {"op": "exit"})

    def _send(self, slot: ConsumerSlot, message: dict[str, Any]) -> None:
        assert slot.child.channel is not None
        with contextlib.suppress(ChannelClosed):  # it died; reaping handles its job
            slot.child.channel.send(message)

    # --- reaping ----------------------------------------------------------------------------

    def reap(self) -> None:
        """Collect dead consumers: close their jobs with the exit status, free the queue."""
        for pid, slot in list(self.slots.items()):
            status = slot.child.poll()
            if status is None:
                continue
            if slot.child.channel:
                self.on_readable(slot)  # a last "done" may still be in the socket
                slot.child.channel.close()
            del self.slots[pid]
            how = processes.describe_exit(status)
            if slot.job:
                self._close(self._death_outcome(slot, pid, how))
            if slot.exiting and status == 0:
                log.info("consumer.exited", consumer_pid=pid)
            else:
                log.warning("consumer.died", consumer_pid=pid, exit=how)
                if self.status == "active":
                    self.meter.count("consumerRestartsDied")

    def _death_outcome(self, slot: ConsumerSlot, pid: int, how: str) -> JobEnd:
        assert slot.job is not None
        if self.status == "draining":  # we are stopping: the job was cut short, not broken
            return JobEnd(slot.job, "interrupted", slot.handled, slot.failed, "shutdown",
                          f"consumer {pid} ended during shutdown: {how}")  # fmt: skip
        self._backoff_spawning()
        error = f"consumer {pid} died: {how}" + (
            f" ({slot.kill_reason})" if slot.kill_reason else ""
        )
        return JobEnd(slot.job, "failed", slot.handled, slot.failed, "consumer_died", error)

    def _backoff_spawning(self) -> None:
        """Replace dead consumers with exponential backoff and jitter (no crash loop)."""
        self.spawn_failures += 1
        delay = min(2 ** (self.spawn_failures - 1), 30) * (0.5 + self.rng.random())
        self.next_spawn_at = time.monotonic() + (delay if self.spawn_failures > 1 else 0)

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
        self._quietly(self.heartbeat)
        self._stop_busy("shutdown")
        for slot in self.slots.values():
            if not slot.job:
                self._retire(slot)
        while time.monotonic() < deadline and any(s.job for s in self.slots.values()):
            for key, _ in selector.select(timeout=0.1):
                if isinstance(key.data, ConsumerSlot):
                    self._quietly(self.on_readable, key.data)
            self._quietly(self.reap)
            if any(s in STOP for s in signals.drain()):
                log.warning("worker.stopping_now", reason="second signal")
                deadline = time.monotonic()
        for slot in self.slots.values():
            self._retire(slot)
        processes.stop_all([s.child for s in self.slots.values()],
                           max(deadline - time.monotonic(), 0.5))  # fmt: skip
        self._quietly(self.reap)
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


def live_settings(queue: QueueRecord) -> dict[str, Any]:
    """The queue settings a running consumer follows (relayed when they change)."""
    return {"concurrency": queue.concurrency, "paused": queue.paused,
            "processes": queue.processes, "batchSize": queue.batch_size,
            "batchWindow": queue.batch_window}  # fmt: skip


def run(settings: Settings, endpoints: Endpoints) -> None:
    """The worker process: register, then tick until SIGTERM/SIGINT or orphaned."""
    signals = SignalQueue(HANDLED)
    original_parent = os.getppid()
    store = Store.connect(settings, endpoints.mongodb_uri, timeout_ms=DAEMON_TIMEOUT_MS)
    worker = Worker(settings, store, processes.boot_document(settings, endpoints))
    if not retry(store.ensure_indexes, signals, "MongoDB"):
        return
    if not retry(worker.register, signals, "MongoDB"):
        return
    selector = selectors.DefaultSelector()
    selector.register(signals.read_fd, selectors.EVENT_READ)
    while processes.parent_alive(original_parent):
        for key, _ in selector.select(timeout=TICK_SECONDS):
            if isinstance(key.data, ConsumerSlot):
                worker.on_readable(key.data)
        if any(s in STOP for s in signals.drain()):
            break
        worker.tick(time.monotonic())
        _watch_channels(selector, worker)
    log.info("worker.stopping", grace=settings.shutdown_grace)
    worker.shutdown(settings.shutdown_grace, selector, signals)


def _watch_channels(selector: selectors.BaseSelector, worker: Worker) -> None:
    """Keep the selector's channels equal to the live consumers'."""
    watched = {k.data for k in selector.get_map().values() if isinstance(k.data, ConsumerSlot)}
    current = set(worker.slots.values())
    for slot in watched - current:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(slot.child.channel)  # type: ignore[arg-type]
    for slot in current - watched:
        selector.register(slot.child.channel, selectors.EVENT_READ, slot)  # type: ignore[arg-type]
