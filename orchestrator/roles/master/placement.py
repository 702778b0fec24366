"""Placement: the leading master's decisions of who runs what, once a cycle.

- Depth checks of the queues that could be assigned, on threads, within a part of
  MASTER_INTERVAL (a slow SQS never holds the cycle, nor the lease, up).
- Queues with messages go to the least-loaded live workers, highest priority first
  and, within a priority, longest unserved first.
- Preemption: a queue that waited PREEMPT_AFTER for capacity asks the assignment of
  the lowest lower priority to give way (at most once per ASSIGNMENT_MAX_SECONDS/4 for
  any one queue).
- Shards: a queue whose backlog its shards do not drain gets another shard on another
  worker, up to maxShards; its concurrency and rate limit are split across the shards,
  and a new or larger share is granted only once the others run within theirs, so that
  the fleet never runs more than the queue's concurrency.
Every decision about one queue is a transition of its QueueSchedule (policy.py).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from orchestrator import policy
from orchestrator.backends.protocols import MasterSqs, MasterStore
from orchestrator.config import Settings
from orchestrator.errors import QueueNotFound, RoleUnavailable, ServiceUnavailable
from orchestrator.metrics import Meter
from orchestrator.models import (
    Assignment,
    FleetNeed,
    JobRecord,
    QueueDepth,
    QueueRecord,
    Share,
    WorkerRecord,
)
from orchestrator.roles.master.queuecache import QueueCache
from orchestrator.roles.process.loop import Outage
from orchestrator.validate import MAX_PRIORITY

log = structlog.get_logger()

# Depth checks under way at most, most overdue first: about what the threads do in a
# cycle (~200 a second on LocalStack), so that a check runs soon after it was chosen.
CHECKS_IN_FLIGHT = 256
CHECK_THREADS = 16  # depth checks run in parallel: each is one SQS round trip
CHECK_BUDGET = 0.5  # of MASTER_INTERVAL, from the cycle's start: its depth checks' wait
SCAN_BUDGET = 0.25  # of MASTER_INTERVAL: the wait for a scan's pages, until every queue is known
RESYNC_AFTER = 5.0  # a queue missing in SQS this long is recreated (a delete takes less)
RESYNCS_PER_CYCLE = 10
SHOWN_DEPTH_SECONDS = 5.0  # a running queue's depth, for the API (720 requests an hour)
SHARE_SETTLE_SECONDS = 3.0  # a lowered share reaches a consumer (≤ 1 s) and is reported (1 s)
NEED_REFRESH_SECONDS = 10.0  # the fleet's need is rewritten at least this often
UNSEEN = policy.QueueSchedule()  # a queue's until its first check (one for all: immutable)


@dataclass
class _Cycle:
    """What one cycle knows: the queues, who runs what, and the workers' free room."""

    queues: dict[str, QueueRecord]  # by URL
    shards: dict[str, list[Assignment]]  # by URL, in shard order
    workers: dict[str, WorkerRecord]
    loads: Counter[str]

    def pick(self, exclude: Iterable[str] = ()) -> str | None:
        skip = set(exclude)
        return policy.pick_worker([
            policy.WorkerLoad(w.id, self.loads[w.id], w.max_load, w.heartbeat_at)
            for w in self.workers.values() if w.id not in skip
        ])  # fmt: skip


