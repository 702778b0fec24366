"""`orchestrator queue apply` and `queue export`: queues as code (README, "Queues as code").

The file is read and checked whole (orchestrator/queuefile.py) before any connection is
made; the plan is printed whole before anything is changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import click

from orchestrator import queuefile
from orchestrator.cli.app import App, pass_app
from orchestrator.cli.types import QueueName
from orchestrator.errors import QueueFileInvalid

T = TypeVar("T")
DONE = {"create": "created", "adopt": "adopted", "update": "updated", "remove": "removed"}


@click.command()
@click.argument("file", metavar="FILE")
@click.option(
    "--prune",
    is_flag=True,
    help="Also remove the queues FILE lacks: a managed queue is deleted in SQS with "
    "its DLQ, an adopted one only forgotten.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@pass_app
def apply(app: App, file: str, prune: bool, dry_run: bool) -> None:  # fmt: skip
    """Make the queues match FILE (YAML or JSON; - for standard input): create, adopt and
    update them, printing the plan first. Every problem in FILE is named with its line
    before anything is changed (exit 2). A setting FILE omits is left as it is."""
    source = "<stdin>" if file == "-" else file
    text = _read(file)
    specs = _or_exit(source, lambda: queuefile.load(text, source, app.settings))
    records = app.store.list_queues()
    changes = _or_exit(source, lambda: queuefile.plan(
        specs, records, prune, default_region=app.settings.aws_region))  # fmt: skip
    if not changes:
        click.echo(f"No changes: {len(specs)} queues match {source}.")
        return
    for change in changes:
        for line in change.lines():
            click.echo(line)
    if dry_run:
        click.echo("Dry run: nothing was changed.")
        return
    done: Counter[str] = Counter()
    for change in changes:
        _apply(app, change)
        done[change.action] += 1
    click.echo("Applied: " + ", ".join(f"{done[a]} {d}" for a, d in DONE.items()) + ".")
    for change in changes:
        if change.spec is not None and "handler" in change.spec.tuning:
            app.warn_if_unimportable(change.spec.tuning["handler"])


def _read(file: str) -> str:
    try:
        with click.open_file(file, "rb") as stream:
            data: bytes = stream.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {file!r}: {exc.strerror or exc}",
                                 param_hint="'FILE'") from exc  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{file!r} is not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start})", param_hint="'FILE'") from exc  # fmt: skip


def _or_exit(source: str, step: Callable[[], T]) -> T:
    """The step's result; its problems each on a line of stderr, then exit 2."""
    try:
        return step()
    except QueueFileInvalid as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        count = len(exc.problems)
        click.echo(f"Error: {count} problem{'s' if count != 1 else ''} in {source}; nothing "
                   "was changed", err=True)  # fmt: skip
        raise click.exceptions.Exit(2) from exc


def _apply(app: App, change: queuefile.Change) -> None:
    """One step of the plan, through QueueAdmin as the other queue commands do it."""
    spec = change.spec
    if change.action == "remove":
        app.queues.delete(change.name)
        return
    assert spec is not None
    if change.action == "create":
        assert spec.create is not None
        c = spec.create
        app.queues.create(spec.name, dlq=bool(c.dlq), max_receive_count=c.max_receive_count,
                          visibility_timeout=c.visibility_timeout
                          or queuefile.DEFAULT_VISIBILITY_TIMEOUT, **spec.tuning)  # fmt: skip
    elif change.action == "adopt":
        assert spec.adopt is not None
        app.queues.adopt(spec.adopt, name=spec.name, region=spec.region,
                         role_arn=spec.role_arn, **spec.tuning)  # fmt: skip
    else:
        tuning = {queuefile.TUNING[key]: new for key, _, new in change.updates
                  if key in queuefile.TUNING}  # fmt: skip
        if tuning:
            app.queues.update(change.name, **tuning)
        for key, _, new in change.updates:
            if key == "roleArn":  # not a tunable: QueueAdmin.update does not take it
                app.queues.set_role(change.name, new)


@click.command()
@click.argument("names", nargs=-1, type=QueueName(), metavar="[NAME]...")
@pass_app
def export(app: App, names: tuple[str, ...]) -> None:
    """Print the queues (all, or each NAME) as a file `queue apply` takes, every setting
    written: `queue export | queue apply -` changes nothing."""
    records = [app.store.get_queue(n) for n in names] if names else app.store.list_queues()
    click.echo(queuefile.dump(records, app.settings.aws_region), nl=False)
