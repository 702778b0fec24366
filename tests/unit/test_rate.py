"""The rate limit's bucket and the adaptive concurrency, with chosen times."""

from __future__ import annotations

import pytest

from orchestrator.roles.consumer.engine.rate import Aimd, Bucket


def starts_per_second(rate: float, seconds: int, batch: int = 1) -> list[int]:
    """Start whenever a token allows, every millisecond: starts in each 1 s window."""
    bucket, counts = Bucket(rate, 0.0), [0] * seconds
    for ms in range(seconds * 1000):
        now = ms / 1000
        while bucket.take(batch, now):
            counts[int(now)] += batch
    return counts


@pytest.mark.parametrize("rate", [0.5, 1, 7.5, 50, 1000])
def test_starts_keep_to_the_rate_in_every_second(rate: float) -> None:
    counts = starts_per_second(rate, 20)
    assert all(c <= max(1, rate) + 1 for c in counts)  # a burst of at most max(1, rate)
    assert sum(counts) == pytest.approx(rate * 20, abs=max(1, rate * 0.02) + 1)


def test_it_starts_with_one_token_not_a_burst() -> None:
    """The assignment before may have spent the queue's tokens on another worker."""
    bucket = Bucket(100, 0.0)
    assert bucket.take(1, 0.0) and not bucket.take(1, 0.0)
    assert bucket.wait(1, 0.0) == pytest.approx(0.01)


def test_a_new_rate_applies_at_once_and_keeps_no_larger_burst() -> None:
    bucket = Bucket(100, 0.0)
    bucket.take(1, 0.0)
    bucket.set_rate(2, 10.0)  # 10 s of tokens at 100/s, capped to the new burst
    assert bucket.tokens == 2 and bucket.largest() == 2


def test_aimd_halves_on_failures_at_most_once_a_second_and_grows_back() -> None:
    aimd = Aimd(20, 0.0)
    t = 0.0
    for _ in range(200):  # half of the messages fail, 20 a second
        t += 0.05
        aimd.record(t, 1 if int(t * 20) % 2 else 0, 0 if int(t * 20) % 2 else 1, False)
        if t >= 10:
            break
    assert aimd.effective <= 20 / 4  # within 10 s
    cut_at = t
    while aimd.effective < 20:  # healed: one more a second
        t += 0.05
        aimd.record(t, 1, 0, False)
    assert t - cut_at <= 30


def test_aimd_halves_on_backoff_at_once_and_not_twice_in_a_second() -> None:
    aimd = Aimd(16, 0.0)
    assert aimd.record(0.1, 0, 1, backoff=True) and aimd.effective == 8
    assert not aimd.record(0.5, 0, 1, backoff=True) and aimd.effective == 8
    assert aimd.record(1.2, 0, 1, backoff=True) and aimd.effective == 4
    for t in range(10):
        aimd.record(2.0 + t, 0, 1, backoff=True)
    assert aimd.effective == 1  # never below one


def test_aimd_cuts_only_after_a_new_failure() -> None:
    """Failures still in the 5 s window after the downstream healed cut no more."""
    aimd = Aimd(10, 0.0)
    for i in range(5):
        aimd.record(0.1 * i, 0, 1, False)
    assert aimd.effective == 5  # cut at the fifth failure
    assert not aimd.record(1.2, 1, 0, False)  # the window still says 83 % failed
    assert aimd.effective == 5
