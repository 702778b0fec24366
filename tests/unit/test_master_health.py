"""What a master's /health says, from its own state (its store is never reached here)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from orchestrator import config
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.errors import ServiceUnavailable
from orchestrator.models import utcnow
from orchestrator.roles.master.master import STALLED_SECONDS, Master


def make_master() -> tuple[Master, Store]:
    settings = config.load("development", {})
    store = Store("mongodb://127.0.0.1:9", "unused", job_ttl_days=1, timeout_ms=100)
    return Master(settings, store, Sqs("http://127.0.0.1:9", "us-east-1", "t", "t")), store


def test_a_master_whose_loop_stopped_turning_is_stalled_and_not_leading() -> None:
    master, store = make_master()
    master.leading = True
    master.lease_valid_until = utcnow() + timedelta(seconds=5)
    doc = master.health(store)
    assert (doc["status"], doc["leader"], doc["mongodb"]) == ("ok", True, False)
    master.last_cycle = time.monotonic() - STALLED_SECONDS - 1
    assert master.health(store)["status"] == "stalled"


def test_leading_is_claimed_only_while_the_lease_is_valid() -> None:
    master, store = make_master()
    master.leading = True  # the loop has not yet noticed that its lease ran out
    master.lease_valid_until = utcnow() - timedelta(seconds=1)
    assert master.health(store)["leader"] is False


def test_a_failed_lease_renewal_fails_the_cycle_so_that_no_recovery_is_claimed() -> None:
    master, _ = make_master()  # its MongoDB never answers
    master.leading = True
    now = utcnow()
    master.lease_valid_until = now + timedelta(seconds=5)
    with pytest.raises(ServiceUnavailable):  # the loop logs an outage, not a recovery
        master.tick(now)
    assert master.leading  # the lease is still valid: it goes on leading meanwhile
    master.next_renewal = None
    with pytest.raises(ServiceUnavailable):
        master.tick(now + timedelta(seconds=6))
    assert not master.leading  # it ran out
