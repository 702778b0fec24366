"""Pure checks of user-given values; each raises InvalidValue naming the problem."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.config import HANDLER_PATH, Settings, handler_allowed
from orchestrator.errors import InvalidValue

NAME_MAX = 80
FIFO_SUFFIX = ".fifo"
DLQ_SUFFIX = "-dlq"
_NAME_CHARS = re.compile(r"[A-Za-z0-9_-]+")  # with fullmatch: `$` lets "\n" through
_GROUP_ID = re.compile(r"[!-~]{1,128}")
MAX_VISIBILITY_TIMEOUT = 43_200  # 12 hours, SQS's limit
MAX_RECEIVE_COUNT = 1000  # SQS's limit for a redrive policy
MAX_BATCH_SIZE = 100
MAX_BATCH_WINDOW = 20.0  # seconds
MAX_SEND_COUNT = 1_000_000  # `queue send` is for test messages, not a load generator
# SQS's limit for a message, its attributes included, and for a batch in all: 1 MiB since
# August 2025 (256 KiB before). The one constant for it: sends and redrives batch by it.
MAX_BODY_BYTES = 1_048_576
# SQS's characters: #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF
_SQS_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def queue_name(name: str) -> str:
    """SQS naming rules: 1-80 of A-Za-z0-9_-, and `.fifo` only as a FIFO queue's suffix."""
    base = name.removesuffix(FIFO_SUFFIX)
    if len(name) > NAME_MAX:
        raise InvalidValue(f"queue name {name!r} is {len(name)} characters; at most {NAME_MAX}")
    if not base:
        raise InvalidValue(f"queue name {name!r} is empty")
    if not _NAME_CHARS.fullmatch(base):
        bad = sorted({c for c in base if not _NAME_CHARS.fullmatch(c)})
        raise InvalidValue(
            f"queue name {name!r} has characters SQS does not allow: {''.join(bad)!r} "
            "(use letters, digits, '-' and '_'; '.fifo' only as a FIFO suffix)"
        )
    return name


def dlq_name(name: str) -> str:
    """The dead-letter queue's name for a queue: `<base>-dlq`, keeping `.fifo`."""
    fifo = name.endswith(FIFO_SUFFIX)
    dlq = name.removesuffix(FIFO_SUFFIX) + DLQ_SUFFIX + (FIFO_SUFFIX if fifo else "")
    if len(dlq) > NAME_MAX:
        raise InvalidValue(
            f"queue name {name!r} is too long for a DLQ: {dlq!r} would pass {NAME_MAX} characters"
        )
    return dlq