class Placement:
    """Assigns, preempts and shards queues; remembers one QueueSchedule per queue."""

    def __init__(self, settings: Settings, store: MasterStore, sqs: MasterSqs, meter: Meter):
        self.settings, self.store, self.sqs, self.meter = settings, store, sqs, meter
        self.schedules: dict[str, policy.QueueSchedule] = {}  # by queue URL
        self.pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="depth")
        self.checking: dict[str, Future[QueueDepth]] = {}  # depth checks under way
        self.sqs_outage = Outage()  # depth checks: one log line per problem
        self.cache = QueueCache(store)
        self.saved: dict[str, QueueDepth] = {}  # depths written to MongoDB, by URL
        self.saved_waits: dict[str, datetime | None] = {}  # waitingSince written, by URL
        self.known: dict[str, QueueRecord] = {}  # the last cycle's queues, by URL
        self.lost: dict[str, datetime] = {}  # URL → since when SQS has lacked the queue
        self.charted: tuple[datetime, dict[str, int]] | None = None  # the last load point
        self.need: tuple[FleetNeed, datetime] | None = None  # the last saved, and when

    def schedule(self, url: str) -> policy.QueueSchedule:
        return self.schedules.get(url, UNSEEN)

    def run(self, now: datetime, workers: list[WorkerRecord]) -> None:
        """One cycle's placement over the live, active workers it was given."""
        started = time.monotonic()  # the budgets are of real time: they bound I/O waits
        cycle = self._survey(now, workers)
        capacity = sum(max(w.max_load - cycle.loads[w.id], 0) for w in cycle.workers.values())
        due = self._due(now, cycle, room=capacity > 0)
        # With no room (no live worker, or all full) only queues that could preempt a
        # running one may be placed; the others are watched, so that their backlog shows.
        lowest = min((cycle.queues[u].priority for u in cycle.shards if u in cycle.queues),
                     default=MAX_PRIORITY + 1)  # fmt: skip
        unassigned = due if capacity > 0 else [q for q in due if q.priority > lowest]
        watched = [] if capacity > 0 else [q for q in due if q.priority <= lowest]
        growing = [cycle.queues[u] for u in cycle.shards if self._may_grow(cycle, u)]
        shown = [cycle.queues[u] for u in cycle.shards if u in cycle.queues
                 and self._show_due(now, u) and cycle.queues[u] not in growing]  # fmt: skip
        # The checks wait out what is left of their budget (a tenth of it at least: with
        # 100,000 queues the survey alone takes most of it; the checks go on meanwhile).
        budget = CHECK_BUDGET * self.settings.master_interval
        wait = max(budget - (time.monotonic() - started), budget / 10)
        depths = self._check_depths(now, unassigned + growing + shown + watched, wait)
        self._record(now, depths)
        for queues, transition in ((unassigned, policy.checked), (watched, policy.watched)):
            for queue in queues:
                if (depth := depths.get(queue.queue_url)) is not None:
                    self.schedules[queue.queue_url] = transition(
                        self.schedule(queue.queue_url), now, depth.visible > 0,
                        self.settings.idle_check_max)  # fmt: skip
        found = sorted((q for q in unassigned if _has(depths, q)), key=lambda q: (
            -q.priority, self.schedule(q.queue_url).fairness_key(), q.name))
        waiting = self._assign(now, cycle, found)
        self._preempt(now, cycle, waiting)
        self._grow(now, cycle, growing, depths)
        self._reshare(now, cycle)
        self._chart_loads(now, cycle)
        self._save_need(now, cycle)
        self._save_waits(cycle)

    # --- what there is ----------------------------------------------------------------

    def _show_due(self, now: datetime, url: str) -> bool:
        """A running queue's depth is checked every SHOWN_DEPTH_SECONDS, for the API."""
        shown = self.schedule(url).shown_at
        return shown is None or (now - shown).total_seconds() >= SHOWN_DEPTH_SECONDS

    def _record(self, now: datetime, depths: dict[str, QueueDepth]) -> None:
        """Keep the depths the checks found changed, for the API and /metrics (one write a
        cycle; an idle queue's unchanged depth costs nothing)."""
        changed = {}
        for url, depth in depths.items():
            self.schedules[url] = replace(self.schedule(url), shown_at=now)
            if self.saved.get(url) != depth:
                changed[url] = (depth, now)
        try:
            self.store.save_depths(changed)
            by_name = {self.known[url].name: d.visible for url, (d, _) in changed.items()
                       if url in self.known}  # fmt: skip
            self.store.add_series(now, depths=by_name)
        except ServiceUnavailable as exc:  # only a display: written with the next change
            log.warning("depths.not_saved", error=str(exc))
            return
        self.saved.update({url: depth for url, (depth, _) in changed.items()})

    def _save_waits(self, cycle: _Cycle) -> None:
        """Write since when each queue's messages wait for a consumer where that changed
        (§10: orchestrator_queue_wait_seconds; only a display: retried next cycle)."""
        waits = {url: self.schedule(url).waiting_since for url in cycle.queues}
        changed = {url: at for url, at in waits.items() if self.saved_waits.get(url) != at}
        try:
            self.store.save_waiting(changed)
        except ServiceUnavailable as exc:
            log.warning("waits.not_saved", error=str(exc))
            return
        self.saved_waits.update(changed)

    def _save_need(self, now: datetime, cycle: _Cycle) -> None:
        """What the fleet needs, for autoscalers: the assignments that run, plus the queues
        (and shards) found with messages that wait for room. Written when it changes, and
        at least every NEED_REFRESH_SECONDS so that readers can tell it is current."""
        waiting = sum(1 for url, queue in cycle.queues.items()
                      if url not in cycle.shards and not queue.paused
                      and self.schedule(url).waiting_since is not None)  # fmt: skip
        shards = sum(1 for url in cycle.shards if self._may_grow(cycle, url)
                     and self.schedule(url).backlog_checks >= policy.BACKLOG_CHECKS)  # fmt: skip
        wanted = sum(cycle.loads.values()) + waiting + shards
        capacity = sum(w.max_load for w in cycle.workers.values())
        need = FleetNeed(len(cycle.workers), capacity, wanted,
                         policy.desired_workers(wanted, self.settings.max_load))
        last = self.need
        if last and last[0] == need and (now - last[1]).total_seconds() < NEED_REFRESH_SECONDS:
            return
        try:
            self.store.save_fleet_need(need, now)
        except ServiceUnavailable as exc:  # written by the next cycle
            log.warning("fleet_need.not_saved", error=str(exc))
            return
        self.need = (need, now)

    def _chart_loads(self, now: datetime, cycle: _Cycle) -> None:
        """Each live worker's load, for the dashboard's chart: the minute's point is set
        when a minute begins and again whenever the loads change (the last one stands)."""
        point = (now.replace(second=0, microsecond=0),
                 {w: cycle.loads[w] for w in cycle.workers})  # fmt: skip
        if point == self.charted or not point[1]:
            return
        try:
            self.store.add_series(now, loads=point[1])
        except ServiceUnavailable:
            return  # only a display: written with the next cycle
        self.charted = point

    def _survey(self, now: datetime, workers: list[WorkerRecord]) -> _Cycle:
        queues = {q.queue_url: q for q in
                  self.cache.refresh(now, SCAN_BUDGET * self.settings.master_interval)}
        self.known = queues
        for rung in self.cache.take_rung():
            # A producer sent to it: look now, whatever its idle schedule (§3, doorbell).
            self.schedules[rung.queue_url] = policy.rung(self.schedule(rung.queue_url))
        shards: dict[str, list[Assignment]] = {}
        for held in self.store.assignments():
            shards.setdefault(held.queue_url, []).append(held)
        for held_list in shards.values():
            held_list.sort(key=lambda a: a.shard)
        loads = Counter(a.worker for held in shards.values() for a in held)
        return _Cycle(queues, shards, {w.id: w for w in workers}, loads)

    def _due(self, now: datetime, cycle: _Cycle, room: bool) -> list[QueueRecord]:
        """Unpaused, unassigned queues whose check is due (`room`: a worker has some)."""
        due = []
        for url, queue in cycle.queues.items():
            schedule = self.schedule(url)
            if url in cycle.shards:
                self.schedules[url] = policy.seen_assigned(schedule)
                continue
            if schedule.job_id is not None:
                schedule = self._learn_outcome(queue, schedule, now)
            if queue.paused or not schedule.due(now, room):
                continue
            due.append(queue)
        return due

    def _learn_outcome(
        self, queue: QueueRecord, schedule: policy.QueueSchedule, now: datetime
    ) -> policy.QueueSchedule:
        """Once a queue's job has ended: after a failure, wait longer before the next try."""
        assert schedule.job_id is not None
        job = self.store.job(schedule.job_id)
        failed = job is not None and job.status == "failed"
        schedule = policy.released(schedule, now, failed)
        self.schedules[queue.queue_url] = schedule
        if failed:
            assert job is not None
            log.warning("queue.backing_off", queue=queue.name, failed_jobs=schedule.failures,
                        retry_in=schedule.idle_delay, error=job.error)  # fmt: skip
        return schedule

    # --- depth checks -------------------------------------------------------------------

    def _check_depths(self, now: datetime, queues: list[QueueRecord],
                      wait: float) -> dict[str, QueueDepth]:  # fmt: skip
        """Look at the depths of the most overdue of `queues` on the check threads, waiting
        at most `wait` seconds: a slow or unreachable SQS must never hold the cycle up,
        nor with it the lease's renewals. A check that has not answered by then is
        collected by a later cycle; one that failed leaves its queue due, and the outage
        is logged once. Returns what was found, by URL (a queue missing in SQS as empty,
        noted for its recreation); an unassigned queue's next check is scheduled from it."""
        room = CHECKS_IN_FLIGHT - len(self.checking)
        fresh = [q for q in queues if q.queue_url not in self.checking]
        schedules = self.schedules  # looked up 100,000 times at 100,000 queues
        overdue = heapq.nsmallest(max(room, 0), fresh,
                                  key=lambda q: schedules.get(q.queue_url, UNSEEN).overdue_key())
        for queue in overdue:
            self.checking[queue.queue_url] = self.pool.submit(self._depth, queue)
        wait_all(self.checking.values(), timeout=max(wait, 0.0))
        found: dict[str, QueueDepth] = {}
        failed = None
        for url, check in list(self.checking.items()):
            if check.done():
                del self.checking[url]
                if isinstance(exc := check.exception(), QueueNotFound):
                    found[url] = QueueDepth(0, 0, 0, missing=True)
                    self._missing(now, url)
                elif isinstance(exc, RoleUnavailable):
                    pass  # its queues' outage alone, logged by the role: SQS is fine
                elif exc is not None:
                    failed = exc
                else:
                    found[url] = check.result()
                    self._present(url)
        if failed is not None:
            self.sqs_outage.failed(failed)
        elif overdue:
            self.sqs_outage.recovered()
        return found

    def _depth(self, queue: QueueRecord) -> QueueDepth:
        return self.sqs.of(queue).depth(queue.queue_url)

    # --- queues missing in SQS ----------------------------------------------------------

    def _missing(self, now: datetime, url: str) -> None:
        if url not in self.lost:
            self.lost[url] = now
            queue = self.known.get(url)
            # An adopted queue is its team's: it is reported, never recreated.
            log.warning("queue.missing_in_sqs", queue=queue.name if queue else url,
                        recreated=bool(queue and queue.managed))  # fmt: skip

    def _present(self, url: str) -> None:
        self.lost.pop(url, None)

    def missing(self, now: datetime) -> list[QueueRecord]:
        """The queues SQS has lacked for RESYNC_AFTER (a few a cycle): being deleted takes
        less, so these are to be recreated, once their documents are found still there."""
        for url in [u for u in self.lost if u not in self.known]:
            del self.lost[url]  # its document is gone (or has another URL now)
        return [self.known[url] for url, since in self.lost.items()
                if self.known[url].managed
                and (now - since).total_seconds() >= RESYNC_AFTER][:RESYNCS_PER_CYCLE]

    def resynced(self, old: QueueRecord, found: bool) -> None:
        """`old` was recreated in SQS, or not found in MongoDB (deleted meanwhile)."""
        self.lost.pop(old.queue_url, None)
        self.schedules.pop(old.queue_url, None)
        if not found:
            assert old.id is not None
            self.cache.forget(old.id)

    # --- assigning and preempting ------------------------------------------------------

    def _assign(self, now: datetime, cycle: _Cycle, candidates: list[QueueRecord]) -> list[str]:
        """Give each queue found with messages (in priority order) to the least-loaded
        worker; the URLs of those left waiting for room."""
        waiting = []
        for queue in candidates:
            choice = cycle.pick()
            if choice is None:
                self.schedules[queue.queue_url] = policy.waiting(self.schedule(queue.queue_url),
                                                                 now)  # fmt: skip
                waiting.append(queue.queue_url)
                continue
            if self._place(now, cycle, queue, choice, shard=0, share=None):
                log.info("queue.assigned", queue=queue.name, worker=choice,
                         job_id=self.schedule(queue.queue_url).job_id)  # fmt: skip
        return waiting

    def _place(self, now: datetime, cycle: _Cycle, queue: QueueRecord, worker: str, *,
               shard: int, share: Share | None) -> bool:  # fmt: skip
        job_id = self.store.assign(queue, worker, now, shard, share)
        if job_id is None:
            return False  # another master got there first
        cycle.loads[worker] += 1
        self.meter.count("assignments")
        self.schedules[queue.queue_url] = policy.assigned(self.schedule(queue.queue_url), now,
                                                          job_id)  # fmt: skip
        return True

    def _preempt(self, now: datetime, cycle: _Cycle, waiting: list[str]) -> None:
        """Ask a lower priority to give way to each queue that waited long enough, one
        assignment per waiting queue, counting those already giving way."""
        running = [
            policy.Running(a.job_id, url, cycle.queues[url].priority, a.assigned_at,
                           self.schedule(url).preempted_at, a.yield_requested)
            for url, held in cycle.shards.items() if url in cycle.queues for a in held
        ]  # fmt: skip
        owed = sum(1 for r in running if r.yielding)
        cooldown = self.settings.assignment_max_seconds / 4
        for url in waiting:
            queue = cycle.queues[url]
            if not policy.may_preempt(self.schedule(url), now, self.settings.preempt_after):
                continue
            if owed > 0:
                owed -= 1  # a slot is already on its way to it
                continue
            chosen = policy.victim(running, queue.priority, now, cooldown)
            if chosen is None:
                continue
            self.store.request_yield(chosen.job_id, now)
            self.schedules[chosen.queue_url] = replace(self.schedule(chosen.queue_url),
                                                       preempted_at=now)  # fmt: skip
            running = [r for r in running if r.queue_url != chosen.queue_url]
            log.info("queue.preempting", queue=cycle.queues[chosen.queue_url].name,
                     job_id=chosen.job_id, priority=chosen.priority, waiting_queue=queue.name,
                     waiting_priority=queue.priority)  # fmt: skip

    # --- shards -----------------------------------------------------------------------

    def _may_grow(self, cycle: _Cycle, url: str) -> bool:
        queue = cycle.queues.get(url)
        if queue is None or queue.paused:
            return False
        most = min(queue.max_shards, queue.concurrency)  # a share is at least one handler
        return len(cycle.shards[url]) < most

    def _grow(self, now: datetime, cycle: _Cycle, growing: list[QueueRecord],
              depths: dict[str, QueueDepth]) -> None:  # fmt: skip
        """Another shard for each running queue whose backlog its shards do not drain."""
        for queue in growing:
            url = queue.queue_url
            depth = depths.get(url)
            if depth is None:
                continue
            schedule = policy.backlog_checked(self.schedule(url), depth.visible, depth.in_flight,
                                              queue.concurrency)  # fmt: skip
            self.schedules[url] = schedule
            held = cycle.shards[url]
            if schedule.backlog_checks < policy.BACKLOG_CHECKS or any(
                    a.share is not None and not a.share.granted for a in held):
                continue  # not yet, or the last new shard still waits for its share
            worker = cycle.pick(exclude=[a.worker for a in held])
            if worker is None:
                continue
            shard = min(set(range(len(held) + 1)) - {a.shard for a in held})
            count = len(held) + 1
            shares = policy.split(queue.concurrency, count)
            rates = policy.split_rate(queue.rate_limit, count)
            self._lower(now, queue, held, shares, rates)
            new = Share(shares[-1], rates[-1], granted=False)
            if self._place(now, cycle, queue, worker, shard=shard, share=new):
                # Granted by a later cycle, once the others run within their new shares.
                self.schedules[url] = replace(self.schedule(url), backlog_checks=0)
                log.info("queue.sharded", queue=queue.name, shard=shard, worker=worker,
                         shards=count, visible=depth.visible)  # fmt: skip

    def _lower(self, now: datetime, queue: QueueRecord, held: list[Assignment],
               shares: list[int], rates: list[float | None]) -> None:  # fmt: skip
        """Write the shares of `held` (in shard order) where they are smaller than now."""
        lowered = False
        for assignment, concurrency, rate in zip(held, shares, rates, strict=False):
            current = assignment.share
            now_c = queue.concurrency if current is None else current.concurrency
            now_r = queue.rate_limit if current is None else current.rate_limit
            if concurrency < now_c or _rate_below(rate, now_r):
                granted = current.granted if current is not None else True
                self.store.set_share(assignment.job_id, Share(concurrency, rate, granted))
                lowered = True
        if lowered:
            self.schedules[queue.queue_url] = replace(self.schedule(queue.queue_url),
                                                      reshared_at=now)  # fmt: skip

    def _reshare(self, now: datetime, cycle: _Cycle) -> None:
        """Keep each sharded queue's shares its concurrency and rate split over its shards:
        lower at once, raise (or grant a new shard) only once the others run within
        theirs and SHARE_SETTLE_SECONDS passed since any was lowered."""
        sharded = {url: held for url, held in cycle.shards.items()
                   if url in cycle.queues and (len(held) > 1 or held[0].share is not None)}
        if not sharded:
            return
        jobs = self.store.jobs_by_id(a.job_id for held in sharded.values() for a in held)
        for url, held in sharded.items():
            queue = cycle.queues[url]
            shares = policy.split(queue.concurrency, len(held))
            rates = policy.split_rate(queue.rate_limit, len(held))
            self._lower(now, queue, held, shares, rates)
            reshared = self.schedule(url).reshared_at
            if reshared is not None and (now - reshared).total_seconds() < SHARE_SETTLE_SECONDS:
                continue
            for i, assignment in enumerate(held):
                want = None if len(held) == 1 else Share(shares[i], rates[i], granted=True)
                if assignment.share == want:
                    continue
                others = sum(_load(a, queue, jobs) for a in held if a is not assignment)
                if others + (queue.concurrency if want is None else want.concurrency) \
                        <= queue.concurrency:  # fmt: skip
                    self.store.set_share(assignment.job_id, want)
                    log.info("queue.share_granted", queue=queue.name, shard=assignment.shard,
                             concurrency=want.concurrency if want else queue.concurrency)


def _has(depths: dict[str, QueueDepth], queue: QueueRecord) -> bool:
    depth = depths.get(queue.queue_url)
    return depth is not None and depth.visible > 0


def _rate_below(rate: float | None, current: float | None) -> bool:
    """Whether `rate` is a tighter limit than `current` (None: none)."""
    return rate is not None and (current is None or rate < current)


def _load(assignment: Assignment, queue: QueueRecord, jobs: dict[str, JobRecord]) -> int:
    """The most handlers a shard may run now: its share (if granted), or what its consumer
    last said it runs at or runs, whichever is more."""
    share = assignment.share
    allowed = queue.concurrency if share is None else (share.concurrency if share.granted else 0)
    job = jobs.get(assignment.job_id)
    reported = [job.effective_concurrency, job.running] if job is not None else []
    return max([allowed, *(r for r in reported if r is not None)])
