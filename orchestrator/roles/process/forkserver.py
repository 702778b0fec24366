"""Consumers forked from a fork server (CONSUMER_START=fork, docs/design.md §2).

A fresh interpreter costs a consumer ~0.5 s of imports and ~40 MB of its own memory.
Instead, a worker's consumers are forked by one single-threaded process that imported the
consumer's modules and parsed botocore's SQS model once (multiprocessing's fork server,
preloading roles/consumer/preload.py): a consumer starts in milliseconds and shares those
pages copy-on-write. Nothing with a thread, a socket or a lock is made before the fork:
the fork server holds no client; each consumer makes its own after it.

The boot document (secrets included) and the channel's socket reach the fork server
through its private Unix socket (mode 0600 in a 0700 folder), never argv. A consumer
forked this way is the fork server's child: its exit status comes back through the fork
server, which `Forked` reads like a Popen's.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import socket
import subprocess
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from orchestrator.roles.process.channel import Channel
from orchestrator.roles.process.processes import Child

# Imported by the fork server before its first fork (as module names: roles/process/
# imports no role). The entry is child.py, which the forked consumer runs.
PRELOAD = ["orchestrator.roles.process.child", "orchestrator.roles.consumer.preload"]
LOST_STATUS = 255  # multiprocessing's exit status for a child whose fork server died


class Forked:
    """A process forked from the fork server, seen through Popen's methods (Child.proc)."""

    def __init__(self, process: BaseProcess) -> None:
        self.process = process
        assert process.pid is not None  # started
        self.pid: int = process.pid
        try:
            self.created: float | None = psutil.Process(self.pid).create_time()
        except psutil.Error:
            self.created = None  # it ended already

    def poll(self) -> int | None:
        """Its exit status once it ended (negative: the signal), else None."""
        status = self.process.exitcode
        if status == LOST_STATUS:
            self._end_orphan()
        return status

    def _end_orphan(self) -> None:
        """multiprocessing says 255 when the fork server died: the status was lost with
        it, and the process may still run, unsupervised. SIGKILL it, so that it ended as
        the worker now believes (its messages come back after their visibility timeout)."""
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.pid)
            if proc.create_time() == self.created and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if (status := self.process.exitcode) is None:
            raise subprocess.TimeoutExpired(f"consumer {self.pid}", timeout or 0)
        return status

    def send_signal(self, sig: int) -> None:
        if self.process.exitcode is None:  # reported dead: its pid may be someone else's
            os.kill(self.pid, sig)


class ForkServer:
    """Forks consumers from one warm process (started on the first fork, and again if it
    died)."""

    def __init__(self) -> None:
        self.context: ForkServerContext = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        # Start it now: its imports (~0.5 s) overlap the worker's start, not a first fork
        # that would wait for them in the worker's loop.
        forkserver.ensure_running()

    def spawn(self, role: str, boot: dict[str, Any]) -> Child:
        """A forked `role` process with a channel to it (Child, like processes.spawn's)."""
        ours, theirs = socket.socketpair()
        try:
            process = self.context.Process(target=_entry, args=(role, boot, theirs),
                                           name=role, daemon=True)  # fmt: skip
            process.start()
        finally:
            theirs.close()
        return Child(role, Forked(process), Channel(ours))


def _entry(role: str, boot: dict[str, Any], channel: socket.socket) -> None:
    """What a forked process runs: child.py's `forked`, found by name (child.py imports
    the roles, and a worker imports this module: importing child here would be a circle).
    The fork server imported it already (PRELOAD)."""
    importlib.import_module(PRELOAD[0]).forked(role, boot, channel)


def available() -> bool:
    """Whether this platform can fork consumers from a server (Linux, macOS)."""
    return "forkserver" in multiprocessing.get_all_start_methods()

