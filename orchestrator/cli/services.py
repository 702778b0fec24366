"""`orchestrator services …`: the embedded MongoDB-protocol and SQS servers."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli import render
from orchestrator.cli.app import App, Group, json_option, pass_app
from orchestrator.config import redact_uri


@click.group(cls=Group)
def services() -> None:
    """Start, stop and inspect the local servers that `embedded` settings use."""


@services.command()
@pass_app
def start(app: App) -> None:
    """Start what the settings call for (or reuse it) and wait until it answers."""
    ends = app.endpoints
    click.echo(f"mongodb: {redact_uri(ends.mongodb_uri)}")
    click.echo(f"sqs:     {redact_uri(ends.sqs_endpoint) if ends.sqs_endpoint else 'AWS'}")


@services.command()
@pass_app
def stop(app: App) -> None:
    """Stop the servers that this DATA_DIR started (and only those)."""
    from orchestrator.embedded import servers

    stopped = servers.stop(app.settings)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")


@services.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show each server's address, pid and whether it answers."""
    from orchestrator.embedded import servers

    doc = servers.status(app.settings)
    if as_json:
        render.emit_json({**doc, "dataDir": app.settings.data_dir})
        return
    click.echo(f"DATA_DIR {app.settings.data_dir}")
    render.table(
        ["SERVICE", "ADDRESS", "PID", "RUNNING"],
        [
            [role, d.get("uri") or d.get("endpoint"), d["pid"], d["running"]]
            for role, d in doc.items()
        ],
    )


@services.command("install-localstack")
@click.option(
    "--python",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Python 3.13 interpreter (default: pyenv's 3.13).",
)
@pass_app
def install_localstack(app: App, python: Path | None) -> None:
    """Install LocalStack into DATA_DIR/localstack (for AWS_SQS_ENDPOINT=localstack)."""
    from orchestrator.embedded import localstack

    click.echo("installing LocalStack (a few minutes)…", err=True)
    venv = localstack.install_localstack(app.settings, python)
    click.echo(f"installed LocalStack in {venv}")
