"""Channel: whole JSON lines over a socket pair."""

from __future__ import annotations

import socket

import pytest

from orchestrator.roles.process.channel import Channel, ChannelClosed


def test_the_last_messages_before_the_end_of_the_stream_are_not_lost() -> None:
    """A consumer reports `done` and exits at once: the worker must read the report,
    whether or not the end of the stream arrived with it."""
    ours, theirs = socket.socketpair()
    sender, receiver = Channel(theirs), Channel(ours)
    sender.send({"type": "done", "n": 1})
    sender.send({"type": "done", "n": 2})
    sender.close()
    assert receiver.receive() == [{"type": "done", "n": 1}, {"type": "done", "n": 2}]
    with pytest.raises(ChannelClosed):
        receiver.receive()
    receiver.close()
