"""Spawn, reap, measure and stop child processes.

Children are fresh interpreters (`python -P -m orchestrator.roles.process.child ROLE`), never
forks, so no client or lock is carried across. Their boot document (settings,
endpoints, role arguments) arrives on stdin: unlike argv or the environment,
a pipe is not visible to other users through `ps` or /proc, and it carries
secrets.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from orchestrator.config import Endpoints, Settings
from orchestrator.roles.process.channel import Channel

PR_SET_NAME = 15  # prctl(2)


class Handle(Protocol):
    """A started process as Child drives it: a Popen, or forkserver.Forked."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass
class Child:
    """A running child process, with its channel when it has one."""

    role: str
    proc: Handle
    channel: Channel | None = None
    status_fd: int | None = None  # our end of its status pipe (roles/process/status.py), if any
    started: float = field(default_factory=time.monotonic)
    _stats: psutil.Process | None = None
    _kids: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit status once it has ended (reaping it), else None."""
        return self.proc.poll()

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """Its exit status once it ended within `timeout` seconds, else None."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL the child and everything in its process group (its own consumers)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def stats(self) -> tuple[float, float]:
        """(RSS in MB, CPU percent since the previous call) of the process and its own
        children (a consumer's handler processes); zeros once it is gone."""
        try:
            if self._stats is None:
                self._stats = psutil.Process(self.pid)
                self._stats.cpu_percent(None)
            procs = [self._stats, *self._children(self._stats)]
        except psutil.Error:
            return 0.0, 0.0
        rss = cpu = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # a child may end meanwhile
                rss += proc.memory_info().rss / 1_048_576
                cpu += proc.cpu_percent(None)
        return round(rss, 1), round(cpu, 1)

    def largest_rss(self) -> float:
        """The RSS in MB of the largest of the process and its children (each of a
        consumer's handler processes is bounded alone); 0 once it is gone."""
        try:
            me = psutil.Process(self.pid)
            procs = [me, *descendants(me)]
        except psutil.Error:
            return 0.0
        largest = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # a child may end meanwhile
                largest = max(largest, proc.memory_info().rss / 1_048_576)
        return round(largest, 1)

    def kill_tree(self) -> None:
        """SIGKILL the process and its children (a consumer's handler processes)."""
        with contextlib.suppress(psutil.Error):
            for proc in descendants(psutil.Process(self.pid)):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        self.signal(signal.SIGKILL)

    def _children(self, parent: psutil.Process) -> list[psutil.Process]:
        """Its children, the same psutil objects from call to call (CPU is a delta)."""
        current = {p.pid: p for p in descendants(parent)}
        for pid in set(self._kids) - set(current):
            del self._kids[pid]
        for pid, proc in current.items():
            if pid not in self._kids:
                with contextlib.suppress(psutil.Error):
                    proc.cpu_percent(None)
                self._kids[pid] = proc
        return list(self._kids.values())


def descendants(parent: psutil.Process) -> list[psutil.Process]:
    """The children of `parent`, theirs, and so on. From each thread's
    /proc/PID/task/TID/children where Linux has them: psutil's children() reads the
    stat file of every process on the machine, which was a third of a worker's CPU
    (docs/benchmarks.md, issue 23)."""
    found: list[psutil.Process] = []
    todo = [parent.pid]
    while todo:
        pid = todo.pop()
        kids = _child_pids(pid)
        if kids is None:  # no children files here: psutil's scan
            return parent.children(recursive=True)
        for kid in kids:
            with contextlib.suppress(psutil.Error):  # ended meanwhile
                found.append(psutil.Process(kid))
                todo.append(kid)
    return found


def _child_pids(pid: int) -> list[int] | None:
    """Direct children of `pid` (of any of its threads); None without children files."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []  # it ended
    except OSError:
        return None
    pids: list[int] = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None  # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return pids


def boot_document(settings: Settings, endpoints: Endpoints, **extra: Any) -> dict[str, Any]:
    return {
        "settings": dataclasses.asdict(settings),
        "endpoints": dataclasses.asdict(endpoints),
        **extra,
    }


def read_boot_document() -> tuple[Settings, Endpoints, dict[str, Any]]:
    return parse_boot_document(json.load(sys.stdin))


def parse_boot_document(boot: dict[str, Any]) -> tuple[Settings, Endpoints, dict[str, Any]]:
    boot = dict(boot)
    return Settings(**boot.pop("settings")), Endpoints(**boot.pop("endpoints")), boot


def spawn(
    role: str, boot: dict[str, Any], *, channel: bool = False, own_group: bool = False,
    status: bool = False,
) -> Child:
    """Start `python -m orchestrator.roles.process.child ROLE`, hand it `boot`, optionally
    with a channel and a status pipe (roles/process/status.py).

    `own_group` puts it in a process group of its own, so that a Ctrl-C on the
    terminal reaches only the supervisor, which then stops children in order.
    """
    ours = theirs = None
    passed: list[int] = []
    if channel:
        ours, theirs = socket.socketpair()
        boot = {**boot, "channel_fd": theirs.fileno()}
        passed.append(theirs.fileno())
    status_read = status_write = None
    if status:
        status_read, status_write = os.pipe()
        os.set_blocking(status_read, False)
        boot = {**boot, "status_fd": status_write}
        passed.append(status_write)
    proc = subprocess.Popen(
        # -P: the working directory is not put on sys.path, so what imports (a handler)
        # never depends on where the daemon was started (HANDLER_PYTHONPATH says where).
        [sys.executable, "-P", "-m", "orchestrator.roles.process.child", role],
        stdin=subprocess.PIPE,
        pass_fds=tuple(passed),
        process_group=0 if own_group else None,
    )
    if theirs:
        theirs.close()
    if status_write is not None:
        os.close(status_write)
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died at once: reaping will say how
        proc.stdin.write(json.dumps(boot).encode())
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    return Child(role, proc, Channel(ours) if ours else None, status_fd=status_read)


def describe_exit(status: int) -> str:
    """'exit code 3' or 'signal SIGKILL', from a Popen return code."""
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit code {status}"


class Stoppable(Protocol):
    """A child process as stop_all sees it (Child, or a consumer pool's process)."""

    def signal(self, sig: signal.Signals) -> None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None: ...


def stop_all(children: Sequence[Stoppable], grace: float) -> None:
    """TERM every child, reap until `grace` has passed, KILL the rest, reap once more."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(c.poll() is None for c in children):
        time.sleep(0.05)
    for child in children:
        if child.poll() is None:
            child.signal(signal.SIGKILL)
    for child in children:
        child.wait(timeout=5)


def name_process(name: str) -> None:
    """Set what `ps -o comm`, top and psutil's name() show for this process (Linux; at most
    15 bytes): a forked process keeps its fork server's command line."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def parent_alive(original_ppid: int) -> bool:
    """False once this process was orphaned (re-parented away from its supervisor)."""
    return os.getppid() == original_ppid
