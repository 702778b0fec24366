"""Liveness from durations on this host's own clock, never from comparing two clocks.

A worker's heartbeat and the master lease are documents their owner rewrites on
every renewal. An observer does not compare the times written there with its own
clock (hosts' clocks disagree, by seconds or minutes); it notes, on its own clock,
when it last saw the document change, and judges by how long it has not. Hosts
whose clocks are off by any constant amount therefore agree on who is alive.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Sighting:
    token: Hashable  # what changes with every renewal
    since: datetime  # when (on the observer's clock) it was first seen as it is now
    changed: bool  # seen to change at least once: renewed while we watched


class Watch:
    """When each watched document last changed, as this observer saw it."""

    def __init__(self) -> None:
        self.seen: dict[str, Sighting] = {}

    def observe(self, key: str, token: Hashable, now: datetime) -> Sighting:
        before = self.seen.get(key)
        if before is None:
            sighting = Sighting(token, now, False)
        elif before.token != token:
            sighting = Sighting(token, now, True)
        else:
            sighting = before
        self.seen[key] = sighting
        return sighting

    def silent(self, key: str, now: datetime) -> float:
        """Seconds since the document last changed (or was first seen)."""
        return (now - self.seen[key].since).total_seconds()

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget documents that are gone."""
        wanted = set(keys)
        for key in set(self.seen) - wanted:
            del self.seen[key]
