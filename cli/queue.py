"""`orchestrator queue …`: manage queues (the settings live in MongoDB, messages in SQS)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from cli import render
from cli.app import App, json_option, pass_app
from cli.types import INT, NUMBER, QueueName

NAME = click.argument("name", type=QueueName())
# So that `send q -5` reports a bad count rather than an unknown option "-5".
NUMBER_ARGS = {"ignore_unknown_options": True}


@click.group()
def queue() -> None:
    """Create, change and inspect queues."""


@queue.command()
@NAME
@click.option("--concurrency", type=INT, help="Handlers run at once (default DEFAULT_CONCURRENCY).")
@click.option("--handler", metavar="MOD:FUNC", help="Import path (default DEFAULT_HANDLER).")
@click.option("--dlq/--no-dlq", default=None, help="Create a dead-letter queue NAME-dlq.")
@click.option(
    "--max-receive-count", type=INT, help="Receives before SQS moves a message to the DLQ (5)."
)
@click.option("--visibility-timeout", type=INT, default=30, show_default=True, metavar="S")
@click.option("--processes", type=INT, default=1, show_default=True, metavar="P",
              help="Handler processes on the assigned worker (concurrency is split across them).")
@click.option("--batch-size", type=INT, default=1, show_default=True, metavar="N",
              help="Above 1 the handler gets a list of up to N messages.")
@click.option("--batch-window", type=NUMBER, default=0.0, show_default=True, metavar="S",
              help="Seconds a batch may wait to fill.")
@pass_app
def create(
    app: App,
    name: str,
    concurrency: int | None,
    handler: str | None,
    dlq: bool | None,
    max_receive_count: int | None,
    visibility_timeout: int,
    processes: int,
    batch_size: int,
    batch_window: float,
) -> None:
    """Create queue NAME in SQS and MongoDB."""
    if dlq is False and max_receive_count is not None:
        raise click.UsageError("--max-receive-count needs a DLQ; drop --no-dlq")
    record = app.queues.create(
        name,
        concurrency=concurrency,
        handler=handler,
        dlq=bool(dlq) or max_receive_count is not None,
        max_receive_count=max_receive_count,
        visibility_timeout=visibility_timeout,
        processes=processes,
        batch_size=batch_size,
        batch_window=batch_window,
    )
    notes = ""
    if record.processes > 1:
        notes += f", {record.processes} processes"
    if record.batch_size > 1:
        notes += f", batches of {record.batch_size} within {record.batch_window:g} s"
    if record.dlq_name:
        notes += f", DLQ {record.dlq_name} after {record.max_receive_count} receives"
    click.echo(
        f"created {record.name} (concurrency {record.concurrency}, "
        f"handler {record.handler}{notes})"
    )


@queue.command()
@NAME
@pass_app
def delete(app: App, name: str) -> None:
    """Delete queue NAME (and its DLQ) from SQS and MongoDB."""
    app.queues.delete(name)
    click.echo(f"deleted {name}")


@queue.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """List queues with depth, in flight, concurrency, paused and worker."""
    views = app.queues.views()
    if as_json:
        render.emit_json([v.to_json() for v in views])
        return
    render.table(
        ["NAME", "VISIBLE", "IN FLIGHT", "CONCURRENCY", "PAUSED", "WORKER"],
        [
            [d["name"], d["visible"], d["inFlight"], d["concurrency"], d["paused"], d["worker"]]
            for d in (v.to_json() for v in views)
        ],
    )


@queue.command(context_settings=NUMBER_ARGS)
@NAME
@click.argument("count", type=INT)
@click.option("--body", help='Message body (default: {"seq": i}).')
@click.option("--group-id", metavar="G", help="FIFO queues: the message group (default 'default').")
@click.option("--groups", type=INT, metavar="N",
              help="FIFO queues: spread the messages round-robin over groups g0..gN-1.")
@pass_app
def send(
    app: App, name: str, count: int, body: str | None, group_id: str | None, groups: int | None
) -> None:
    """Send COUNT test messages to NAME, 10 per request."""

    def send_all(progress: Callable[[int], None]) -> None:
        app.queues.send(name, count, body, progress, group_id=group_id, groups=groups)

    if sys.stdout.isatty() and count > 0:
        with click.progressbar(length=count, label=f"sending to {name}") as bar:
            send_all(bar.update)
    else:
        send_all(lambda n: None)
    click.echo(f"sent {count} messages to {name}")


@queue.command()
@NAME
@json_option
@pass_app
def size(app: App, name: str, as_json: bool) -> None:
    """Show NAME's visible, in-flight and delayed message counts."""
    depth = app.queues.depth(name)
    doc = {
        "name": name,
        "visible": depth.visible,
        "inFlight": depth.in_flight,
        "delayed": depth.delayed,
    }
    if as_json:
        render.emit_json(doc)
    else:
        render.table(["NAME", "VISIBLE", "IN FLIGHT", "DELAYED"], [list(doc.values())])


