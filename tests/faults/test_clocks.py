"""Hosts whose clocks are off (Debian's faketime): liveness must not trust them.

A worker and a standby master run with their clocks 20 s off, one behind and one
ahead (both ways round). Nothing alive is judged dead, the lease changes hands
only when its holder stops renewing it, and a dead worker is still found within
WORKER_TIMEOUT + 2 s. Test settings: WORKER_TIMEOUT 5 s, LEASE_TTL 4 s.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Cluster, event_time, lost
from tests.process.conftest import holds_for, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.faults, pytest.mark.faketime]
# libfaketime shifts the monotonic clock too (with FAKETIME_DONT_FAKE_MONOTONIC=1,
# Python's time.sleep fails with EINVAL): it still advances at the true rate.


def skewed(seconds: int) -> tuple[str, ...]:
    return ("faketime", "-f", f"{seconds:+d}s")


@pytest.mark.parametrize("worker_offset", [-20, 20])
def test_clocks_20_s_off_judge_nobody_wrongly(cluster: Cluster, worker_offset: int) -> None:
    standby_offset = -worker_offset
    m1 = cluster.start("m1", "M")
    wait_for(lambda: m1.events("master.leading"), 30, "m1 to lead")
    m2 = cluster.start("m2", "M", prefix=skewed(standby_offset))
    w1 = cluster.start("w1", "W", prefix=skewed(worker_offset))
    cluster.admin.create("k", handler="tests.handlers:slow_record", concurrency=2)
    cluster.admin.send("k", 100)
    wait_for(lambda: not lost(cluster.ledger(), {"k": 100}), 90, "every message handled")

    # Alive and renewing: nobody is judged dead, the lease stays where it is.
    holds_for(lambda: not m1.events("worker.dead") and not m2.events("master.leading"), 8,
              "no false death, no lease taken early")  # fmt: skip

    cluster.daemons["m1"].kill_tree()
    killed = time.time()
    [took] = wait_for(lambda: m2.events("master.leading"), 15, "the standby to lead")
    lead_after = event_time(took, standby_offset) - killed
    assert lead_after <= 4 + 2, f"the standby led {lead_after:.1f} s after the kill (TTL 4)"

    cluster.admin.create("k2", handler="tests.handlers:slow_record")
    cluster.admin.send("k2", 20)  # the new leader assigns it, to the skewed worker
    wait_for(lambda: not lost(cluster.ledger(), {"k2": 20}), 60, "the new work handled")
    holds_for(lambda: not m2.events("worker.dead"), 3, "the skewed worker stays alive")

    w1.kill_tree()
    killed = time.time()
    [dead] = wait_for(lambda: m2.events("worker.dead"), 15, "the dead worker to be found")
    found_after = event_time(dead, standby_offset) - killed
    assert found_after <= 5 + 2, f"found {found_after:.1f} s after the kill (WORKER_TIMEOUT 5)"
