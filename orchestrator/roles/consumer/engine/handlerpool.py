"""HandlerPool: the executor of a queue with `processes` > 1 (see executors.py).

Its handler processes (handlerproc.py) each run part of the
queue's concurrency: the Flow still decides what may start, a feeder thread
sends each work to the live process with the least running, and one reader
thread per process reports what comes back. A process that dies fails the
messages it was running (they are retried like any failure, so a message that
kills its process ends in the DLQ) and is replaced, with backoff when it keeps
dying; the job's document lists every process with its counts and how it ended.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from orchestrator import policy
from orchestrator.roles.consumer.engine import handlerproc
from orchestrator.roles.consumer.engine.executors import Fatal
from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.handlerproc import (
    HandlerExit,
    HandlerImportFailed,
    HandlerReady,
    RunWork,
    WorkDone,
)
from orchestrator.roles.consumer.engine.invoke import Result
from orchestrator.roles.consumer.engine.running import Work
from orchestrator.roles.process import processes
from orchestrator.roles.process.channel import ChannelClosed
from orchestrator.roles.process.codec import ProtocolError
from orchestrator.roles.process.processes import Child
from orchestrator.roles.process.protocol import Reason

log = structlog.get_logger()

READY_TIMEOUT = 30.0  # a handler process that has not imported its handler by then failed
RESPAWN_CAP = 30.0  # seconds between replacements of processes that keep dying


@dataclass(eq=False)
class _Proc:
    child: Child
    ready: bool = False
    retiring: bool = False
    running: dict[int, Work] = field(default_factory=dict)  # by the RunWork's id
    handled: int = 0
    failed: int = 0
    ended: str | None = None  # how it ended, once it has
    started: float = field(default_factory=time.monotonic)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self) -> dict[str, Any]:
        return {"pid": self.child.pid, "handled": self.handled, "failed": self.failed,
                "exit": self.ended}  # fmt: skip


class HandlerPool:
    """`processes` handler processes sharing one Flow's work."""

    def __init__(self, flow: Flow, spawn: Callable[[], Child], count: int) -> None:
        self.flow = flow
        self.spawn = spawn
        self.wanted = count
        self.procs: list[_Proc] = []
        self.cond = threading.Condition()
        self.retired = False
        self.fatal: Fatal | None = None
        self.next_id = 0
        self.deaths_in_a_row = 0
        self.respawn_at = 0.0
        self.feeder = threading.Thread(target=self._feed, name="handler-feeder", daemon=True)

    # --- the Executor interface -----------------------------------------------------

    def start(self) -> None:
        """Start the processes; wait until one is ready (or the handler failed to import)."""
        for _ in range(self.wanted):
            self._start_one()
        deadline = time.monotonic() + READY_TIMEOUT
        with self.cond:
            while not self.fatal and not any(p.ready for p in self.procs):
                if time.monotonic() >= deadline:
                    self.fatal = Fatal(Reason.HANDLER_IMPORT,
                                       f"no handler process was ready within {READY_TIMEOUT:.0f} s")
                    break
                self.cond.wait(0.1)
        self.feeder.start()

    def resize(self, limit: int, processes: int) -> None:
        with self.cond:
            self.wanted = processes
            live = [p for p in self.procs if p.ended is None and not p.retiring]
            for proc in live[processes:]:  # the newest go
                proc.retiring = True
                if not proc.running:
                    self._exit(proc)
        self.maintain()

    def maintain(self) -> Fatal | None:
        """Replace dead processes (backing off when they keep dying); the fatal error."""
        with self.cond:
            live = [p for p in self.procs if p.ended is None and not p.retiring]
            missing = self.wanted - len(live)
            now = time.monotonic()
            if missing > 0 and not self.retired and now >= self.respawn_at:
                for _ in range(missing):
                    self._start_one()
                if self.deaths_in_a_row:
                    self.respawn_at = now + policy.backoff(self.deaths_in_a_row, 2.0, RESPAWN_CAP)
            return self.fatal

    def retire(self) -> None:
        """Stop sending work; processes exit once what they run has finished."""
        with self.cond:
            self.retired = True
            for proc in self.procs:
                proc.retiring = True
                if not proc.running:
                    self._exit(proc)
            self.cond.notify_all()
        with self.flow.lock:
            self.flow.handoff.notify_all()  # the feeder may be waiting for work

    def close(self, kill: bool) -> None:
        """End every process: wait for them after `retire`, or kill them (`kill`)."""
        self.retire()
        children = [p.child for p in self.procs if p.child.poll() is None]
        if kill:
            for child in children:
                child.signal(signal.SIGKILL)
        processes.stop_all(children, grace=5.0)

    def report(self) -> list[dict[str, Any]]:
        with self.cond:
            return [p.report() for p in self.procs]

    # --- processes ------------------------------------------------------------------------

    def _start_one(self) -> None:
        proc = _Proc(self.spawn())
        self.procs.append(proc)
        threading.Thread(target=self._read, args=(proc,), name=f"handler-reader-{proc.child.pid}",
                         daemon=True).start()  # fmt: skip
        log.info("handler_process.started", handler_pid=proc.child.pid)

    def _exit(self, proc: _Proc) -> None:
        self._send(proc, HandlerExit())

    def _feed(self) -> None:
        """Send each work that may start to the live process with the least running."""
        while True:
            work = self.flow.wait_for_work(lambda: self.retired)
            if work is None:
                return
            with self.cond:
                proc = self._least_busy()
                while proc is None and not self.retired and not self.fatal:
                    self.cond.wait(0.5)  # every process is starting or was replaced
                    proc = self._least_busy()
            if proc is None:
                self.flow.finished(work, Result(frozenset(h.message_id for h in work.messages),
                                                "handler processes stopped", 0.0))  # fmt: skip
            else:
                self._dispatch(proc, work)

    def _dispatch(self, proc: _Proc, work: Work) -> None:
        with self.cond:
            if proc.ended is not None:  # it died meanwhile, its reader already collected
                gone = f"handler process {proc.child.pid} died: {proc.ended}"
            else:
                gone = None
                self.next_id += 1
                proc.running[self.next_id] = work
                run = RunWork(self.next_id, work.batch,
                              tuple(handlerproc.wire(h.message) for h in work.messages))
        if gone is not None:
            self.flow.finished(work, Result(frozenset(h.message_id for h in work.messages),
                                            gone, 0.0))  # fmt: skip
            return
        self._send(proc, run)

    def _send(self, proc: _Proc, message: handlerproc.ToHandler) -> None:
        """One message to a process; the feeder and its reader both send."""
        assert proc.child.channel is not None
        with proc.send_lock, contextlib.suppress(ChannelClosed):  # died: its reader cleans up
            proc.child.channel.send(handlerproc.encode(message))

    def _least_busy(self) -> _Proc | None:
        live = [p for p in self.procs if p.ready and not p.retiring and p.ended is None]
        return min(live, key=lambda p: len(p.running)) if live else None

    def _read(self, proc: _Proc) -> None:
        assert proc.child.channel is not None
        try:
            while True:
                for doc in proc.child.channel.read_blocking():
                    message = handlerproc.decode(doc)
                    if isinstance(message, RunWork | HandlerExit):
                        raise ProtocolError(f"a handler process sent {message.type!r}")
                    self._on_message(proc, message)
        except ChannelClosed:
            pass
        except ProtocolError as exc:  # a bug on one side: this process is of no use
            log.error("handler_process.bad_message", handler_pid=proc.child.pid, error=str(exc))
            proc.child.signal(signal.SIGKILL)  # what it ran fails and is retried (_ended)
        self._ended(proc)

    def _on_message(self, proc: _Proc, message: handlerproc.FromHandler) -> None:
        if isinstance(message, HandlerReady):
            with self.cond:
                proc.ready = True
                self.cond.notify_all()
        elif isinstance(message, HandlerImportFailed):
            with self.cond:
                self.fatal = Fatal(Reason.HANDLER_IMPORT, message.error)
                self.cond.notify_all()
        elif isinstance(message, WorkDone):
            with self.cond:
                work = proc.running.pop(message.id, None)
                if work is None:
                    return
                failed = len(message.failed)
                proc.handled += len(work.messages) - failed
                proc.failed += failed
                self.deaths_in_a_row = 0
                if proc.retiring and not proc.running:
                    self._exit(proc)
            self.flow.finished(work, Result(frozenset(message.failed), message.error,
                                            message.seconds, message.backoff,
                                            message.retry_after, message.trace))  # fmt: skip
            # The slot it freed goes straight back to it: no hop through the feeder.
            if not (proc.retiring or self.retired) and (follow := self.flow.take()) is not None:
                self._dispatch(proc, follow)

    def _ended(self, proc: _Proc) -> None:
        """Its channel closed: collect the exit, fail what it ran, let maintain replace it."""
        try:
            status = proc.child.proc.wait(timeout=5)
            how = processes.describe_exit(status)
        except Exception:  # still running with a closed channel: it is of no use
            proc.child.signal(signal.SIGKILL)
            how = "channel closed"
        with self.cond:
            proc.ended = how
            lost = list(proc.running.values())
            proc.running.clear()
            expected = proc.retiring and not lost
            if not expected:
                self.deaths_in_a_row += 1
            self.cond.notify_all()
        if expected:
            log.info("handler_process.exited", handler_pid=proc.child.pid)
            return
        log.warning("handler_process.died", handler_pid=proc.child.pid, exit=how,
                    running=sum(len(w.messages) for w in lost))  # fmt: skip
        error = f"handler process {proc.child.pid} died: {how}"
        with self.cond:
            proc.failed += sum(len(w.messages) for w in lost)
        for work in lost:
            self.flow.finished(work, Result(frozenset(h.message_id for h in work.messages),
                                            error, time.monotonic() - work.started))  # fmt: skip
        if proc.child.channel is not None:
            proc.child.channel.close()
