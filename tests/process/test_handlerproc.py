"""A handler process driven directly through its channel: it answers the work it is sent,
and a message it cannot read ends it with exit 1 after logging `handler_process.bad_message`
(its consumer then fails what it ran and replaces it). It used to crash on a KeyError
(exit 70 with a traceback), or, with an async handler, log it and carry on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator import config
from orchestrator.config import Endpoints
from orchestrator.models import SqsMessage
from orchestrator.roles.consumer.engine import handlerproc
from orchestrator.roles.process import processes
from orchestrator.roles.process.processes import Child
from tests.process.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def handler_process() -> Iterator[Child]:
    """A handler process for the built-in `noop` handler (it needs no servers)."""
    boot = processes.boot_document(config.load("development", {}), Endpoints("mongodb://x", None),
                                   handler="orchestrator.handlers:noop", queueName="q",
                                   queueUrl="https://sqs/1/q", jobId="j")  # fmt: skip
    child = processes.spawn("handler", boot, channel=True)
    yield child
    processes.stop_all([child], 5)


def next_message(child: Child) -> handlerproc.FromHandler:
    assert child.channel
    [doc] = wait_for(lambda: child.channel.receive() if child.channel else None, 30,
                     "a message from the handler process", interval=0.05)  # fmt: skip
    message = handlerproc.decode(doc)
    assert not isinstance(message, handlerproc.RunWork | handlerproc.HandlerExit)
    return message


def test_work_is_answered_and_what_is_not_a_message_ends_the_process(
    handler_process: Child,
) -> None:
    assert isinstance(next_message(handler_process), handlerproc.HandlerReady)
    assert handler_process.channel
    message = handlerproc.wire(SqsMessage("m-1", "r-1", "{}"))
    handler_process.channel.send(handlerproc.encode(handlerproc.RunWork(1, False, (message,))))
    done = next_message(handler_process)
    assert isinstance(done, handlerproc.WorkDone) and (done.id, done.failed) == (1, ())
    handler_process.channel.send({"op": "Run", "id": 2})  # the old wire: not a message now
    assert wait_for(lambda: handler_process.poll(), 30, "the process to exit") == 1
