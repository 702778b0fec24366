"""Fleet: the state the API, the dashboard and /metrics show, read live from the store
and SQS, and the few changes they may make (through QueueAdmin, as the CLI does)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from orchestrator.backends.queues import DlqLook, QueueAdmin, QueueView
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.errors import QueueNotFound
from orchestrator.handlers import import_warning
from orchestrator.metrics import QueueCounts, Totals
from orchestrator.models import Assignment, FleetNeed, JobRecord, QueueDepth, QueueRecord, utcnow

DEPTH_TTL_SECONDS = 2.0  # DLQ depths are reused this long: viewers and scrapers share them
SERIES_MINUTES = 60  # the charts' hour
MAX_SERIES_NAMES = 200  # queues and workers one /api/series asks for at most
QUEUE_PAGE = 1000  # queues per page of /api/queues, unless ?limit= says otherwise
MAX_QUEUE_PAGE = 10_000
DEPTH_THREADS = 8  # one GetQueueAttributes per queue and DLQ, in parallel


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    """The sum of the values known; None when none is."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _depth(found: tuple[QueueDepth, datetime] | None) -> QueueDepth | None:
    return found[0] if found else None


class DepthCache:
    """Queue depths from SQS, fetched in parallel and kept for DEPTH_TTL_SECONDS.

    One refresh at a time: callers who arrive meanwhile wait and then find fresh
    depths, so slow SQS answers never pile up requests, whatever the viewers."""

    def __init__(self, ttl: float = DEPTH_TTL_SECONDS) -> None:
        self.ttl = ttl
        self.pool = ThreadPoolExecutor(DEPTH_THREADS, thread_name_prefix="api-depth")
        self.refresh = threading.Lock()
        self.cache: dict[str, tuple[float, QueueDepth | None]] = {}

    def get(self, urls: Iterable[tuple[str, Sqs]]) -> dict[str, QueueDepth | None]:
        """The depths of these queues, each asked of its own client (region, role)."""
        clients = dict(urls)
        wanted = set(clients)
        with self.refresh:
            now = time.monotonic()
            fresh = {u: e[1] for u in wanted if (e := self.cache.get(u)) and now - e[0] < self.ttl}
            stale = sorted(wanted - fresh.keys())
            found = self.pool.map(self._fetch, stale, [clients[u] for u in stale])
            for url, depth in zip(stale, found, strict=True):
                fresh[url] = depth
                self.cache[url] = (now, depth)
            # Forget what nobody asked about for a while (deleted queues).
            self.cache = {u: e for u, e in self.cache.items() if now - e[0] < 10 * self.ttl}
        return fresh

    @staticmethod
    def _fetch(url: str, sqs: Sqs) -> QueueDepth | None:
        try:
            return sqs.depth(url)
        except QueueNotFound:
            return None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Fleet:
    """Reads and changes for the HTTP API; each call is one consistent-enough snapshot."""

    def __init__(self, settings: Settings, store: Store, sqs: Sqs) -> None:
        self.settings = settings
        self.store = store
        self.sqs = sqs
        self.admin = QueueAdmin(settings, lambda: store, lambda: sqs)
        self.depths = DepthCache()

    def close(self) -> None:
        self.depths.close()

    def _dlq_depths(self, queues: list[QueueRecord]) -> dict[str, QueueDepth | None]:
        """The DLQs' depths, each asked in its queue's region, as its role."""
        return self.depths.get((q.dlq_url, self.sqs.of(q)) for q in queues if q.dlq_url)

    # --- queues -------------------------------------------------------------------

    def queues(self, limit: int = QUEUE_PAGE, after: str | None = None) -> list[dict[str, Any]]:
        """A page of queues by name: up to `limit` after the name `after`."""
        return self._queue_views(self.store.queue_page(after, limit))

    def queue(self, name: str) -> dict[str, Any]:
        return self._queue_views([self.store.get_queue(name)])[0]

    def need(self) -> dict[str, Any]:
        """What the fleet needs, as the leading master last wrote it (GET /api/fleet)."""
        found = self.store.fleet_need()
        if found is None:  # no leader has finished a cycle yet: one worker to start with
            return {**FleetNeed(0, 0, 0, 1).to_json(), "updatedAt": None,
                    "largestWaitSeconds": 0.0}  # fmt: skip
        need, at = found
        return {**need.to_json(), "updatedAt": at.isoformat(),
                "largestWaitSeconds": self.largest_wait()}  # fmt: skip

    def largest_wait(self) -> float:
        """The longest any queue's visible messages have waited for a consumer, s (§10)."""
        served = {a.queue_url for a in self.store.assignments()}
        now = utcnow()
        waits = [_wait_seconds(since, url in served, now)
                 for url, since in self.store.waiting_since().items()]
        return round(max(waits, default=0.0), 3)

    def update_queue(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        self.admin.update(name, **changes)
        handler = changes.get("handler")
        warning = import_warning(handler, self.settings) if handler else None
        return {**self.queue(name), "warnings": [warning] if warning else []}

    def redrive(self, name: str, ids: list[str] | None = None) -> dict[str, Any]:
        done = self.admin.redrive(name, ids)  # one DLQ operation at a time, fleet-wide
        return {"name": name, "moved": done.count, "notFound": done.not_found}

    def dlq_purge(self, name: str, ids: list[str] | None = None,
                  yes_really: bool = False) -> dict[str, Any]:  # fmt: skip
        done = self.admin.dlq_purge(name, ids, yes_really)
        return {"name": name, "deleted": done.count, "notFound": done.not_found}

    def dlq(self, name: str, limit: int) -> DlqLook:
        return self.admin.dlq(name, limit)

    def _queue_views(self, queues: list[QueueRecord]) -> list[dict[str, Any]]:
        shards, jobs = self._running()
        assigned = {url: min(held, key=lambda a: a.shard) for url, held in shards.items()}
        waits = self.store.waiting_since(q.queue_url for q in queues)
        now = utcnow()
        totals = self.store.metric_totals(q.name for q in queues).queues
        checked = self.store.depths(q.queue_url for q in queues)  # the master's checks
        dlqs = self._dlq_depths(queues)
        views = []
        for q in queues:
            a = assigned.get(q.queue_url)
            depth, depth_at = checked.get(q.queue_url) or (None, None)
            dlq = dlqs.get(q.dlq_url) if q.dlq_url else None
            counts = totals.get(q.name, QueueCounts())
            running = _jobs_of(q, shards, jobs)
            views.append({
                **QueueView(q, depth, a.worker if a else None).to_json(),
                "delayed": depth.delayed if depth else None,
                "jobId": a.job_id if a else None,
                "dlqName": q.dlq_name,
                "dlqUrl": q.dlq_url,
                "dlqVisible": dlq.visible if dlq else None,
                "maxReceiveCount": q.max_receive_count,
                "visibilityTimeout": q.visibility_timeout,
                "processes": q.processes,
                "batchSize": q.batch_size,
                "batchWindow": q.batch_window,
                "handled": counts.handled,
                "failed": counts.failed,
                "rateLimit": q.rate_limit,
                "priority": q.priority,
                "adaptive": q.adaptive,
                "maxShards": q.max_shards,
                "failureBodies": q.failure_bodies,
                "shards": len(shards.get(q.queue_url, ())),
                "effectiveConcurrency": _sum_or_none(j.effective_concurrency for j in running),
                **_backlog_age(q, waits, running, now),
                "depthChangedAt": depth_at.isoformat() if depth_at else None,
                "missing": depth.missing if depth else None,
            })  # fmt: skip
        return views

    # --- charts -------------------------------------------------------------------------

    def series(self, queues: list[str], workers: list[str]) -> dict[str, Any]:
        """The last hour, minute by minute: each queue's messages handled and failed and its
        depth (the last one known carried forward), each worker's load."""
        now = utcnow()
        minutes = [now.replace(second=0, microsecond=0) - timedelta(minutes=m)
                   for m in range(SERIES_MINUTES - 1, -1, -1)]  # fmt: skip
        index = {m: i for i, m in enumerate(minutes)}

        def line(docs: list[dict[str, Any]], field: str, carry: bool) -> list[Any]:
            values: list[Any] = [None if carry else 0] * len(minutes)
            for doc in docs:
                i = index.get(doc["minute"].replace(tzinfo=now.tzinfo))
                if i is not None and doc.get(field) is not None:
                    values[i] = doc[field]
            if carry:  # a depth stands until it changes
                for i in range(1, len(values)):
                    if values[i] is None:
                        values[i] = values[i - 1]
            return values

        q_docs = self.store.series("queue", queues, now, SERIES_MINUTES) if queues else {}
        w_docs = self.store.series("worker", workers, now, SERIES_MINUTES) if workers else {}
        return {
            "minutes": [m.isoformat() for m in minutes],
            "queues": {q: {"handled": line(q_docs.get(q, []), "handled", False),
                           "failed": line(q_docs.get(q, []), "failed", False),
                           "depth": line(q_docs.get(q, []), "depth", True)} for q in queues},
            "workers": {w: {"load": line(w_docs.get(w, []), "load", True)} for w in workers},
        }  # fmt: skip

    # --- workers and jobs ------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        loads = self.store.worker_loads()
        now = utcnow()
        late, gone = 2 * self.settings.heartbeat_interval, self.settings.worker_timeout
        out = []
        for w in self.store.workers():
            doc = w.to_json(loads[w.id], now)
            age = doc["heartbeatAgeSeconds"]
            out.append({**doc, "late": age > late, "gone": age > gone})
        return out

    def live_workers(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self.settings.worker_timeout)
        return sum(1 for w in self.store.workers() if w.heartbeat_at >= cutoff)

    def jobs(self, status: str | None, queue: str | None, limit: int) -> list[dict[str, Any]]:
        return [j.to_json() for j in self.store.jobs(status, queue, limit)]

    def job(self, job_id: str) -> dict[str, Any] | None:
        job = self.store.job(job_id)
        return job.to_json() if job else None

    # --- metrics ----------------------------------------------------------------------

    def totals(self) -> Totals:
        return self.store.metric_totals()

    def assignment_count(self) -> int:
        return len(self.store.assignments())

    def queue_depths(self) -> list[tuple[QueueRecord, QueueDepth | None, QueueDepth | None]]:
        """Every queue with its depth (the master's last check) and its DLQ's (from SQS)."""
        queues = self.store.list_queues()
        checked = self.store.depths()
        dlqs = self._dlq_depths(queues)
        return [(q, _depth(checked.get(q.queue_url)), dlqs.get(q.dlq_url) if q.dlq_url else None)
                for q in queues]  # fmt: skip

    def backlog_ages(self) -> list[tuple[str, float, float | None]]:
        """(queue, wait seconds, oldest age seconds) of every queue, for /metrics (§10)."""
        queues = self.store.list_queues()
        shards, jobs = self._running()
        waits, now = self.store.waiting_since(), utcnow()
        out = []
        for q in queues:
            age = _backlog_age(q, waits, _jobs_of(q, shards, jobs), now)
            out.append((q.name, age["waitSeconds"], age["oldestAgeSeconds"]))
        return out

    def _running(self) -> tuple[dict[str, list[Assignment]], dict[str, JobRecord]]:
        """The assignments by queue URL (a sharded queue has several), and their jobs."""
        shards: dict[str, list[Assignment]] = {}
        for held in self.store.assignments():
            shards.setdefault(held.queue_url, []).append(held)
        return shards, self.store.jobs_by_id(a.job_id for held in shards.values() for a in held)

    def effective(self) -> dict[str, int]:
        """Queue name → the concurrency its running consumers run at (their sum)."""
        held = self.store.assignments()
        found = self.store.effective_concurrency(a.job_id for a in held)
        out: dict[str, int] = {}
        for a in held:
            if a.job_id in found:
                out[a.queue_name] = out.get(a.queue_name, 0) + found[a.job_id]
        return out


def _jobs_of(queue: QueueRecord, shards: dict[str, list[Assignment]],
             jobs: dict[str, JobRecord]) -> list[JobRecord]:  # fmt: skip
    """The running jobs of a queue (one per shard)."""
    return [jobs[a.job_id] for a in shards.get(queue.queue_url, ()) if a.job_id in jobs]


def _backlog_age(queue: QueueRecord, waits: dict[str, datetime], running: list[JobRecord],
                 now: datetime) -> dict[str, Any]:  # fmt: skip
    """How long its visible messages have waited for a consumer (0 while one runs it),
    and how late its consumers' oldest arrival of their last report was (None: none
    runs it): docs/design.md §10, backlog age."""
    wait = _wait_seconds(waits.get(queue.queue_url), bool(running), now)
    ages = [j.oldest_age_seconds for j in running if j.oldest_age_seconds is not None]
    return {"waitSeconds": round(wait, 3),
            "oldestAgeSeconds": max(ages) if ages else (0.0 if running else None)}


def _wait_seconds(since: datetime | None, served: bool, now: datetime) -> float:
    """How long a queue's messages have waited for a consumer: 0 once one serves it, and
    never below 0 (the master's clock may run ahead of this one)."""
    if served or since is None:
        return 0.0
    return max(0.0, (now - since).total_seconds())
