"""DlqScan with a stub SQS and a chosen clock: each message once, renewed while the scan
runs, handed back at once at the end."""

from __future__ import annotations

from typing import Any, cast

from orchestrator.backends.batches import SCAN_HIDE_SECONDS, DlqScan, ScanSqs
from orchestrator.models import SqsMessage


class StubDlq:
    """Answers receives from a script of message-id lists; records visibility changes."""

    def __init__(self, script: list[list[str]], clock: list[float], step: float) -> None:
        self.script = script
        self.clock = clock
        self.step = step  # how long each receive takes
        self.receipts = 0
        self.visibility: list[tuple[list[str], int]] = []

    def receive(self, url: str, n: int, wait: int, hide: int) -> list[SqsMessage]:
        self.clock[0] += self.step
        ids = self.script.pop(0) if self.script else []
        self.receipts += 1
        return [SqsMessage(i, f"{i}@{self.receipts}", "body") for i in ids[:n]]

    def set_visibility(self, url: str, receipts: list[str], seconds: int) -> int:
        self.visibility.append((receipts, seconds))
        return 0


def scan_with(script: list[list[str]], step: float, limit: int = 1000) -> tuple[DlqScan, StubDlq]:
    now = [0.0]
    stub = StubDlq(script, now, step)
    return DlqScan(cast(ScanSqs, stub), "url", limit, clock=lambda: now[0]), stub


def test_a_scan_renews_what_it_holds_and_hands_all_back_once() -> None:
    script = [[f"{b}-{i}" for i in range(10)] for b in range(6)]
    scan, stub = scan_with(script, step=SCAN_HIDE_SECONDS / 4)
    with scan:
        seen = [m.message_id for batch in scan.batches() for m in batch]
        scan.forget(["0-0"])  # deleted by the caller
    assert len(seen) == len(set(seen)) == 60
    # Each receive takes a quarter of the hide: the first batches are renewed as they
    # near their end.
    renewed = [r for rs, seconds in stub.visibility if seconds == SCAN_HIDE_SECONDS for r in rs]
    assert {f"0-{i}@1" for i in range(10)} <= set(renewed)
    assert not {f"5-{i}@6" for i in range(10)} & set(renewed)  # the last: not yet due
    handed = [r for receipts, seconds in stub.visibility if seconds == 0 for r in receipts]
    assert len(handed) == 59 and "0-0@1" not in handed


def test_a_scan_stops_when_a_message_comes_round_again() -> None:
    scan, stub = scan_with([["a", "b"], ["c", "a"], ["d"]], step=0.1)
    with scan:
        batches: list[Any] = [[m.message_id for m in b] for b in scan.batches()]
    assert batches == [["a", "b"], ["c"]]  # never "a" twice, and no "d"
    handed = [r for receipts, seconds in stub.visibility if seconds == 0 for r in receipts]
    assert sorted(handed) == ["a@2", "b@1", "c@2"]  # the latest receipt of each


def test_a_scan_takes_no_more_than_its_limit() -> None:
    scan, _ = scan_with([[f"{b}-{i}" for i in range(10)] for b in range(3)], step=0.1,
                        limit=15)  # fmt: skip
    with scan:
        assert sum(len(b) for b in scan.batches()) == 15
