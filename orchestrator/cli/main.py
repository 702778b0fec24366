"""The `orchestrator` click group: --env, settings into ctx.obj, the command groups."""

from __future__ import annotations

import click

from orchestrator import config
from orchestrator.cli import config_cmd, inspect, queue, run, services
from orchestrator.cli.app import App, Cli


@click.group(cls=Cli)
@click.option(
    "--env",
    "env_name",
    envvar=config.ENV_NAME_VAR,
    default=None,
    metavar="NAME",
    help="Settings file env/NAME.json (default: development).",
)
@click.version_option(package_name="orchestrator")
@click.pass_context
def cli(ctx: click.Context, env_name: str | None) -> None:
    """Run and manage the consumers of many SQS queues."""
    from orchestrator import log  # structlog: not for --help

    settings = config.load(env_name)
    log.configure(settings, role="cli")
    ctx.obj = App(settings)


for _group in (
    queue.queue,
    services.services,
    config_cmd.config_group,
    run.run,
    inspect.jobs,
    inspect.workers,
    inspect.status,
):
    cli.add_command(_group)


def main() -> None:
    cli(prog_name="orchestrator")