def concurrency(value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise InvalidValue(f"concurrency {value} is out of range 1..{maximum} (MAX_CONCURRENCY)")
    return value


def processes(value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise InvalidValue(f"processes {value} is out of range 1..{maximum} (MAX_PROCESSES)")
    return value


def batch_size(value: int) -> int:
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise InvalidValue(f"batch size {value} is out of range 1..{MAX_BATCH_SIZE}")
    return value


def batch_window(seconds: float) -> float:
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_BATCH_WINDOW):
        raise InvalidValue(
            f"batch window {number_text(seconds)} is out of range 0..{MAX_BATCH_WINDOW:g} seconds"
        )
    return seconds


MAX_RATE_LIMIT = 100_000.0  # handler starts per second: beyond any one queue's SQS throughput
# The slowest rate honoured: one start per ~17 minutes. Slower, a held message's wait for
# its token would outlast any sensible visibility timeout and assignment.
MIN_RATE_LIMIT = 0.001
MAX_PRIORITY = 9


def number_text(value: float) -> str:
    """A number as it was given: `50` for 50.0, else every digit it has (repr). `:g` keeps
    six digits, and `100000.0000000001 is out of range` would read `100000 is out of range`."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def rate_limit(value: float | None) -> float | None:
    """Handler starts per second for the whole queue; None: no limit."""
    if value is None:
        return None
    if not (math.isfinite(value) and MIN_RATE_LIMIT <= value <= MAX_RATE_LIMIT):
        raise InvalidValue(
            f"rate limit {number_text(value)} is out of range: give a number of messages "
            f"per second from {MIN_RATE_LIMIT:g} to {MAX_RATE_LIMIT:,.0f}, or none"
        )
    return value


def priority(value: int) -> int:
    if not 0 <= value <= MAX_PRIORITY:
        raise InvalidValue(f"priority {value} is out of range 0..{MAX_PRIORITY}")
    return value


def max_shards(value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise InvalidValue(f"max shards {value} is out of range 1..{maximum} (MAX_SHARDS)")
    return value


MAX_DLQ_LIMIT = 1000
_MESSAGE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")


def dlq_limit(value: int) -> int:
    if not 1 <= value <= MAX_DLQ_LIMIT:
        raise InvalidValue(f"limit {value} is out of range 1..{MAX_DLQ_LIMIT}")
    return value


def message_id(value: str) -> str:
    """An SQS message id (a UUID; letters, digits and '-')."""
    if not isinstance(value, str) or not _MESSAGE_ID.fullmatch(value):
        raise InvalidValue(f"message id {value!r} is not an SQS message id")
    return value


def group_id(value: str) -> str:
    """SQS's rule for a MessageGroupId: 1-128 printable ASCII characters, no spaces."""
    if not _GROUP_ID.fullmatch(value):
        raise InvalidValue(
            f"group id {value!r} must be 1-128 printable ASCII characters without spaces"
        )
    return value


def handler_path(path: str, allowed: tuple[str, ...] = ()) -> str:
    """A handler's import path, from one of the `allowed` module prefixes (none: any)."""
    if not HANDLER_PATH.fullmatch(path):
        raise InvalidValue(f"handler {path!r} must look like package.module:function")
    if not handler_allowed(path, allowed):
        raise InvalidValue(f"handler {path!r} is outside HANDLER_MODULES "
                           f"({', '.join(allowed)})")  # fmt: skip
    return path


def send_count(value: int) -> int:
    if not 1 <= value <= MAX_SEND_COUNT:
        raise InvalidValue(f"count {value} is out of range 1..{MAX_SEND_COUNT:,}")
    return value


def attributes_size(attributes: Mapping[str, Mapping[str, Any]] | None) -> int:
    """What SQS counts of a message's attributes toward MAX_BODY_BYTES: every name, data
    type and value, in bytes."""
    total = 0
    for name, attribute in (attributes or {}).items():
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        total += len(name.encode("utf-8")) + len(str(attribute["DataType"]).encode()) + len(raw)
    return total


def message_body(body: str, attributes_bytes: int = 0) -> int:
    """Check a body as SQS will: its characters, then 1 byte, and at most MAX_BODY_BYTES
    with its attributes (`attributes_bytes`, from attributes_size). The message's size."""
    for i, char in enumerate(body):
        if _SQS_CHAR.fullmatch(char):
            continue
        if "\udc80" <= char <= "\udcff":  # how Python keeps a byte of argv that is not UTF-8
            raise InvalidValue(f"message body is not valid UTF-8 (byte "
                               f"0x{ord(char) - 0xDC00:02x} at character {i})")  # fmt: skip
        raise InvalidValue(f"message body has a character SQS does not allow: U+{ord(char):04X} "
                           f"at character {i} ({_why_refused(char)})")  # fmt: skip
    size = len(body.encode("utf-8"))
    if size < 1:
        raise InvalidValue(f"message body is {size:,} bytes; SQS takes 1 to {MAX_BODY_BYTES:,}")
    if size + attributes_bytes > MAX_BODY_BYTES:
        with_attributes = (f" and its attributes {attributes_bytes:,}" if attributes_bytes
                           else "")  # fmt: skip
        raise InvalidValue(f"message body is {size:,} bytes{with_attributes}; SQS takes a "
                           f"message of 1 to {MAX_BODY_BYTES:,} bytes, attributes included")
    return size + attributes_bytes


def _why_refused(char: str) -> str:
    """What kind of character outside SQS's set `char` is, for the message refusing it."""
    if "\ud800" <= char <= "\udfff":
        return "a lone surrogate: half of a UTF-16 pair, not a character UTF-8 can carry"
    if char in "\ufffe\uffff":
        return "a noncharacter: Unicode reserves U+FFFE and U+FFFF, and SQS refuses them"
    return ("a control character: tab, newline and carriage return are the only "
            "control characters SQS takes")  # fmt: skip


def positive(value: int, what: str) -> int:
    if value < 1:
        raise InvalidValue(f"{what} must be a positive integer, got {value}")
    return value


def visibility_timeout(seconds: int) -> int:
    if seconds == 0:
        raise InvalidValue(
            "visibility timeout 0 would make every message visible again while its handler "
            "runs, so that it runs twice at once: give 1.."
            f"{MAX_VISIBILITY_TIMEOUT} seconds"
        )
    if not 1 <= seconds <= MAX_VISIBILITY_TIMEOUT:
        raise InvalidValue(
            f"visibility timeout {seconds} is out of range 1..{MAX_VISIBILITY_TIMEOUT} seconds"
        )
    return seconds


def max_receive_count(value: int) -> int:
    if not 1 <= value <= MAX_RECEIVE_COUNT:
        raise InvalidValue(f"max receive count {value} is out of range 1..{MAX_RECEIVE_COUNT}")
    return value


@dataclass(frozen=True)
class Tunable:
    """A queue setting that `queue set`, PATCH and `queue apply` may change: its document
    field and check. Here, not in backends/, so that the pure queue-file check uses them."""

    field: str
    check: Callable[[Settings, Any], Any]


TUNABLE = {  # by QueueRecord attribute name
    "concurrency": Tunable("concurrency", lambda s, v: concurrency(v, s.max_concurrency)),
    "handler": Tunable("handler", lambda s, v: handler_path(v, s.handler_prefixes)),
    "paused": Tunable("paused", lambda s, v: bool(v)),
    "processes": Tunable("processes", lambda s, v: processes(v, s.max_processes)),
    "batch_size": Tunable("batchSize", lambda s, v: batch_size(v)),
    "batch_window": Tunable("batchWindow", lambda s, v: batch_window(float(v))),
    "rate_limit": Tunable("rateLimit", lambda s, v: rate_limit(None if v is None else float(v))),
    "priority": Tunable("priority", lambda s, v: priority(v)),
    "adaptive": Tunable("adaptive", lambda s, v: bool(v)),
    "max_shards": Tunable("maxShards", lambda s, v: max_shards(v, s.max_shards)),
    "failure_bodies": Tunable("failureBodies", lambda s, v: bool(v)),
}
