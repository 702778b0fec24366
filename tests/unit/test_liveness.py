"""Watch: liveness from how long a document stayed unchanged, on the observer's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.roles.master.liveness import Watch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_document_is_silent_since_it_last_changed_on_our_clock() -> None:
    watch = Watch()
    first = watch.observe("w", "beat-1", at(0))
    assert not first.changed and watch.silent("w", at(3)) == 3  # present, not seen beating
    watch.observe("w", "beat-1", at(3))
    assert watch.silent("w", at(4)) == 4  # unchanged: silence goes on
    again = watch.observe("w", "beat-2", at(5))
    assert again.changed and watch.silent("w", at(6)) == 1


def test_the_values_written_are_never_compared_with_our_clock() -> None:
    """A writer whose clock is a day off is alive as long as what it writes changes."""
    watch = Watch()
    skewed = [T0 - timedelta(days=1) + timedelta(seconds=i) for i in range(3)]
    for i, value in enumerate(skewed):
        watch.observe("w", value, at(i))
    assert watch.seen["w"].changed and watch.silent("w", at(2.5)) == 0.5


def test_documents_that_are_gone_are_forgotten() -> None:
    watch = Watch()
    watch.observe("a", 1, at(0))
    watch.observe("b", 1, at(0))
    watch.keep_only(["b"])
    assert set(watch.seen) == {"b"}
