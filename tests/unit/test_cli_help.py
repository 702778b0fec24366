"""Every help text of the CLI is shown whole (no "..." where a description was cut)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import cli


def groups(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += groups(command, (*path, name))
        else:
            found.append((*path, name))
    return found


@pytest.mark.parametrize("path", groups(cli), ids=lambda p: " ".join(p) or "orchestrator")
def test_help_is_never_cut_off(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    text = "\n".join(line for line in result.output.splitlines() if not line.startswith("Usage"))
    assert "..." not in text, text
