"""Output helpers: aligned tables for people, one JSON document for programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def counted(n: int, word: str) -> str:
    """`1 message`, `2 messages`: a count with its noun, singular for one."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def fields(doc: dict[str, Any], indent: str = "") -> None:
    """A document as `name: value` lines for people: nested ones indented, lists one item
    a line, nothing shown as Python writes it (None is "-", dates as written)."""
    for key, value in doc.items():
        if isinstance(value, dict):
            click.echo(f"{indent}{key}:")
            fields(value, indent + "  ")
        elif isinstance(value, list):
            click.echo(f"{indent}{key}:" + (" -" if not value else ""))
            for item in value:
                if isinstance(item, dict):
                    click.echo(f"{indent}  - " + ", ".join(f"{k} {_cell(v)}"
                                                          for k, v in item.items()))
                else:
                    click.echo(f"{indent}  - {_cell(item)}")
        else:
            click.echo(f"{indent}{key}: {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