@queue.command("set", context_settings=NUMBER_ARGS)
@NAME
@click.option("--concurrency", type=INT, metavar="N", help="Handlers run at once.")
@click.option("--processes", type=INT, metavar="P", help="Handler processes.")
@click.option("--batch-size", type=INT, metavar="N", help="Messages per handler call.")
@click.option("--batch-window", type=NUMBER, metavar="S", help="Seconds a batch may wait to fill.")
@click.option("--handler", metavar="MOD:FUNC", help="Import path of the handler.")
@pass_app
def set_(
    app: App,
    name: str,
    concurrency: int | None,
    processes: int | None,
    batch_size: int | None,
    batch_window: float | None,
    handler: str | None,
) -> None:
    """Change several of NAME's settings at once: all are checked before any is written.
    Running consumers pick the changes up within 2 s."""
    given = {"concurrency": concurrency, "processes": processes, "batch_size": batch_size,
             "batch_window": batch_window, "handler": handler}  # fmt: skip
    changes = {key: value for key, value in given.items() if value is not None}
    if not changes:
        raise click.UsageError(
            "nothing to set; give any of --concurrency, --processes, --batch-size, "
            "--batch-window, --handler"
        )
    record = app.queues.update(name, concurrency=concurrency, processes=processes,
                               batch_size=batch_size, batch_window=batch_window,
                               handler=handler)  # fmt: skip
    shown = {"concurrency": record.concurrency, "processes": record.processes,
             "batch_size": record.batch_size, "batch_window": f"{record.batch_window:g}",
             "handler": record.handler}  # fmt: skip
    click.echo(f"{name}: " + ", ".join(f"{k.replace('_', ' ')} {shown[k]}" for k in changes))


@queue.command("set-concurrency", context_settings=NUMBER_ARGS)
@NAME
@click.argument("n", type=INT)
@pass_app
def set_concurrency(app: App, name: str, n: int) -> None:
    """Set how many handlers NAME runs at once; running consumers pick it up."""
    app.queues.set_concurrency(name, n)
    click.echo(f"{name}: concurrency {n}")


@queue.command("set-handler")
@NAME
@click.argument("handler", metavar="MOD:FUNC")
@pass_app
def set_handler(app: App, name: str, handler: str) -> None:
    """Set NAME's handler import path."""
    app.queues.set_handler(name, handler)
    click.echo(f"{name}: handler {handler}")


@queue.command()
@NAME
@pass_app
def pause(app: App, name: str) -> None:
    """Stop assigning NAME; a running consumer stops receiving."""
    app.queues.set_paused(name, True)
    click.echo(f"{name}: paused")


@queue.command()
@NAME
@pass_app
def resume(app: App, name: str) -> None:
    """Assign NAME again."""
    app.queues.set_paused(name, False)
    click.echo(f"{name}: resumed")


@queue.command()
@NAME
@pass_app
def purge(app: App, name: str) -> None:
    """Delete every message in NAME."""
    app.queues.purge(name)
    click.echo(f"{name}: purged")


@queue.command()
@NAME
@pass_app
def redrive(app: App, name: str) -> None:
    """Move the messages of NAME's DLQ back to NAME."""
    moved = app.queues.redrive(name)
    click.echo(f"{name}: moved {moved} messages back from its DLQ")


@queue.command()
@pass_app
def sync(app: App) -> None:
    """Create in SQS every queue that MongoDB has and SQS lacks."""
    created = app.queues.sync()
    for record in created:
        click.echo(f"created {record.name} in SQS")
    click.echo(f"synced: {len(created)} queue(s) created")
