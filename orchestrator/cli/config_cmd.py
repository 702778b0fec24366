"""`orchestrator config show`: the effective settings, secrets redacted."""

from __future__ import annotations

import click

from orchestrator.cli import render
from orchestrator.cli.app import App, Group, json_option, pass_app


@click.group("config", cls=Group)
def config_group() -> None:
    """Inspect settings."""


@config_group.command()
@json_option
@pass_app
def show(app: App, as_json: bool) -> None:
    """Print the effective settings (env file + environment), secrets redacted."""
    values = app.settings.redacted()
    if as_json:
        render.emit_json(values)
        return
    click.echo(f"# env {app.settings.env_name} from {app.settings.source}")
    for key, value in values.items():
        click.echo(f"{key}={value}")
