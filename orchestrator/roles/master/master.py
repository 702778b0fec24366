"""Master: holds the leader lease and assigns queues with messages to live workers.

One tick: renew the lease → reap dead workers → check the depth of due queues →
assign the non-empty ones → recreate in SQS the queues it lacks (DB → SQS sync, a
queue at a time as checks find them missing: a listing of every queue at 100,000
queues would take longer than a lease). Only the lease holder assigns; the unique
`{queueUrl, shard}` index on assignments makes a double assignment impossible even if
two masters ever overlap.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from orchestrator.backends.protocols import MasterSqs, MasterStore
from orchestrator.backends.queues import create_in_sqs
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import DAEMON_TIMEOUT_MS, Store
from orchestrator.config import Endpoints, Settings
from orchestrator.errors import OrchestratorError, ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import WorkerRecord, utcnow
from orchestrator.roles.master.liveness import Watch
from orchestrator.roles.master.placement import Placement
from orchestrator.roles.process import processes
from orchestrator.roles.process.loop import Outage, retry, wait
from orchestrator.roles.process.signals import STOP, SignalQueue
from orchestrator.roles.process.status import Note, Reporter

log = structlog.get_logger()

# The master's SQS calls give up soon: a check that waits is only a check that is late.
SQS_CALL = {"connect_timeout": 2, "read_timeout": 5, "attempts": 2}
LEASE_SAFETY = 0.8  # stop assigning when 80 % of the lease has passed without a renewal
SWEEP_SECONDS = 10.0  # how often to look for open jobs nobody will close
STALLED_SECONDS = 60.0  # /health says "stalled" when no cycle finished for this long
METRICS_FLUSH_SECONDS = 2.0  # how often this process's counts are added to MongoDB's


class Master:
    """Assigns queues to workers while it holds the lease."""

    def __init__(
        self, settings: Settings, store: MasterStore, sqs: MasterSqs, meter: Meter | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.sqs = sqs
        self.meter = meter or Meter()
        self.last_cycle = time.monotonic()  # when the loop last finished a tick
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.leading = False
        self.lease_valid_until: datetime | None = None
        self.next_renewal: datetime | None = None
        self.placement = Placement(settings, store, sqs, self.meter)
        self.next_sweep: datetime | None = None
        # Since when this master has seen MongoDB without errors: workers are judged only
        # on a window it could watch (after an outage their heartbeats failed too).
        self.healthy_since: datetime | None = None
        # When we last saw each heartbeat and the lease change, on our own clock: hosts'
        # clocks need not agree (liveness.py).
        self.hearts = Watch()
        self.lease_watch = Watch()
        structlog.contextvars.bind_contextvars(master_id=self.id)

    def tick(self, now: datetime) -> None:
        if self.healthy_since is None:
            self.healthy_since = now
        leading = self._lead(now)
        workers = self._observe_workers(now)  # standbys too: a new leader knows who lives
        if not leading:
            return
        live = self._reap_dead_workers(now, workers)
        self._sweep_orphans(now)
        self._assign(now, live)
        self._resync(now)

    # --- leadership ------------------------------------------------------------

    def _lead(self, now: datetime) -> bool:
        """Renew the lease every LEASE_TTL/3; lead only while a renewal is recent enough."""
        ttl = self.settings.lease_ttl
        renewal_failed: OrchestratorError | None = None
        if self.next_renewal is None or now >= self.next_renewal:
            # The holder renews every LEASE_TTL/3; a standby asks every cycle, so that it
            # takes over within a cycle of the lease running out.
            every = ttl / 3 if self.leading else min(ttl / 3, self.settings.master_interval)
            self.next_renewal = now + timedelta(seconds=every)
            try:
                held = self._hold_lease(now, ttl)
            except OrchestratorError as exc:
                held = self.leading  # keep leading until the lease may have expired
                renewal_failed = exc
            else:
                if held:
                    self.lease_valid_until = now + timedelta(seconds=ttl * LEASE_SAFETY)
            if held != self.leading:
                log.info("master.leading" if held else "master.standby")
            self.leading = held
        if self.leading and self.lease_valid_until and now >= self.lease_valid_until:
            log.warning("master.lease_lost", reason="no renewal before the lease ran out")
            self.leading = False
        if renewal_failed is not None:
            # The cycle failed: the loop logs the outage once and backs off, and only a
            # cycle that works says MongoDB is back.
            raise renewal_failed
        return self.leading

    def _hold_lease(self, now: datetime, ttl: float) -> bool:
        """Renew our lease, or take one whose holder stopped renewing it: we judge that by
        how long we saw it unchanged, on our clock, never by the time written in it."""
        expires = now + timedelta(seconds=ttl)  # for people reading it; nobody compares it
        if self.store.renew_lease(self.id, expires):
            return True
        lease = self.store.lease()
        if lease is None:
            return self.store.create_lease(self.id, expires)
        self.lease_watch.observe("master", (lease.holder, lease.version), now)
        if self.lease_watch.silent("master", now) < ttl:
            return False  # renewed within a TTL: its holder lives
        return self.store.take_lease(self.id, lease.holder, lease.version, expires)

    def health(self, store: MasterStore) -> dict[str, Any]:
        """For GET /health (from an API thread): is the loop turning, does this master
        lead (only while its lease is valid), can MongoDB be reached, and did its last
        SQS calls work (None while it stands by: it makes none)."""
        try:
            store.ping()
            mongodb = True
        except OrchestratorError:
            mongodb = False
        except Exception:  # a bug: /health still answers (503), and the traceback is kept
            log.exception("master.health_check_failed")
            mongodb = False
        age = time.monotonic() - self.last_cycle
        valid = self.lease_valid_until is not None and utcnow() < self.lease_valid_until
        return {
            # Outages space cycles out to the backoff cap; a longer gap means a wedged loop.
            "status": "ok" if age < max(STALLED_SECONDS, 10 * self.settings.master_interval)
            else "stalled",
            "leader": self.leading and valid,
            "masterId": self.id,
            "mongodb": mongodb,
            "sqs": (self.placement.sqs_outage.failures == 0) if self.leading else None,
            "lastCycleSecondsAgo": round(age, 1),
        }  # fmt: skip

    def resign(self) -> None:
        """Give the lease up at once so that a standby need not wait for it to expire."""
        if self.leading:
            self.store.drop_lease(self.id)
            self.leading = False
            log.info("master.resigned")

    # --- dead workers ------------------------------------------------------------

    def outage(self) -> None:
        """A tick failed: MongoDB or SQS could not be reached."""
        self.healthy_since = None

    def _observe_workers(self, now: datetime) -> list[WorkerRecord]:
        """Note, on our clock, whose heartbeat changed since the last look."""
        workers = self.store.workers()
        for worker in workers:
            self.hearts.observe(worker.id, worker.heartbeat_at, now)
        self.hearts.keep_only(w.id for w in workers)
        return workers

    def _alive(self, worker: WorkerRecord, now: datetime) -> bool:
        """Known to be alive: its heartbeat changed while we watched, within WORKER_TIMEOUT
        (a worker a killed daemon left behind is seen, but never seen to beat)."""
        return (self.hearts.seen[worker.id].changed
                and self.hearts.silent(worker.id, now) <= self.settings.worker_timeout)  # fmt: skip

    def _reap_dead_workers(self, now: datetime, workers: list[WorkerRecord]) -> list[WorkerRecord]:
        """Forget workers whose heartbeat we saw unchanged for WORKER_TIMEOUT; free their
        queues. Returns the others."""
        timeout = self.settings.worker_timeout
        watched = (now - self.healthy_since).total_seconds() if self.healthy_since else 0.0
        watched_long_enough = watched >= timeout
        live = []
        for worker in workers:
            if self.hearts.silent(worker.id, now) <= timeout or not watched_long_enough:
                live.append(worker)
                continue
            # The worker document last: a crash part-way leaves it for the next cycle.
            reason = f"worker {worker.id} stopped heartbeating"
            gone = self.store.release_worker(worker.id, now, reason)
            self.store.delete_worker(worker.id)
            log.warning("worker.dead", dead_worker=worker.id, released=[a.queue_name for a in gone])
        return live

    def _sweep_orphans(self, now: datetime) -> None:
        """Close open jobs that lost their assignment (a crash between two writes)."""
        if self.next_sweep and now < self.next_sweep:
            return
        self.next_sweep = now + timedelta(seconds=SWEEP_SECONDS)
        stale = now - timedelta(seconds=2 * self.settings.worker_timeout)
        orphans = self.store.orphaned_jobs(stale)
        if orphans:
            self.store.interrupt_jobs(orphans, now, "orphaned: no assignment refers to it")
            log.warning("jobs.orphans_closed", job_ids=orphans)

    # --- assignment ----------------------------------------------------------------

    def _assign(self, now: datetime, live: list[WorkerRecord]) -> None:
        # Only workers known to be alive: one that has not been watched for long enough
        # to be judged dead (a fresh master) is not reaped yet, but gets nothing either.
        self.placement.run(now, [w for w in live if w.status == "active" and self._alive(w, now)])

    def _resync(self, now: datetime) -> None:
        """Recreate in SQS the queues it has lacked for a while, if MongoDB still has them.
        A `queue delete` removes the SQS queue first and the document a moment later: the
        document is read again here, so a queue being deleted is never brought back."""
        for queue in self.placement.missing(now):
            assert queue.id is not None
            current = self.store.queues_by_id([queue.id]).get(queue.id)
            if current is None or current.queue_url != queue.queue_url:
                self.placement.resynced(queue, found=current is not None)
                continue
            try:
                fresh = create_in_sqs(self.sqs.of(current), current)
            except ServiceUnavailable as exc:
                self.placement.sqs_outage.failed(exc)
                return
            self.store.mark_synced(queue.id, fresh.queue_url, fresh.dlq_url)
            self.placement.resynced(queue, found=True)
            log.info("queue.synced_to_sqs", queue=queue.name)


class Beside(Protocol):
    """What a master process runs beside its loop (the HTTP API: orchestrator/http)."""

    def start(self) -> None: ...

    def cycle(self, seconds: float, leading: bool) -> None: ...

    def stop(self) -> None: ...


def run(
    settings: Settings, endpoints: Endpoints, beside: Callable[[Master], Beside] | None = None,
    reporter: Reporter | None = None,
) -> None:
    """The master process: tick every MASTER_INTERVAL until SIGTERM/SIGINT or orphaned,
    with `beside` (the HTTP API, started by the process entry) served meanwhile."""
    signals = SignalQueue(STOP)
    original_parent = os.getppid()
    meter = Meter()
    store = Store.connect(settings, endpoints.mongodb_uri, timeout_ms=DAEMON_TIMEOUT_MS)
    sqs = Sqs.connect(settings, endpoints.sqs_endpoint, meter, caller="daemon", **SQS_CALL)
    master = Master(settings, store, sqs, meter)
    extra = beside(master) if beside else None
    if extra:
        extra.start()  # before MongoDB answers: /health must tell that it does not
    try:
        if retry(store.ensure_indexes, signals, "MongoDB"):  # SchemaTooNew: raised
            log.info("master.started")
            _loop(master, extra, signals, original_parent, reporter or Reporter(None))
    finally:
        # Shutdown: stop serving, then give the lease up so that a standby takes over
        # without waiting for it to expire; last, write what was counted.
        if extra:
            extra.stop()
        with contextlib.suppress(OrchestratorError):
            master.resign()
        with contextlib.suppress(OrchestratorError):
            store.flush_meter(meter)
        log.info("master.stopped")


def _loop(master: Master, beside: Beside | None, signals: SignalQueue, parent: int,
          reporter: Reporter) -> None:  # fmt: skip
    outage = Outage()
    next_flush = 0.0
    while processes.parent_alive(parent):
        started = time.monotonic()
        try:
            master.tick(utcnow())
            outage.recovered()
            reporter.note(Note.CYCLE)
            delay = master.settings.master_interval
        except Exception as exc:  # the process boundary: log, back off, carry on
            master.outage()
            delay = outage.failed(exc)
        master.last_cycle = time.monotonic()
        if beside:
            beside.cycle(master.last_cycle - started, master.leading)
        if started >= next_flush:
            next_flush = started + METRICS_FLUSH_SECONDS
            with contextlib.suppress(OrchestratorError):  # kept for the next flush
                master.store.flush_meter(master.meter)
        if wait(signals, delay):
            break
