"""Validation of user-given values, from tables."""

from __future__ import annotations

import re

import pytest

from orchestrator import validate
from orchestrator.errors import InvalidValue


@pytest.mark.parametrize(
    "name", ["a", "demo", "Orders_v2-eu", "x" * 80, "jobs.fifo", "y" * 75 + ".fifo"]
)
def test_valid_queue_names(name: str) -> None:
    assert validate.queue_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is empty"),
        (".fifo", "is empty"),
        ("x" * 81, "81 characters; at most 80"),
        ("y" * 76 + ".fifo", "81 characters"),
        ("bad name", "characters SQS does not allow: ' '"),
        ("a.b", r"characters SQS does not allow: '\.'"),
        ("jobs.fifo.fifo", "not allow"),
        ("fifo.queue", "not allow"),
        ("ünicode", "not allow: 'ü'"),
        ("a/b", "not allow: '/'"),
        ("abc\n", "not allow: '\\\\n'"),
    ],
)
def test_invalid_queue_names(name: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        validate.queue_name(name)


@pytest.mark.parametrize(
    ("name", "dlq"), [("a", "a-dlq"), ("jobs.fifo", "jobs-dlq.fifo"), ("x" * 76, "x" * 76 + "-dlq")]
)
def test_dlq_names(name: str, dlq: str) -> None:
    assert validate.dlq_name(name) == dlq


def test_dlq_name_too_long() -> None:
    with pytest.raises(InvalidValue, match="too long for a DLQ"):
        validate.dlq_name("x" * 77)


@pytest.mark.parametrize(
    ("value", "ok"), [(0, False), (1, True), (100, True), (101, False), (-3, False)]
)
def test_concurrency_range(value: int, ok: bool) -> None:
    if ok:
        assert validate.concurrency(value, 100) == value
    else:
        with pytest.raises(InvalidValue, match=rf"concurrency {value} is out of range 1\.\.100"):
            validate.concurrency(value, 100)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("orchestrator.handlers:noop", True),
        ("mod:f", True),
        ("pkg.sub_2.mod:handle_it", True),
        ("mod", False),
        ("mod:", False),
        (":f", False),
        ("mod:f:g", False),
        ("mod.f", False),
        ("1mod:f", False),
        ("mod:f()", False),
        ("os.system('x'):f", False),
        ("a.b:c\n", False),
    ],
)
def test_handler_paths(path: str, ok: bool) -> None:
    if ok:
        assert validate.handler_path(path) == path
    else:
        with pytest.raises(InvalidValue, match=r"must look like package\.module:function"):
            validate.handler_path(path)


def test_positive_counts() -> None:
    assert validate.positive(1, "count") == 1
    with pytest.raises(InvalidValue, match="count must be a positive integer, got 0"):
        validate.positive(0, "count")


def test_visibility_timeout_and_receive_count_limits() -> None:
    assert validate.visibility_timeout(43_200) == 43_200
    with pytest.raises(InvalidValue, match="visibility timeout 43201"):
        validate.visibility_timeout(43_201)
    with pytest.raises(InvalidValue, match="max receive count 0"):
        validate.max_receive_count(0)


@pytest.mark.parametrize(("rate", "ok"), [(1e-10, False), (1e-300, False), (0.0009, False),
                                          (0.001, True), (2.5, True), (100_000.0, True),
                                          (100_001.0, False), (float("nan"), False)])
def test_rate_limit_bounds(rate: float, ok: bool) -> None:
    """A rate below one start per ~17 minutes cannot be honoured (its waits overflowed)."""
    if ok:
        assert validate.rate_limit(rate) == rate
    else:
        with pytest.raises(InvalidValue, match=r"from 0\.001 to 100,000"):
            validate.rate_limit(rate)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a\x00", r"U\+0000 at character 1 \(a control character"),
        ("\x1b[0m", r"U\+001B at character 0 \(a control character"),
        ("ok\ufffe", r"U\+FFFE at character 2 \(a noncharacter"),
        ("\uffff", r"U\+FFFF at character 0 \(a noncharacter"),
        ("x\ud800", r"U\+D800 at character 1 \(a lone surrogate"),
        ("\udfff", r"U\+DFFF at character 0 \(a lone surrogate"),
        ("\udc80", "not valid UTF-8"),  # a byte of argv that was not UTF-8
    ],
)
def test_a_refused_body_character_is_named_for_what_it_is(body: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message) as info:
        validate.message_body(body)
    if "control" not in message:
        assert "control" not in str(info.value)


@pytest.mark.parametrize("body", ["\t\n\r", "\x7f\x85", "\ufffd", "\U0001fffe", "\U0010ffff"])
def test_bodies_sqs_takes(body: str) -> None:
    assert validate.message_body(body) == len(body.encode("utf-8"))


@pytest.mark.parametrize(
    ("value", "shown"),
    [(100_000.0000000001, "100000.0000000001"), (1e9, "1000000000"), (0.0, "0"),
     (-2.0, "-2"), (float("inf"), "inf"), (1e300, "1e+300")],
)
def test_an_out_of_range_rate_limit_is_shown_with_every_digit(value: float, shown: str) -> None:
    with pytest.raises(InvalidValue, match=rf"^rate limit {re.escape(shown)} is out of range"):
        validate.rate_limit(value)


@pytest.mark.parametrize(
    ("value", "text"), [(50.0, "50"), (0.5, "0.5"), (12345.67, "12345.67"), (1e-07, "1e-07")]
)
def test_number_text_keeps_every_digit(value: float, text: str) -> None:
    assert validate.number_text(value) == text


def test_attributes_count_toward_the_message_limit() -> None:
    attributes = {"traceparent": {"DataType": "String", "StringValue": "00-" + "a" * 52},
                  "bin": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}  # fmt: skip
    assert validate.attributes_size(attributes) == 11 + 6 + 55 + 3 + 6 + 2
    assert validate.message_body("x" * (validate.MAX_BODY_BYTES - 83), 83) == 1_048_576
    with pytest.raises(InvalidValue, match="1,048,494 bytes and its attributes 83"):
        validate.message_body("x" * (validate.MAX_BODY_BYTES - 82), 83)


def test_the_message_limit_is_sqs_s_1_mib() -> None:
    assert validate.MAX_BODY_BYTES == 1_048_576
    assert validate.message_body("x" * 262_145) == 262_145
