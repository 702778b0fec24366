"""The backlog's wait as the API reads it from MongoDB (docs/design.md §10)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.config import Settings
from orchestrator.http.fleet import Fleet
from orchestrator.models import FleetNeed, QueueDepth, utcnow

pytestmark = pytest.mark.timeout(30)


def test_a_wait_stamped_by_a_master_whose_clock_runs_ahead_is_never_negative(
    settings: Settings, store: Store, sqs: Sqs
) -> None:
    now = utcnow()
    ahead = now + timedelta(seconds=30)  # the leading master's clock, 30 s ahead of ours
    store.save_depths({"http://sqs/q": (QueueDepth(3, 0, 0), ahead)})
    store.save_waiting({"http://sqs/q": ahead})
    store.save_fleet_need(FleetNeed(1, 1, 2, 2), ahead)
    assert Fleet(settings, store, sqs).need()["largestWaitSeconds"] == 0.0
    store.save_waiting({"http://sqs/q": now - timedelta(seconds=12)})
    assert Fleet(settings, store, sqs).need()["largestWaitSeconds"] >= 12
