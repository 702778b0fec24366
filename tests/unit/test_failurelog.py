"""FailureLog: the failures an assignment noted since its last report, as FailureNotes."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.models import MAX_FAILURE_BODY_BYTES, FailureNote
from orchestrator.roles.consumer.engine.failurelog import MAX_KEPT, FailureLog

AT = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


def test_a_failure_is_noted_with_its_error_split_from_its_type() -> None:
    log = FailureLog("orders", keep_bodies=False, now=lambda: AT)
    log.note("m-1", 3, "the body", "ValueError: bad: total", "Traceback …")
    log.note("m-2", 1, "the body", "handler process 7 died: killed by SIGKILL", None)
    log.note("m-3", 1, "the body", None, None)
    assert log.take() == (
        FailureNote("orders", "m-1", 3, "ValueError", "bad: total", "Traceback …", AT),
        FailureNote("orders", "m-2", 1, "handler process 7 died",
                    "killed by SIGKILL", "", AT),
        FailureNote("orders", "m-3", 1, "failed", "failed", "", AT),
    )
    assert log.take() == ()  # taken once


def test_the_body_is_kept_only_when_the_queue_asks_and_cut_to_size() -> None:
    huge = "b" * (MAX_FAILURE_BODY_BYTES + 10)
    kept = FailureLog("q", keep_bodies=True, now=lambda: AT)
    kept.note("m", 1, huge, "E: x", None)
    [note] = kept.take()
    assert note.body is not None and note.body.startswith("b" * 1000)
    assert note.body.endswith("…[truncated 10 bytes]")
    dropped = FailureLog("q", keep_bodies=False, now=lambda: AT)
    dropped.note("m", 1, huge, "E: x", None)
    assert [n.body for n in dropped.take()] == [None]


def test_a_storm_keeps_the_first_notes_of_each_report() -> None:
    log = FailureLog("q", keep_bodies=False, now=lambda: AT)
    for i in range(MAX_KEPT + 5):
        log.note(f"m-{i}", 1, "", "E: x", None)
    notes = log.take()
    assert len(notes) == MAX_KEPT and notes[-1].message_id == f"m-{MAX_KEPT - 1}"
    log.note("next", 1, "", "E: x", None)
    assert [n.message_id for n in log.take()] == ["next"]
