"""processes.descendants: a consumer's handler processes found from the children files of
its threads, as psutil's scan of every process would find them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil
import pytest

from orchestrator.roles.process import processes

pytestmark = pytest.mark.timeout(30)

# A child that starts a grandchild, which starts nothing; both sleep until killed.
FAMILY = ("import subprocess, sys, time; "
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "time.sleep(60)")  # fmt: skip


def test_the_whole_family_is_found_whichever_thread_started_it() -> None:
    started: list[subprocess.Popen[bytes]] = []
    # one child from this thread, one from another (Linux lists children per thread)
    started.append(subprocess.Popen([sys.executable, "-c", FAMILY]))
    other = threading.Thread(target=lambda: started.append(
        subprocess.Popen([sys.executable, "-c", FAMILY])))  # fmt: skip
    other.start()
    other.join()
    me = psutil.Process()  # (under xdist it may have other children: servers)

    def family() -> set[int]:
        return {p.pid for c in started for p in [psutil.Process(c.pid),
                                                  *psutil.Process(c.pid).children()]}  # fmt: skip

    try:
        deadline = time.monotonic() + 10
        while len(family()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(family()) == 4
        found = {p.pid for p in processes.descendants(me)}
        assert family() <= found and found == {p.pid for p in me.children(recursive=True)}
    finally:
        for pid in family():
            psutil.Process(pid).kill()
        for child in started:
            child.wait()


def test_without_children_files_it_falls_back_to_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(processes, "_child_pids", lambda pid: None)
        found = {p.pid for p in processes.descendants(psutil.Process())}
        assert child.pid in found
        assert found == {p.pid for p in psutil.Process().children(recursive=True)}
    finally:
        child.kill()
        child.wait()
