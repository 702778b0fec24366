"""Channel: whole JSON lines over a socket pair."""

from __future__ import annotations

import socket

import pytest

from orchestrator.roles.process import protocol
from orchestrator.roles.process.channel import Channel, ChannelClosed
from orchestrator.roles.process.codec import ProtocolError


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


def test_a_line_that_is_not_json_is_handed_on_for_the_codec_to_refuse() -> None:
    """It used to raise out of `receive` and take the lines after it with it."""
    ours, theirs = socket.socketpair()
    receiver = Channel(ours)
    theirs.sendall(b'{"type": "exit"}\n{half a line\n{"type": "abort", "job_id": null}\n')
    got = receiver.receive()
    assert got == [{"type": "exit"}, b"{half a line", {"type": "abort", "job_id": None}]
    with pytest.raises(ProtocolError, match="not JSON"):
        protocol.decode(got[1])
    theirs.close()
    receiver.close()
