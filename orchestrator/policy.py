"""Pure decisions with deterministic tie-breaks: who gets a queue, when to look again."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

IDLE_FIRST_CHECK = 1.0  # seconds between checks of a queue that was busy just now
IDLE_FAST_SECONDS = 60.0  # how long "just now" lasts
RETRY_BASE = 1.0  # visibility (s) after a handler's first failure
RETRY_CAP = 900.0  # never hide a failed message for more than 15 minutes
FAILED_JOB_BASE = 2.0  # seconds before a queue whose job failed is assigned again
FAILED_JOB_CAP = 60.0


@dataclass(frozen=True)
class WorkerLoad:
    """A live worker as the assignment policy sees it."""

    id: str
    load: int
    max_load: int
    heartbeat_at: datetime


def pick_worker(workers: Sequence[WorkerLoad]) -> str | None:
    """The worker with the fewest assignments below its max load.

    Ties go to the oldest heartbeat (it has waited longest for work), then the id.
    None when every worker is full: the queue waits for the next cycle.
    """
    open_ = [w for w in workers if w.load < w.max_load]
    if not open_:
        return None
    return min(open_, key=lambda w: (w.load, w.heartbeat_at, w.id)).id


def next_idle_delay(previous: float | None, maximum: float, idle_for: float | None) -> float:
    """Delay before re-checking a queue found empty.

    A queue that had work less than IDLE_FAST_SECONDS ago is checked every second:
    work often comes back after a lull, and should be picked up within seconds.
    After that (or with no history) the delay doubles from 2 s up to `maximum`, which
    sets the steady cost of an idle queue: one request per `maximum` seconds.
    """
    if idle_for is not None and idle_for < IDLE_FAST_SECONDS:
        return min(IDLE_FIRST_CHECK, maximum)
    if previous is None or previous < IDLE_FIRST_CHECK * 2:
        return min(IDLE_FIRST_CHECK * 2, maximum)
    return min(previous * 2, maximum)


def backoff(failures: int, base: float, cap: float) -> float:
    """The wait after `failures` failures in a row: `base` doubling, at most `cap`
    (1 failure: `base`). Every retry schedule of the project is this one."""
    exponent = min(max(failures, 1) - 1, 60)  # 2**60 x any base is past every cap
    return float(min(base * 2**exponent, cap))


def failed_job_delay(consecutive_failures: int) -> float:
    """Wait before re-assigning a queue whose last jobs failed (2 s doubling, at most 60 s):
    a handler that cannot be imported must not be retried in a tight loop."""
    return backoff(consecutive_failures, FAILED_JOB_BASE, FAILED_JOB_CAP)


def retry_visibility(receive_count: int, cap: float = RETRY_CAP) -> int:
    """Seconds to hide a message whose handler failed, from its receive count (1, 2, 4, …)."""
    return int(backoff(receive_count, RETRY_BASE, cap))


def is_drained(empty_polls: int, in_flight: int, threshold: int) -> bool:
    """A queue is drained after `threshold` consecutive empty receives with nothing in flight."""
    return in_flight == 0 and empty_polls >= threshold


def usage_limit(base: int, jitter: float) -> int:
    """A consumer's own recycling limit: `base` plus up to half again, so that consumers
    started together do not all restart together. `jitter` is a number in [0, 1)."""
    return base + int(jitter * (base // 2 + 1))


def needs_recycling(uses: int, limit: int, rss_mb: float, max_rss_mb: float) -> bool:
    return uses >= limit or rss_mb > max_rss_mb


MEMORY_KILL_FACTOR = 2  # this far over CONSUMER_MAX_RSS_MB a consumer cannot wait to finish


def memory_action(rss_mb: float, max_rss_mb: float) -> str | None:
    """What a busy consumer's memory calls for: None, "stop" (stop receiving, finish or
    hand back what it holds, then be replaced) or "kill" (its messages come back)."""
    if rss_mb >= MEMORY_KILL_FACTOR * max_rss_mb:
        return "kill"
    return "stop" if rss_mb > max_rss_mb else None


# --- receiving (docs/design.md §5: what `concurrency` means) --------------------------

RECEIVE_BATCH = 10  # SQS's most per ReceiveMessage
IDLE_LOSS = 0.02  # waiting for a slot to idle may cost this share of the slots' time


HOLD_BATCHES = 10  # the most a consumer holds: this many times its concurrency
HOLD_VISIBILITY_SHARE = 0.5  # held messages start within this share of the visibility


def prefetch(limit: int, handler_s: float = 0.0, rtt_s: float = 0.0,
             visibility_s: float = float("inf")) -> int:  # fmt: skip
    """Messages a consumer may hold received but not started, beyond its free slots.

    At least min(10, limit). Fast handlers get more: as many as they handle in one
    receive round trip (Little's law: rate times latency, the rate being `limit` slots each
    freed every `handler_s`), so a slot never waits for SQS; capped at 10 times limit and at
    what they handle in half the visibility timeout, so held messages start before
    their first extension is due. Slow handlers keep the small hold and its few
    requests per message.
    """
    base = min(RECEIVE_BATCH, limit)
    if handler_s <= 0:
        return base  # no handler has finished yet: nothing to go on
    rate = limit / handler_s
    cover = math.ceil(rate * rtt_s)
    bound = int(min(HOLD_BATCHES * limit, rate * visibility_s * HOLD_VISIBILITY_SHARE))
    return max(base, min(cover, bound))


class FlowState(NamedTuple):
    """What a consumer's receive decision needs to know about its messages (a tuple:
    it is built after every handler call)."""

    limit: int  # concurrency: messages that may run at once
    running: int  # messages whose handlers run
    held: int  # received, not started
    receiving: int  # asked for by receives under way
    receives: int  # receives under way
    backlog: bool  # the last receive came back full: the queue has more
    handler_s: float  # average time a message holds its slot
    rtt_s: float  # average round trip of a receive that returned messages
    visibility_s: float = float("inf")  # the queue's visibility timeout


def receive_size(s: FlowState, max_receives: int) -> int:
    """How many messages to ask SQS for now; 0 to wait.

    Never more than fits: running + held + asked ≤ limit + prefetch. A full batch
    is asked for whenever it fits, and whatever fits when a slot is idle. With every
    slot busy and nothing held or coming, the next slot to free will find nothing:
    a whole prefetch is asked for then, before it frees, unless the handlers are so
    slow that a round trip with one slot idle costs less than IDLE_LOSS of their
    time, in which case the receive waits for that slot (one message fuller: fewer
    requests per message). Asking for less earlier would only mean more requests,
    which slow every round trip of a loaded SQS. While one receive is under way
    another starts only if the queue has a backlog.
    """
    room = capacity(s)
    if room <= 0 or s.receives >= max_receives or (s.receives and not s.backlog):
        return 0
    if room >= RECEIVE_BATCH:
        return RECEIVE_BATCH
    if s.running + s.held + s.receiving < s.limit:
        return room  # a slot is idle
    if room < _prefetch(s):
        return 0  # messages held or coming still cover the next free slots
    if s.handler_s > 0 and s.rtt_s / ((room + 1) * s.handler_s) <= IDLE_LOSS:
        return 0
    return room


def capacity(s: FlowState) -> int:
    """How many more messages may be asked for: running + held + asked ≤ limit + prefetch."""
    return s.limit - s.running + _prefetch(s) - s.held - s.receiving


def _prefetch(s: FlowState) -> int:
    return prefetch(s.limit, s.handler_s, s.rtt_s, s.visibility_s)


# --- the master's view of each queue (pure transitions) -------------------------------

NEVER = datetime.min.replace(tzinfo=UTC)  # sorts first: never checked, never assigned


@dataclass(frozen=True)
class QueueSchedule:
    """What a master knows of one queue between cycles: when to look at its depth next,
    when it was last assigned (fairness), its running job, and its failures in a row."""

    check_at: datetime | None = None  # its next depth check (None: as soon as it may)
    idle_delay: float | None = None  # the last wait between checks that found it empty
    assigned_at: datetime | None = None
    job_id: str | None = None  # its latest job, until the master sees it released
    released_at: datetime | None = None  # when its last job ended
    failures: int = 0  # jobs failed in a row
    waiting_since: datetime | None = None  # found with messages, no worker free since
    preempted_at: datetime | None = None  # the last time it was asked to give way
    backlog_checks: int = 0  # depth checks in a row that found more than its shards drain
    reshared_at: datetime | None = None  # when its shards' shares were last lowered
    shown_at: datetime | None = None  # its depth's last check (kept for the API)

    def due(self, now: datetime, room: bool = True) -> bool:
        """Whether to look at its depth now; with `room` (a worker can take a queue), one
        that waits for room is due at once, whatever its watch schedule (`watched`)."""
        return (self.check_at is None or now >= self.check_at
                or (room and self.waiting_since is not None))  # fmt: skip

    def overdue_key(self) -> datetime:
        """Most overdue first (never checked before all)."""
        return self.check_at or NEVER

    def fairness_key(self) -> datetime:
        """Longest unserved first."""
        return self.assigned_at or NEVER


def seen_assigned(s: QueueSchedule) -> QueueSchedule:
    """It runs: look again as soon as the assignment ends (it may still have work)."""
    return replace(s, check_at=None, idle_delay=None, waiting_since=None)


def assigned(s: QueueSchedule, now: datetime, job_id: str) -> QueueSchedule:
    return replace(s, assigned_at=now, job_id=job_id, waiting_since=None)


def rung(s: QueueSchedule) -> QueueSchedule:
    """A send rang its doorbell: look at its depth in the next cycle, whatever its idle
    schedule (an assigned queue is unchanged: its consumer has the message)."""
    return s if s.job_id is not None else replace(s, check_at=None)


def waiting(s: QueueSchedule, now: datetime) -> QueueSchedule:
    """It has messages and no worker could take it: it waits for capacity (since when)."""
    return s if s.waiting_since is not None else replace(s, waiting_since=now)


def may_preempt(s: QueueSchedule, now: datetime, preempt_after: float) -> bool:
    """It has waited for capacity long enough to ask a lower priority to give way."""
    return s.waiting_since is not None and (now - s.waiting_since).total_seconds() >= preempt_after


@dataclass(frozen=True)
class Running:
    """An assignment as preemption sees it."""

    job_id: str
    queue_url: str
    priority: int
    assigned_at: datetime
    preempted_at: datetime | None  # its queue's last preemption
    yielding: bool  # already asked to give way


def victim(running: Sequence[Running], priority: int, now: datetime,
           cooldown: float) -> Running | None:  # fmt: skip
    """Which assignment gives way to a queue of `priority`: the lowest priority below it,
    longest running first, never one already yielding nor one whose queue was preempted
    within `cooldown` seconds (so that low priorities still make progress)."""
    fair = [r for r in running if r.priority < priority and not r.yielding
            and (r.preempted_at is None or (now - r.preempted_at).total_seconds() >= cooldown)]
    return min(fair, key=lambda r: (r.priority, r.assigned_at, r.job_id)) if fair else None


def backlog_checked(s: QueueSchedule, visible: int, in_flight: int,
                    concurrency: int) -> QueueSchedule:  # fmt: skip
    """A running queue's depth: a backlog its shards do not drain is more than
    concurrency x 10 waiting while they run at full concurrency (in flight ≥ it)."""
    behind = visible > concurrency * BACKLOG_FACTOR and in_flight >= concurrency
    return replace(s, backlog_checks=s.backlog_checks + 1 if behind else 0)


BACKLOG_FACTOR = 10
BACKLOG_CHECKS = 2  # checks in a row that found a backlog before another shard


def desired_workers(wanted: int, max_load: int) -> int:
    """Workers the fleet needs for `wanted` assignments of at most `max_load` each: at
    least one, so that an idle fleet still notices its first message."""
    return max(1, math.ceil(wanted / max_load))


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares as even as can be, the larger ones first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def split_rate(rate: float | None, parts: int) -> list[float | None]:
    return [None if rate is None else rate / parts] * parts


def released(s: QueueSchedule, now: datetime, failed: bool) -> QueueSchedule:
    """Its job ended; after a failure the next assignment waits longer each time."""
    if not failed:
        return replace(s, job_id=None, released_at=now, failures=0)
    failures = s.failures + 1
    delay = failed_job_delay(failures)
    return replace(s, job_id=None, released_at=now, failures=failures,
                   check_at=now + timedelta(seconds=delay), idle_delay=delay)  # fmt: skip


def watched(s: QueueSchedule, now: datetime, has_messages: bool, idle_max: float) -> QueueSchedule:
    """Its depth was looked at while no worker had room for it (none live, or all full)
    and it could not preempt one: the backlog stays visible, at an idle queue's cost. An
    empty queue backs off as usual; one with messages waits for room and is looked at
    again after idle_max (room makes it due at once: QueueSchedule.due)."""
    if not has_messages:
        return checked(s, now, False, idle_max)
    return replace(waiting(s, now), check_at=now + timedelta(seconds=idle_max), idle_delay=None)


def checked(s: QueueSchedule, now: datetime, has_messages: bool, idle_max: float) -> QueueSchedule:
    """Its depth was looked at: a queue with messages may be assigned at once; an empty
    one is looked at again after next_idle_delay."""
    if has_messages:
        return replace(s, check_at=None, idle_delay=None)
    s = replace(s, waiting_since=None)  # nothing to wait for
    idle_for = (now - s.released_at).total_seconds() if s.released_at else None
    delay = next_idle_delay(s.idle_delay, idle_max, idle_for)
    return replace(s, check_at=now + timedelta(seconds=delay), idle_delay=delay)
