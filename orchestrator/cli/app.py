"""What every command shares: settings, lazy clients, and error-to-exit-code mapping.

The clients' libraries (pymongo, boto3) and the servers' code are imported by the
commands that use them, on first use: `orchestrator --help` loads none of them.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import click

from orchestrator.config import Endpoints, Settings
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.backends.queues import QueueAdmin
    from orchestrator.backends.sqs import Sqs
    from orchestrator.backends.store import Store


class App:
    """What commands share: the settings, and clients made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def endpoints(self) -> Endpoints:
        from orchestrator.embedded import servers

        # Any command that needs the servers starts the embedded ones when they are down.
        return servers.ensure(self.settings)

    @functools.cached_property
    def store(self) -> Store:
        from orchestrator.backends.store import Store

        store = Store.connect(self.settings, self.endpoints.mongodb_uri, short_lived=True)
        store.ensure_indexes()
        return store

    @functools.cached_property
    def sqs(self) -> Sqs:
        from orchestrator.backends.sqs import Sqs

        return Sqs.connect(self.settings, self.endpoints.sqs_endpoint, caller="admin")

    @functools.cached_property
    def queues(self) -> QueueAdmin:
        from orchestrator.backends.queues import QueueAdmin

        return QueueAdmin(self.settings, lambda: self.store, lambda: self.sqs)

    def warn_if_unimportable(self, handler: str | None) -> None:
        """After a handler was set: say on stderr (exit 0) when it does not import here."""
        if handler is None:
            return
        from orchestrator.handlers import import_warning

        warning = import_warning(handler, self.settings)
        if warning is not None:
            click.echo(f"warning: {warning}", err=True)

    def close(self) -> None:
        """Close the MongoDB client if one was made: left to the interpreter's exit, its
        monitor threads hold the process up for half a second."""
        if "store" in self.__dict__:
            self.store.close()


class Group(click.Group):
    """A command group whose listing shows each command's first sentence whole, wrapped,
    instead of cutting it off with "..." at the terminal's width."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Cli(Group):
    """Maps OrchestratorError to its exit code with a one-line message, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrchestratorError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        finally:
            if isinstance(ctx.obj, App):
                ctx.obj.close()


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
