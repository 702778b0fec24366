"""Click parameter types for numbers as people type them: ASCII digits, nothing else.

Click's own INT and FLOAT go through int() and float(), which also take " 5", "+5",
"\\u0665" (an Arabic-Indic five) and "5_0" (which means 50).
"""

from __future__ import annotations

from typing import Any

import click

from orchestrator import validate
from orchestrator.config import parse_int, parse_number
from orchestrator.errors import InvalidValue


class StrictInt(click.ParamType):  # type: ignore[type-arg]
    name = "integer"

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number: int | None = value
        else:
            number = parse_int(str(value))
        if number is None:
            self.fail(f"{value!r} is not a valid integer", param, ctx)
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            self.fail(f"{number} is not in the range {self.lo}<=x<={self.hi}", param, ctx)
        return number


class StrictNumber(click.ParamType):  # type: ignore[type-arg]
    name = "number"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        number = parse_number(str(value))
        if number is None:
            self.fail(f"{value!r} is not a valid number", param, ctx)
        return number


class RateLimit(click.ParamType):  # type: ignore[type-arg]
    """Messages per second, or `none` for no limit."""

    name = "rate limit"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | str:
        if value == NO_LIMIT:
            return NO_LIMIT
        return NUMBER.convert(value, param, ctx)


NO_LIMIT = "none"


class QueueName(click.ParamType):  # type: ignore[type-arg]
    """A name SQS allows, checked before any lookup: `../x` is invalid, not missing."""

    name = "queue name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return validate.queue_name(str(value))
        except InvalidValue as exc:
            self.fail(str(exc), param, ctx)


INT = StrictInt()
NUMBER = StrictNumber()
RATE = RateLimit()
