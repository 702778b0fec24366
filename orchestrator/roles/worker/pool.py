"""ConsumerPool: a worker's consumer processes (circus's watcher to the worker's arbiter).

It spawns consumers (with backoff when they keep dying), reuses idle ones,
recycles one after its usage limit or when it grew too large, reaps the dead,
and kills a consumer that stopped reporting (stalled) or passed twice its memory
limit. Each slot's life is one state and one transition function (`transition`);
what a consumer's job means for MongoDB is the worker's business.
"""

from __future__ import annotations

import contextlib
import enum
import random
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from orchestrator import policy
from orchestrator.config import Settings
from orchestrator.metrics import Meter
from orchestrator.models import Assignment, ConsumerStats, QueueRecord
from orchestrator.roles.process import protocol
from orchestrator.roles.process.channel import ChannelClosed
from orchestrator.roles.process.codec import ProtocolError
from orchestrator.roles.process.processes import describe_exit
from orchestrator.roles.process.protocol import Live, Reason

log = structlog.get_logger()

STALL_SECONDS = 30.0  # a busy consumer silent this long is stuck: kill it
SPAWN_BACKOFF_CAP = 30.0  # seconds between replacements of consumers that keep dying


class SlotState(enum.Enum):
    IDLE = "idle"  # no job: may be given one
    BUSY = "busy"  # running a job
    STOPPING = "stopping"  # running a job it was told to stop
    RETIRING = "retiring"  # told to exit (or exiting by itself): its exit is expected
    KILLED = "killed"  # SIGKILLed: its death is expected, and fails its job


class SlotEvent(enum.Enum):
    ASSIGN = "assign"
    STOP = "stop"
    DONE = "done"
    RETIRE = "retire"
    KILL = "kill"


class InvalidTransition(Exception):
    """A slot was asked to do something its state does not allow (a bug)."""


_S, _E = SlotState, SlotEvent
TRANSITIONS: dict[tuple[SlotState, SlotEvent], SlotState] = {
    (_S.IDLE, _E.ASSIGN): _S.BUSY,
    (_S.BUSY, _E.STOP): _S.STOPPING,
    (_S.STOPPING, _E.STOP): _S.STOPPING,  # asked again (fenced, then released): once is enough
    (_S.BUSY, _E.DONE): _S.IDLE,
    (_S.STOPPING, _E.DONE): _S.IDLE,
    (_S.IDLE, _E.RETIRE): _S.RETIRING,
    (_S.BUSY, _E.RETIRE): _S.RETIRING,  # shutdown after the grace: it exits with its job
    (_S.STOPPING, _E.RETIRE): _S.RETIRING,
    (_S.RETIRING, _E.RETIRE): _S.RETIRING,
    (_S.BUSY, _E.KILL): _S.KILLED,
    (_S.STOPPING, _E.KILL): _S.KILLED,
    # Its "done" crossed our SIGKILL (or our Exit): the outcome stands, the exit is on its way.
    (_S.KILLED, _E.DONE): _S.KILLED,
    (_S.RETIRING, _E.DONE): _S.RETIRING,
}


def transition(state: SlotState, event: SlotEvent) -> SlotState:
    """The state a slot goes to on `event`; InvalidTransition if it cannot happen."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"a {state.value} consumer cannot {event.value}") from None


class ConsumerChannel(Protocol):
    """What the pool needs of its end of a consumer's channel (process/channel.Channel)."""

    def send(self, message: dict[str, Any]) -> None: ...

    def receive(self) -> Sequence[Mapping[str, Any] | bytes]: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class Process(Protocol):
    """What the pool needs of a consumer process (orchestrator/roles/processes.Child)."""

    @property
    def pid(self) -> int: ...

    @property
    def channel(self) -> ConsumerChannel | None: ...

    def poll(self) -> int | None: ...

    def signal(self, sig: signal.Signals) -> None: ...

    def kill_tree(self) -> None: ...

    def stats(self) -> tuple[float, float]: ...

    def largest_rss(self) -> float: ...

    def wait(self, timeout: float) -> int | None: ...


@dataclass(eq=False)  # identity-hashed: kept in sets and as selector data
class Slot:
    """A consumer process and what it is doing for us."""

    process: Process
    usage_limit: int
    last_event: float  # monotonic time of its last report
    state: SlotState = SlotState.IDLE
    uses: int = 0
    job: Assignment | None = None
    live: Live | None = None  # the live settings last sent
    handled: int = 0
    failed: int = 0
    kill_reason: str | None = None
    over_memory: bool = False  # stopped for its memory: replaced once its job ends

    @property
    def pid(self) -> int:
        return self.process.pid

    def move(self, event: SlotEvent) -> None:
        self.state = transition(self.state, event)


