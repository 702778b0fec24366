"""Supervisor: the `orchestrator run` process. Starts the roles, reaps them, stops them.

Signal handlers only record; the loop dispatches: the first SIGTERM/SIGINT
starts a graceful stop, a second one kills the children at once. A child
that dies is logged with its exit code or signal and restarted with backoff, unless
restarting cannot help: a role that keeps failing to boot (exit 1), or one that refused
the database's newer schema (exit 2, roles/process/child.py REFUSED_EXIT) stops the daemon.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from orchestrator import policy
from orchestrator.config import Endpoints, Settings
from orchestrator.roles.process import processes
from orchestrator.roles.process.child import REFUSED_EXIT
from orchestrator.roles.process.processes import Child
from orchestrator.roles.process.signals import STOP, SignalQueue
from orchestrator.roles.process.status import Note, read_notes

log = structlog.get_logger()

STOP_MARGIN = 5.0  # beyond SHUTDOWN_GRACE, for workers to release and deregister
STABLE_SECONDS = 30.0  # a child that ran this long resets its restart backoff
RESTART_CAP = 30.0  # seconds between restarts of a role that keeps dying
BOOT_SECONDS = 10.0  # a child that exits with an error sooner failed to boot
BOOT_FAILURES = 3  # boot failures in a row after which the supervisor gives up (exit 1)
LOOP_STALLED = 10.0  # /livez fails when the supervisor's own loop stopped turning this long
CYCLE_SLACK = 5.0  # /readyz: a master's last good cycle within 3 x MASTER_INTERVAL + this


@dataclass(eq=False)
class _Slot:
    """One role the supervisor keeps running."""

    role: str
    child: Child | None = None
    failures: int = 0
    boot_failures: int = 0  # in a row
    restart_at: float = 0.0
    notes: dict[Note, float] = field(default_factory=dict)  # last time of each, monotonic


class Supervisor:
    """Keeps one master (modes M, MW) and N workers (modes W, MW) running."""

    def __init__(self, settings: Settings, endpoints: Endpoints, mode: str, workers: int) -> None:
        self.settings = settings
        self.boot = processes.boot_document(settings, endpoints)
        roles = (["master"] if "M" in mode else []) + (["worker"] * workers if "W" in mode else [])
        self.slots = [_Slot(role) for role in roles]
        self.signals = SignalQueue()
        self.stopping_since: float | None = None
        self.exit_code = 0
        self.turned = time.monotonic()  # the loop's last turn, for /livez

    def run(self) -> int:
        log.info("supervisor.started", roles=[s.role for s in self.slots])
        while True:
            self.turned = time.monotonic()
            pipes = {s.child.status_fd: s for s in self.slots if s.child and s.child.status_fd}
            readable, _, _ = select.select([self.signals.read_fd, *pipes], [], [], 0.5)
            for fd in readable:
                if fd in pipes:
                    self._take_notes(pipes[fd], fd)
            for sig in self.signals.drain():
                if sig in STOP:
                    if self.stopping_since is not None:
                        return self._kill("second signal")
                    self._begin_stop(f"signal {sig.name}")
            self._reap()
            if self.stopping_since is None:
                self._start_due()
            elif all(s.child is None for s in self.slots):
                log.info("supervisor.stopped")
                return self.exit_code
            elif (
                time.monotonic() - self.stopping_since > self.settings.shutdown_grace + STOP_MARGIN
            ):
                return self._kill("shutdown grace passed")

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.child is None and now >= slot.restart_at:
                # Own process group: a Ctrl-C on the terminal reaches only us, and we stop
                # the children in order rather than all at once.
                slot.child = processes.spawn(slot.role, self.boot, own_group=True, status=True)
                slot.notes = {}
                log.info("child.started", child=slot.role, child_pid=slot.child.pid)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.child is None or (status := slot.child.poll()) is None:
                continue
            ran = now - slot.child.started
            how = processes.describe_exit(status)
            if self.stopping_since is not None:
                log.info("child.stopped", child=slot.role, child_pid=slot.child.pid, exit=how)
            elif status == REFUSED_EXIT:
                self._give_up(slot, how, REFUSED_EXIT,
                              f"the {slot.role} refused the database (see its process.refused "
                              "line above); restarting cannot help")  # fmt: skip
                continue
            elif self._failed_to_boot(slot, status, ran):
                self._give_up(slot, how, 1,
                              f"the {slot.role} failed to start {slot.boot_failures} times "
                              "in a row (see its process.crashed lines above)")  # fmt: skip
                continue
            else:
                slot.failures = 1 if ran >= STABLE_SECONDS else slot.failures + 1
                delay = policy.backoff(slot.failures, 1.0, RESTART_CAP)
                slot.restart_at = now + delay
                log.error("child.died", child=slot.role, child_pid=slot.child.pid, exit=how,
                          restart_in=delay)  # fmt: skip
            self._forget(slot)

    def _forget(self, slot: _Slot) -> None:
        """Its child is gone: close our end of its status pipe."""
        if slot.child is not None:
            _close_status(slot.child)
        slot.child = None

    def _take_notes(self, slot: _Slot, fd: int) -> None:
        """Read what its child noted (roles/process/status.py), stamped with our clock."""
        notes, closed = read_notes(fd)
        now = time.monotonic()
        for note in notes:
            slot.notes[note] = now
            if note is Note.HEARTBEAT:  # a heartbeat that got through ends a fence
                slot.notes.pop(Note.FENCED, None)
        if closed and slot.child is not None:
            _close_status(slot.child)  # it is exiting; reaping will say how

    # --- probes (from the probe server's thread: they only read) -------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Alive: the loop turns and no role has used up its restarts (the supervisor then
        stops everything and exits 1). A role being restarted with backoff is alive."""
        now = time.monotonic()
        turning = now - self.turned < LOOP_STALLED
        alive = turning and self.exit_code == 0
        return alive, {"status": "ok" if alive else "failing", "loopTurning": turning,
                       "roles": [self._role_doc(s, now) for s in list(self.slots)]}  # fmt: skip

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: not stopping, every master cycled within 3 x MASTER_INTERVAL + 5 s and
        every worker heartbeated within WORKER_TIMEOUT/2 and is not fenced."""
        now = time.monotonic()
        roles = [self._role_doc(s, now) for s in list(self.slots)]
        ready = self.stopping_since is None and all(r["ready"] for r in roles)
        return ready, {"status": "ready" if ready else "not ready",
                       "stopping": self.stopping_since is not None, "roles": roles}  # fmt: skip

    def _role_doc(self, slot: _Slot, now: float) -> dict[str, Any]:
        child, notes = slot.child, dict(slot.notes)
        doc: dict[str, Any] = {"role": slot.role, "pid": child.pid if child else None,
                               "restarts": slot.failures}  # fmt: skip
        if slot.role == "master":
            within = 3 * self.settings.master_interval + CYCLE_SLACK
            last = notes.get(Note.CYCLE)
            doc["ready"] = child is not None and last is not None and now - last <= within
            doc["lastCycleSecondsAgo"] = None if last is None else round(now - last, 1)
        else:
            last = notes.get(Note.HEARTBEAT)
            fenced = Note.FENCED in notes
            fresh = last is not None and now - last <= self.settings.worker_timeout / 2
            doc["ready"] = child is not None and fresh and not fenced
            doc["fenced"] = fenced
            doc["lastHeartbeatSecondsAgo"] = None if last is None else round(now - last, 1)
        return doc

    def _give_up(self, slot: _Slot, how: str, exit_code: int, reason: str) -> None:
        """Stop the daemon in order, to exit with `exit_code`, instead of restarting."""
        log.error("supervisor.giving_up", child=slot.role, exit=how, reason=reason)
        self.exit_code = exit_code
        self._forget(slot)
        self._begin_stop(reason)

    def _failed_to_boot(self, slot: _Slot, status: int, ran: float) -> bool:
        """Count exits with an error soon after the start (not kills: those are signals);
        True once there were BOOT_FAILURES in a row. Restarting for ever would only hide
        a broken set-up behind a log line every 30 s."""
        slot.boot_failures = slot.boot_failures + 1 if status > 0 and ran < BOOT_SECONDS else 0
        return slot.boot_failures >= BOOT_FAILURES

    def _begin_stop(self, why: str) -> None:
        """Ask every child to stop gracefully (each has SHUTDOWN_GRACE)."""
        log.info("supervisor.stopping", reason=why, grace=self.settings.shutdown_grace)
        self.stopping_since = time.monotonic()
        for slot in self.slots:
            if slot.child:
                slot.child.signal(signal.SIGTERM)

    def _kill(self, reason: str) -> int:
        log.warning("supervisor.killing_children", reason=reason)
        children = [s.child for s in self.slots if s.child]
        for child in children:
            child.kill_group()  # with its consumers; their unfinished messages reappear in SQS
        processes.stop_all(children, 0)
        return 1


def _close_status(child: processes.Child) -> None:
    """Close our end of a child's status pipe, once."""
    if child.status_fd is not None:
        os.close(child.status_fd)
        child.status_fd = None
