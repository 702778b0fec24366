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
    me = psutil.Process()
    try:
        deadline = time.monotonic() + 10
        while len(me.children(recursive=True)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = {p.pid for p in me.children(recursive=True)}
        assert len(expected) == 4
        assert {p.pid for p in processes.descendants(me)} == expected
    finally:
        for proc in me.children(recursive=True):
            proc.kill()
        for child in started:
            child.wait()


def test_without_children_files_it_falls_back_to_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(processes, "_child_pids", lambda pid: None)
        assert [p.pid for p in processes.descendants(psutil.Process())] == [child.pid]
    finally:
        child.kill()
        child.wait()