@dataclass(frozen=True)
class Death:
    """A consumer that exited: how, and the job it left open (if any)."""

    pid: int
    how: str
    job: Assignment | None
    handled: int
    failed: int
    kill_reason: str | None
    expected: bool  # it was asked to exit and did so cleanly


class ConsumerPool:
    """Spawns, reuses, recycles, reaps and watches one worker's consumers."""

    def __init__(
        self,
        settings: Settings,
        spawn: Callable[[], Process],
        meter: Meter,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.spawn = spawn
        self.meter = meter
        self.rng = rng or random.Random()
        self.slots: dict[int, Slot] = {}
        self.spawn_failures = 0
        self.next_spawn_at = 0.0

    # --- giving out work ------------------------------------------------------------

    def with_jobs(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.job is not None]

    def acquire(self, now: float) -> Slot | None:
        """An idle consumer, or a new one; None while replacing dead ones backs off."""
        for slot in self.slots.values():
            if slot.state is SlotState.IDLE:
                return slot
        if now < self.next_spawn_at:
            return None
        process = self.spawn()
        limit = policy.usage_limit(self.settings.consumer_usage_limit, self.rng.random())
        slot = Slot(process, limit, now)
        self.slots[process.pid] = slot
        log.info("consumer.spawned", consumer_pid=process.pid, usage_limit=limit)
        return slot

    def assign(self, slot: Slot, job: Assignment, queue: QueueRecord, now: float) -> None:
        slot.move(SlotEvent.ASSIGN)
        slot.job, slot.uses, slot.handled, slot.failed = job, slot.uses + 1, 0, 0
        slot.last_event, slot.live = now, Live.of(queue, job.share)
        self.send(slot, protocol.Assign(job.job_id, queue.name, queue.queue_url, queue.handler,
                                        queue.visibility_timeout, slot.live,
                                        queue.failure_bodies, queue.region,
                                        queue.role_arn))  # fmt: skip
        log.info("job.assigned_to_consumer", queue=queue.name, job_id=job.job_id,
                 consumer_pid=slot.pid)  # fmt: skip

    def relay(self, slot: Slot, live: Live) -> bool:
        """Send changed live settings to a busy consumer; whether they changed."""
        if slot.job is None or slot.state is not SlotState.BUSY or live == slot.live:
            return False
        slot.live = live
        self.send(slot, protocol.Retune(slot.job.job_id, live))
        return True

    def stop(self, slot: Slot, reason: Reason) -> None:
        """Ask a busy consumer to stop its job (once)."""
        if slot.job is None or slot.state is not SlotState.BUSY:
            return
        slot.move(SlotEvent.STOP)
        self.send(slot, protocol.Stop(slot.job.job_id, reason))

    def stop_all(self, reason: Reason) -> None:
        for slot in self.with_jobs():
            self.stop(slot, reason)

    def retire(self, slot: Slot) -> None:
        """Ask a consumer to exit; its exit is then expected, not a death."""
        if slot.state is not SlotState.KILLED:
            slot.move(SlotEvent.RETIRE)
            self.send(slot, protocol.Exit())

    def retire_idle(self) -> None:
        for slot in list(self.slots.values()):
            if slot.state is SlotState.IDLE:
                self.retire(slot)

    def send(self, slot: Slot, message: protocol.ToConsumer) -> None:
        if slot.process.channel is None:
            return
        with contextlib.suppress(ChannelClosed):  # it died; reaping handles its job
            slot.process.channel.send(protocol.encode(message))

    # --- what consumers report --------------------------------------------------------

    def receive(self, slot: Slot, now: float) -> list[protocol.ToWorker]:
        """What the consumer reported since the last look; noted as signs of life."""
        if slot.process.channel is None:
            return []
        try:
            docs = slot.process.channel.receive()
        except ChannelClosed:
            return []  # it is exiting; reaping will tell how
        events: list[protocol.ToWorker] = []
        for doc in docs:
            slot.last_event = now
            try:
                message = protocol.decode(doc)
            except ProtocolError as exc:
                log.error("consumer.bad_message", consumer_pid=slot.pid, error=str(exc))
                continue
            if isinstance(message, protocol.Started | protocol.Progress | protocol.Done):
                events.append(message)
            else:
                log.error("consumer.bad_message", consumer_pid=slot.pid,
                          error=f"a consumer sent {message.type!r}")  # fmt: skip
        return events

    def started(self) -> None:
        """A consumer started a job: spawning works again."""
        self.spawn_failures = 0

    def done(self, slot: Slot, abandoned: bool) -> Assignment | None:
        """Its job ended: the slot is free again, retired when it must not be reused."""
        job = slot.job
        slot.move(SlotEvent.DONE)
        slot.job = None
        if slot.state is not SlotState.IDLE:
            return job  # killed or retiring already: it exits, reaping forgets it
        if abandoned:
            # It exits by itself: handler threads that never returned cannot be stopped.
            slot.move(SlotEvent.RETIRE)
        elif self._worn_out(slot):
            self.meter.count("consumerRestartsRecycled")
            self.retire(slot)
        return job

    def _worn_out(self, slot: Slot) -> bool:
        rss, _ = slot.process.stats()
        max_rss = self.settings.consumer_max_rss_mb
        if slot.over_memory or policy.needs_recycling(slot.uses, slot.usage_limit, rss, max_rss):
            log.info("consumer.recycling", consumer_pid=slot.pid, uses=slot.uses, rss_mb=rss)
            return True
        return False

    # --- reaping and watching ------------------------------------------------------------

    def exited(self) -> list[tuple[Slot, int]]:
        """Consumers that have exited, with their exit status (they are reaped)."""
        return [(s, status) for s in list(self.slots.values())
                if (status := s.process.poll()) is not None]  # fmt: skip

    def remove(self, slot: Slot, status: int, now: float, count_death: bool) -> Death:
        """Forget an exited consumer. An unexpected death makes the next spawn wait."""
        del self.slots[slot.pid]
        if slot.process.channel is not None:
            slot.process.channel.close()
        expected = slot.state is SlotState.RETIRING and status == 0
        death = Death(slot.pid, describe_exit(status), slot.job, slot.handled, slot.failed,
                      slot.kill_reason, expected)  # fmt: skip
        if expected:
            log.info("consumer.exited", consumer_pid=slot.pid)
            return death
        log.warning("consumer.died", consumer_pid=slot.pid, exit=death.how)
        if count_death:
            self.meter.count("consumerRestartsDied")
            if slot.job is not None:
                self._back_off(now)
        return death

    def _back_off(self, now: float) -> None:
        """Replace dead consumers with exponential backoff and jitter (no crash loop)."""
        self.spawn_failures += 1
        delay = policy.backoff(self.spawn_failures, 1.0, SPAWN_BACKOFF_CAP)
        jittered = delay * (0.5 + self.rng.random())
        self.next_spawn_at = now + (jittered if self.spawn_failures > 1 else 0)

    def watch(self, now: float) -> None:
        """A busy consumer reports at least every second; one silent for STALL_SECONDS is
        stuck (a hanging import, a deadlock): kill it, and reaping fails its job."""
        for slot in self.with_jobs():
            if slot.state is not SlotState.KILLED and now - slot.last_event > STALL_SECONDS:
                assert slot.job is not None
                log.error("consumer.stalled", consumer_pid=slot.pid, queue=slot.job.queue_name)
                # Only the consumer: its handler processes exit when its channel closes.
                self._kill(slot, f"stalled: no report for {STALL_SECONDS:.0f} s", tree=False)

    def watch_memory(self) -> None:
        """A consumer over CONSUMER_MAX_RSS_MB stops its job and is replaced; at twice the
        limit it cannot be let finish: kill it (its messages reappear in SQS)."""
        limit = self.settings.consumer_max_rss_mb
        for slot in self.with_jobs():
            if slot.state is SlotState.KILLED or slot.job is None:
                continue
            rss = slot.process.largest_rss()
            action = policy.memory_action(rss, limit)
            if action == "kill":
                log.error("consumer.over_memory", consumer_pid=slot.pid, rss_mb=rss,
                          limit_mb=limit, action="kill", queue=slot.job.queue_name)  # fmt: skip
                self._kill(slot, f"{rss:.0f} MB, over {policy.MEMORY_KILL_FACTOR} x "
                                 f"CONSUMER_MAX_RSS_MB ({limit})", tree=True)  # fmt: skip
            elif action == "stop" and not slot.over_memory:
                slot.over_memory = True
                log.warning("consumer.over_memory", consumer_pid=slot.pid, rss_mb=rss,
                            limit_mb=limit, action="stop", queue=slot.job.queue_name)  # fmt: skip
                self.stop(slot, Reason.MEMORY)

    def _kill(self, slot: Slot, reason: str, *, tree: bool) -> None:
        slot.move(SlotEvent.KILL)
        slot.kill_reason = reason
        if tree:
            slot.process.kill_tree()  # with its handler processes
        else:
            slot.process.signal(signal.SIGKILL)

    def stats(self) -> list[ConsumerStats]:
        out = []
        for slot in self.slots.values():
            rss, cpu = slot.process.stats()
            queue = slot.job.queue_name if slot.job else None
            out.append(ConsumerStats(slot.pid, queue, rss, cpu))
        return out
