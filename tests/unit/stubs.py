"""Stand-ins for the project's own process interfaces, for unit tests of roles (no
processes started): a consumer process whose channel the test reads and writes."""

from __future__ import annotations

import itertools
import signal
from dataclasses import dataclass, field
from typing import Any

from orchestrator.roles.process import protocol
from orchestrator.roles.process.channel import ChannelClosed

_pids = itertools.count(1000)


@dataclass
class StubChannel:
    sent: list[dict[str, Any]] = field(default_factory=list)  # what the worker sent
    inbox: list[dict[str, Any]] = field(default_factory=list)  # what the consumer reports
    closed: bool = False

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise ChannelClosed("closed")
        self.sent.append(message)

    def receive(self) -> list[dict[str, Any]]:
        out, self.inbox = self.inbox, []
        return out

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[protocol.ConsumerNote]:
        return [protocol.decode(doc) for doc in self.sent]


@dataclass
class StubProcess:
    """A consumer process: `report` what it says, `exit` to end it."""

    pid: int = field(default_factory=lambda: next(_pids))
    channel: StubChannel = field(default_factory=StubChannel)
    status: int | None = None
    signals: list[signal.Signals] = field(default_factory=list)
    tree_killed: bool = False
    rss_mb: float = 50.0

    def report(self, message: protocol.ToWorker) -> None:
        self.channel.inbox.append(protocol.encode(message))

    def exit(self, status: int) -> None:
        self.status = status

    def poll(self) -> int | None:
        return self.status

    def signal(self, sig: signal.Signals) -> None:
        self.signals.append(sig)
        if sig is signal.SIGKILL:
            self.status = -9

    def kill_tree(self) -> None:
        self.tree_killed = True
        self.signal(signal.SIGKILL)

    def stats(self) -> tuple[float, float]:
        return self.rss_mb, 1.0

    def largest_rss(self) -> float:
        return self.rss_mb

    def wait(self, timeout: float) -> int | None:
        return self.status


class Spawner:
    """Makes StubProcesses and keeps them, newest last."""

    def __init__(self) -> None:
        self.made: list[StubProcess] = []

    def __call__(self) -> StubProcess:
        self.made.append(StubProcess())
        return self.made[-1]
