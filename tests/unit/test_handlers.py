"""import_handler, Message and the built-in handlers."""

from __future__ import annotations

import sys
import time

import pytest

from orchestrator import Message, config
from orchestrator.errors import HandlerImportError
from orchestrator.handlers import import_handler, log, noop, sleep
from orchestrator.models import SqsMessage


def msg(body: str) -> Message:
    return Message(message_id="m1", body=body, queue_name="q", queue_url="http://x/q")


def test_builtins_import_by_path() -> None:
    assert import_handler("orchestrator.handlers:noop") is noop
    assert import_handler("orchestrator.handlers:log") is log


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("no.such.module:f", "ModuleNotFoundError"),
        ("orchestrator.handlers:missing", "has no function missing"),
        ("orchestrator.handlers:HandlerImportError", None),  # a class is callable: allowed
        ("not a path", "not of the form"),
    ],
)
def test_import_errors_name_the_path(path: str, reason: str | None) -> None:
    if reason is None:
        assert callable(import_handler(path))
        return
    with pytest.raises(HandlerImportError, match=reason) as info:
        import_handler(path)
    assert repr(path) in str(info.value)


def test_message_from_sqs_and_json() -> None:
    raw = {
        "MessageId": "id-1",
        "ReceiptHandle": "r",
        "Body": '{"ms": 5}',
        "Attributes": {"ApproximateReceiveCount": "3"},
        "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
    }
    m = SqsMessage.from_sqs(raw).for_handler("q", "http://x/q")
    assert (m.message_id, m.receive_count, m.json()) == ("id-1", 3, {"ms": 5})
    assert m.message_attributes["k"]["StringValue"] == "v"


def test_sleep_handler_sleeps_for_ms() -> None:
    start = time.monotonic()
    sleep(msg('{"ms": 50}'))
    assert time.monotonic() - start >= 0.05
    sleep(msg("not json"))  # falls back to 100 ms rather than failing
    noop(msg("x"))


@pytest.mark.parametrize(
    ("path", "prefixes", "allowed"),
    [
        ("os:system", (), True),  # no allowlist: any module
        ("os:system", ("myapp",), False),
        ("builtins:eval", ("myapp", "orchestrator.handlers"), False),
        ("myapp:f", ("myapp",), True),
        ("myapp.jobs.mail:send", ("myapp",), True),
        ("myapplication:f", ("myapp",), False),  # a prefix of modules, not of names
        ("orchestrator.handlers:noop", ("orchestrator.handlers",), True),
        ("orchestrator.config:load", ("orchestrator.handlers",), False),
    ],
)
def test_handler_modules_allow_a_module_and_what_is_inside_it(
    path: str, prefixes: tuple[str, ...], allowed: bool
) -> None:
    assert config.handler_allowed(path, prefixes) is allowed


def test_a_handler_outside_the_allowlist_is_not_even_imported() -> None:
    assert "json.tool" not in sys.modules
    with pytest.raises(HandlerImportError, match=r"outside HANDLER_MODULES \(orchestrator\)"):
        import_handler("json.tool:main", ("orchestrator",))
    assert "json.tool" not in sys.modules
