"""The codec of every process boundary: each registered message survives a round trip as
a JSON line; whatever is not a message of the channel is a ProtocolError; a handler's
failure travels as the FailureNote it was noted as."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from orchestrator.models import FailureNote, SqsMessage
from orchestrator.roles.consumer.engine import handlerproc
from orchestrator.roles.consumer.engine.failurelog import FailureLog
from orchestrator.roles.process import protocol
from orchestrator.roles.process.codec import Codec, ProtocolError
from orchestrator.roles.process.protocol import Live, Reason

AT = datetime(2026, 12, 7, 20, 0, 0, 123000, tzinfo=UTC)
NOTE = FailureNote("orders", "m-1", 2, "ValueError", "bad total", "Traceback …", AT, None)
LIVE = Live(4, paused=True, processes=2, batch_size=5, batch_window=0.5, rate_limit=2.5,
            adaptive=True)  # fmt: skip
WIRED = handlerproc.wire(SqsMessage("m-1", "r-1", "{}", {"ApproximateReceiveCount": "2"},
                                    {"blob": {"DataType": "Binary",
                                              "BinaryValue": b"\x00\xff"}}))  # fmt: skip
# One of each message of each boundary (test_every_registered_type_is_here checks).
EXAMPLES: list[tuple[Codec[Any], Any]] = [
    (protocol.CODEC, protocol.Assign("j", "q", "https://sqs/1/q", "app:handle", 30, LIVE, True,
                                     "eu-west-1", "arn:aws:iam::1:role/r")),
    (protocol.CODEC, protocol.Retune("j", LIVE)),
    (protocol.CODEC, protocol.Stop(None, Reason.SHUTDOWN)),
    (protocol.CODEC, protocol.Abort("j")),
    (protocol.CODEC, protocol.Exit()),
    (protocol.CODEC, protocol.Started("j", 12, {"sqs": {"ReceiveMessage": 2}})),
    (protocol.CODEC, protocol.Progress("j", 5, 1, None, 3, 2, (NOTE,))),
    (protocol.CODEC, protocol.Done("j", 5, 1, Reason.ABANDONED, 2, "stuck",
                                   ({"pid": 7, "handled": 5, "failed": 1, "exit": None},),
                                   {"fleet": {"assignments": 1}}, (NOTE, NOTE), 3)),
    (handlerproc.CODEC, handlerproc.RunWork(1, True, (WIRED,))),
    (handlerproc.CODEC, handlerproc.HandlerExit()),
    (handlerproc.CODEC, handlerproc.HandlerReady(42)),
    (handlerproc.CODEC, handlerproc.HandlerImportFailed("no module named app")),
    (handlerproc.CODEC, handlerproc.WorkDone(1, ("m-1",), "ValueError: x", 0.25, True, 3.0,
                                             "Traceback …")),
]  # fmt: skip


def line(codec: Codec[Any], message: Any) -> bytes:
    """The message as the channel writes it."""
    return json.dumps(codec.encode(message)).encode() + b"\n"


def test_every_registered_type_is_here() -> None:
    for codec in (protocol.CODEC, handlerproc.CODEC):
        shown = {type(m) for c, m in EXAMPLES if c is codec}
        assert shown == set(codec.types.values())


@pytest.mark.parametrize(("codec", "message"), EXAMPLES, ids=lambda x: getattr(x, "type", ""))
def test_a_message_survives_a_round_trip_as_a_json_line(codec: Codec[Any], message: Any) -> None:
    assert codec.decode(line(codec, message)) == message
    assert codec.decode(json.loads(line(codec, message))) == message


def test_a_binary_attribute_survives_the_trip_to_a_handler_process() -> None:
    [wired] = handlerproc.decode(line(handlerproc.CODEC, EXAMPLES[8][1])).messages
    assert handlerproc.unwire(wired).message_attributes["blob"]["BinaryValue"] == b"\x00\xff"


def test_no_wire_name_means_two_things() -> None:
    names = [*protocol.CODEC.types, *handlerproc.CODEC.types]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(("doc", "problem"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ({"type": "launch"}, "unknown message type 'launch'"),
    ({"op": "Exit"}, "unknown message type None"),
    ({"type": 3}, "unknown message type 3"),
    ({"type": "run_work", "id": 1, "batch": True, "messages": []}, "unknown message type"),
    ({"type": "abort"}, "missing field.* job_id"),
    ({"type": "abort", "job_id": "j", "jobId": "j"}, "unknown field.* jobId"),
    ({"type": "started", "job_id": "j", "pid": "12"}, "pid: '12' is not int"),
    ({"type": "started", "job_id": "j", "pid": True}, "pid: True is not int"),
    ({"type": "started", "job_id": "j", "pid": 1.5}, "pid: 1.5 is not int"),
    ({"type": "stop", "job_id": "j", "reason": "bored"}, "reason: 'bored'"),
    ({"type": "stop", "job_id": 7, "reason": "drained"}, "job_id: 7"),
    ({"type": "retune", "job_id": "j", "live": {"concurrency": "3"}}, "live: concurrency"),
    ({"type": "retune", "job_id": "j", "live": [3]}, "live: \\[3\\]"),
    ({"type": "started", "job_id": "j", "pid": 1, "metrics": [1]}, "metrics"),
    ({"type": "progress", "job_id": "j", "handled": 1, "failed": 0, "failures": {}},
     "failures"),
])  # fmt: skip
def test_what_is_not_a_message_of_the_channel_is_refused(doc: Any, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        protocol.decode(doc)


def progress_with(**changes: Any) -> dict[str, Any]:
    doc = protocol.encode(protocol.Progress("j", 1, 1, failures=(NOTE,)))
    doc["failures"][0].update(changes)
    return doc


@pytest.mark.parametrize(("changes", "problem"), [
    ({"receive_count": "2"}, "receive_count: '2' is not int"),
    ({"at": "2026-12-07T20:00:00"}, "at: '2026-12-07T20:00:00' is not datetime"),  # no offset
    ({"at": "yesterday"}, "at: 'yesterday'"),
    ({"body": 5}, "body: 5"),
    ({"messageId": "m-1"}, "unknown field.* messageId"),  # the old dict's keys
])  # fmt: skip
def test_a_failure_note_that_does_not_fit_is_refused(changes: dict[str, Any],
                                                      problem: str) -> None:  # fmt: skip
    with pytest.raises(ProtocolError, match=problem):
        protocol.decode(progress_with(**changes))


def test_a_failure_arrives_as_the_note_it_was_noted_as() -> None:
    """From the FailureLog where the consumer notes it to the worker that stores it: the
    same frozen FailureNote, nothing re-parsed on the way."""
    log = FailureLog("orders", keep_bodies=True, now=lambda: AT)
    log.note("m-1", 2, '{"total": -1}', "ValueError: bad total", "Traceback …")
    sent = protocol.Done("j", 0, 1, Reason.DRAINED, failures=log.take())
    received = protocol.decode(line(protocol.CODEC, sent))
    assert isinstance(received, protocol.Done)
    assert received.failures == (FailureNote("orders", "m-1", 2, "ValueError", "bad total",
                                             "Traceback …", AT, '{"total": -1}'),)  # fmt: skip
    assert received.failures[0].to_doc()["at"] == AT  # what the store writes


def test_unwire_refuses_what_wire_did_not_write() -> None:
    for doc in ({"message_id": "m"}, {**WIRED, "body": 5}, [1],
                {**WIRED, "message_attributes": {"a": {"BinaryValue": {"b64": "!!"}}}}):
        with pytest.raises(ProtocolError, match="not an SQS message"):
            handlerproc.unwire(doc)  # type: ignore[arg-type]


def test_a_codec_takes_only_frozen_dataclasses_with_distinct_names() -> None:
    @dataclass
    class Loose:
        type: ClassVar[str] = "loose"

    @dataclass(frozen=True)
    class Twin:
        type: ClassVar[str] = "exit"

    with pytest.raises(TypeError, match="frozen dataclass"):
        Codec(Loose)
    with pytest.raises(TypeError, match="two messages"):
        Codec(protocol.Exit, Twin)
    with pytest.raises(ProtocolError, match="not a message of this channel"):
        protocol.encode(handlerproc.HandlerExit())  # type: ignore[arg-type]
