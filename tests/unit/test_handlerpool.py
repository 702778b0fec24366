"""HandlerPool: a handler process that sends what its consumer cannot read is of no use:
it is killed, so that what it ran fails (and is retried) and another takes its place."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from orchestrator.roles.consumer.engine.flow import Flow
from orchestrator.roles.consumer.engine.handlerpool import HandlerPool
from orchestrator.roles.consumer.engine.params import FlowParams
from orchestrator.roles.process.channel import Channel
from orchestrator.roles.process.processes import Child


@pytest.mark.parametrize("line", [
    b'{"op": "Done", "id": 1, "failed": [], "error": null, "seconds": 0.1}\n',  # the old wire
    b'{"type": "work_done", "id": "1"}\n',
    b'{"type": "run_work", "id": 1, "batch": false, "messages": []}\n',  # the other way's
    b"not json\n",
])  # fmt: skip
def test_a_handler_process_that_is_not_understood_is_killed(line: bytes) -> None:
    ours, theirs = socket.socketpair()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pool = HandlerPool(Flow(FlowParams(limit=2, fifo=False, visibility=30)),
                       lambda: Child("handler", sleeper, Channel(ours)), 1)  # fmt: skip
    theirs.sendall(b'{"type": "handler_ready", "pid": 1}\n' + line)
    pool.start()
    deadline = time.monotonic() + 10
    while pool.report()[0]["exit"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.report() == [{"pid": sleeper.pid, "handled": 0, "failed": 0,
                              "exit": "signal SIGKILL"}]  # fmt: skip
    pool.close(kill=True)
    theirs.close()
