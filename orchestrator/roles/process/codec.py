"""One codec for every process boundary: frozen dataclass messages as JSON lines.

A message is a frozen dataclass with a `type` class variable naming it on the wire;
each boundary (worker ↔ consumer in protocol.py, consumer ↔ handler process in
handlerproc.py) registers its messages in a `Codec` of its own, so that neither side
takes the other's messages for its own. On the wire a message is one JSON object:
`{"type": NAME, field: value, …}`, nested dataclasses as objects of their fields,
enums as their values, datetimes in ISO 8601 with their offset, tuples as lists.

`decode` checks everything against the dataclass's annotations and refuses, with a
ProtocolError, what it does not know: text that is not JSON, an unknown type, a
missing or extra field, a value of the wrong type. Nothing that passes it needs to be
re-parsed with `str()` or `int()` on the other side.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from orchestrator.errors import OrchestratorError

M = TypeVar("M")


class ProtocolError(OrchestratorError):
    """A channel message this side does not understand."""


class Codec(Generic[M]):
    """The messages of one boundary (`M`: their union), by their wire `type`."""

    def __init__(self, *classes: type[M]) -> None:
        self.types: dict[str, type[M]] = {}
        for cls in classes:
            name = getattr(cls, "type", None)
            params = getattr(cls, "__dataclass_params__", None)
            if not isinstance(name, str) or params is None or not params.frozen:
                raise TypeError(f"{cls.__name__} is not a frozen dataclass with a `type` name")
            if name in self.types:
                raise TypeError(f"two messages are named {name!r}")
            self.types[name] = cls
            _hints(cls)  # an annotation that does not resolve fails here, not on first use

    def encode(self, message: M) -> dict[str, Any]:
        """The JSON-ready object of a message of this boundary."""
        name: str = getattr(message, "type", "")
        if self.types.get(name) is not type(message):
            raise ProtocolError(f"{type(message).__name__} is not a message of this channel")
        return {"type": name, **_encode(message)}

    def decode(self, doc: Mapping[str, Any] | str | bytes) -> M:
        """The message a JSON object (or a line of JSON) carries; ProtocolError if it is
        none of ours or does not fit its fields."""
        if isinstance(doc, str | bytes):
            try:
                doc = json.loads(doc)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                raise ProtocolError(f"not JSON: {exc}") from exc
        if not isinstance(doc, Mapping):
            raise ProtocolError(f"not a JSON object: {type(doc).__name__}")
        fields = dict(doc)
        name = fields.pop("type", None)
        cls = self.types.get(name) if isinstance(name, str) else None
        if cls is None:
            raise ProtocolError(f"unknown message type {name!r}")
        try:
            message: M = _fields(cls, fields)
        except _Misfit as exc:
            raise ProtocolError(f"malformed {name!r} message: {exc}") from None
        return message


class _Misfit(Exception):
    """A value that does not fit its annotation (where, and why)."""


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """A dataclass's field types, resolved once (modules use postponed annotations)."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _fields(cls: type[Any], doc: dict[str, Any]) -> Any:
    """An instance of dataclass `cls` from its fields' JSON values, each checked."""
    hints = _hints(cls)
    extra = sorted(set(doc) - set(hints))
    if extra:
        raise _Misfit(f"unknown field(s) {', '.join(extra)}")
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}  # fmt: skip
    missing = sorted(required - set(doc))
    if missing:
        raise _Misfit(f"missing field(s) {', '.join(missing)}")
    return cls(**{key: _value(hints[key], value, key) for key, value in doc.items()})


_NoneType = type(None)


def _value(tp: Any, value: Any, where: str) -> Any:
    """`value` (as JSON gave it) as annotation `tp` wants it; _Misfit if it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        for arm in typing.get_args(tp):
            try:
                return _value(arm, value, where)
            except _Misfit:
                continue
    elif origin in (tuple, list):
        args = typing.get_args(tp)
        if isinstance(value, list) and (origin is list or args[1:] == (Ellipsis,)):
            items = [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            of = typing.get_args(tp)[1]
            return {k: _value(of, v, f"{where}.{k}") for k, v in value.items()}
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            try:
                return _fields(tp, value)
            except _Misfit as exc:
                raise _Misfit(f"{where}: {exc}") from None
    elif _fits(tp, value):
        return _scalar(tp, value)
    raise _Misfit(f"{where}: {value!r} is not {_name(tp)}")


def _fits(tp: Any, value: Any) -> bool:
    """Whether a JSON scalar can stand for a value of type `tp`."""
    if tp is _NoneType or tp is None:
        return value is None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return any(type(value) is type(m.value) and value == m.value for m in tp)
    if tp is datetime:  # a time without its offset would be ambiguous
        return isinstance(value, str) and _aware(value) is not None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp in (bool, int, str):  # bool is an int to Python; neither passes for the other here
        return type(value) is tp
    raise _Misfit(f"the codec cannot read {_name(tp)}")  # a message type the codec lacks


def _scalar(tp: Any, value: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is datetime:
        return _aware(value)
    if tp is float:
        return float(value)
    return value


def _aware(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")

