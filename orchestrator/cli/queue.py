"""`orchestrator queue …`: manage queues (the settings live in MongoDB, messages in SQS)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from orchestrator import validate
from orchestrator.cli import queuefile, render
from orchestrator.cli.app import App, Group, json_option, pass_app
from orchestrator.cli.types import INT, NO_LIMIT, NUMBER, RATE, QueueName, StrictInt
from orchestrator.models import QueueRecord

NAME = click.argument("name", type=QueueName())
YES_REALLY = click.option("--yes-really", is_flag=True,
                          help="Needed for an adopted queue: its messages are its team's.")
# So that `send q -5` reports a bad count rather than an unknown option "-5".
NUMBER_ARGS = {"ignore_unknown_options": True}


@click.group(cls=Group)
def queue() -> None:
    """Create, change and inspect queues."""


# The settings `create` and `set` share: all optional (None: not given).
TUNING = [
    click.option("--concurrency", type=INT, metavar="N",
                 help="Handlers run at once (default DEFAULT_CONCURRENCY)."),
    click.option("--handler", metavar="MOD:FUNC",
                 help="Import path of the handler (default DEFAULT_HANDLER)."),
    click.option("--processes", type=INT, metavar="P",
                 help="Handler processes on the assigned worker; the concurrency is split "
                      "across them (default 1)."),
    click.option("--batch-size", type=INT, metavar="N",
                 help="Above 1 the handler gets a list of up to N messages (default 1)."),
    click.option("--batch-window", type=NUMBER, metavar="S",
                 help="Seconds a batch may wait to fill (default 0)."),
    click.option("--rate-limit", type=RATE, metavar="R|none",
                 help="Handler starts per second for the whole queue, fleet-wide (default "
                      "none)."),
    click.option("--priority", type=INT, metavar="P",
                 help="0..9: higher is served first when workers are short, and may preempt "
                      "lower ones (default 0)."),
    click.option("--adaptive/--no-adaptive", default=None,
                 help="Halve the running concurrency on failures or Backoff, grow it back "
                      "by one a second (default off)."),
    click.option("--max-shards", type=INT, metavar="N",
                 help="Workers that may serve a backlog at once (default 1)."),
    click.option("--failure-bodies/--no-failure-bodies", default=None,
                 help="Keep the message body with each failure, for the DLQ browser "
                      "(default off: only the error)."),
]  # fmt: skip


def tuning_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(TUNING):
        command = option(command)
    return command


def given(options: dict[str, Any]) -> dict[str, Any]:
    """The tuning options given, `--rate-limit none` as no limit (None)."""
    out = {key: value for key, value in options.items() if value is not None}
    if out.get("rate_limit") == NO_LIMIT:
        out["rate_limit"] = None
    return out


@queue.command()
@NAME
@click.option("--dlq/--no-dlq", default=None, help="Create a dead-letter queue NAME-dlq.")
@click.option(
    "--max-receive-count", type=INT, help="Receives before SQS moves a message to the DLQ (5)."
)
@click.option("--visibility-timeout", type=INT, default=30, show_default=True, metavar="S")
@tuning_options
@pass_app
def create(
    app: App,
    /,
    name: str,
    dlq: bool | None,
    max_receive_count: int | None,
    visibility_timeout: int,
    **options: Any,
) -> None:
    """Create queue NAME in SQS and MongoDB."""
    if dlq is False and max_receive_count is not None:
        raise click.UsageError("--max-receive-count needs a DLQ; drop --no-dlq")
    record = app.queues.create(
        name,
        dlq=bool(dlq) or max_receive_count is not None,
        max_receive_count=max_receive_count,
        visibility_timeout=visibility_timeout,
        **given(options),
    )
    click.echo(f"created {record.name} ({_describe(record)})")
    app.warn_if_unimportable(options.get("handler"))


@queue.command()
@click.argument("ref", metavar="URL_OR_ARN")
@click.option("--name", type=QueueName(), help="Its name here (default: its name in SQS); "
              "lets same-named queues of other accounts or regions live side by side.")
@click.option("--region", metavar="R", help="Its region, where the URL names none (local "
              "servers' URLs do not; default AWS_REGION).")
@click.option("--role-arn", metavar="ARN", help="An IAM role to assume for every call on it "
              "(another account's queue).")
@tuning_options
@pass_app
def adopt(app: App, /, ref: str, name: str | None, region: str | None, role_arn: str | None,
          **options: Any) -> None:  # fmt: skip
    """Run a queue that exists in SQS (made by Terraform or CloudFormation) as it is:
    the product never creates, changes, purges or deletes it."""
    record = app.queues.adopt(ref, name=name, region=region, role_arn=role_arn,
                              **given(options))  # fmt: skip
    role = f", as {record.role_arn}" if record.role_arn else ""
    click.echo(f"adopted {record.name}: {record.queue_url} ({record.region}, account "
               f"{record.account}{role}; {_describe(record)})")
    app.warn_if_unimportable(options.get("handler"))


def _describe(record: QueueRecord) -> str:
    notes = ""
    if record.processes > 1:
        notes += f", {record.processes} processes"
    if record.batch_size > 1:
        window = validate.number_text(record.batch_window)
        notes += f", batches of {record.batch_size} within {window} s"
    if record.rate_limit is not None:
        notes += f", at most {validate.number_text(record.rate_limit)} starts/s"
    if record.priority:
        notes += f", priority {record.priority}"
    if record.adaptive:
        notes += ", adaptive"
    if record.max_shards > 1:
        notes += f", up to {record.max_shards} shards"
    if record.failure_bodies:
        notes += ", failures keep bodies"
    if record.dlq_name:
        notes += f", DLQ {record.dlq_name} after {record.max_receive_count} receives"
    return f"concurrency {record.concurrency}, handler {record.handler}{notes}"


@queue.command()
@NAME
@pass_app
def delete(app: App, name: str) -> None:
    """Delete queue NAME (and its DLQ) from SQS and MongoDB; an adopted queue is only
    forgotten (it and its DLQ stay in SQS)."""
    record = app.queues.delete(name)
    if record.managed:
        click.echo(f"deleted {name}")
    else:
        click.echo(f"forgot {name}: it is adopted, so it and its DLQ stay in SQS "
                   f"({record.queue_url})")


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
@click.option("--body-file", type=click.Path(dir_okay=False, allow_dash=True), metavar="PATH",
              help="Read the body from PATH (- for standard input), byte for byte: for "
                   "bodies too long for the command line. Not with --body.")
@click.option("--group-id", metavar="G", help="FIFO queues: the message group (default 'default').")
@click.option("--groups", type=INT, metavar="N",
              help="FIFO queues: spread the messages round-robin over groups g0..gN-1.")
@click.option("--trace", is_flag=True,
              help="Give each message a traceparent attribute: its handler's span joins "
                   "that trace.")
@pass_app
def send(app: App, name: str, count: int, body: str | None, body_file: str | None,
         group_id: str | None, groups: int | None, trace: bool) -> None:  # fmt: skip
    """Send COUNT test messages to NAME, 10 per request."""
    if body is not None and body_file is not None:
        raise click.UsageError("give either --body or --body-file, not both")
    if body_file is not None:
        body = _read_body(body_file)

    def send_all(progress: Callable[[int], None]) -> None:
        app.queues.send(name, count, body, progress, group_id=group_id, groups=groups,
                        trace=trace)  # fmt: skip

    if sys.stdout.isatty() and count > 0:
        with click.progressbar(length=count, label=f"sending to {name}") as bar:
            send_all(bar.update)
    else:
        send_all(lambda n: None)
    click.echo(f"sent {render.counted(count, 'message')} to {name}")


def _read_body(path: str) -> str:
    """A body file's text (`-`: standard input). Bytes that are not UTF-8 are kept as argv's
    are (surrogateescape), so that the body check names them the same way. No more than a
    byte over SQS's limit is read: the check refuses it whatever follows."""
    try:
        with click.open_file(path, "rb") as file:
            data: bytes = file.read(validate.MAX_BODY_BYTES + 1)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path!r}: {exc.strerror or exc}",
                                 param_hint="'--body-file'") from exc  # fmt: skip
    if len(data) > validate.MAX_BODY_BYTES:
        raise click.BadParameter(f"{path!r} is over {validate.MAX_BODY_BYTES:,} bytes, SQS's "
                                 "limit for a message", param_hint="'--body-file'")  # fmt: skip
    return data.decode("utf-8", "surrogateescape")


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
@tuning_options
@pass_app
def set_(app: App, /, name: str, **options: Any) -> None:
    """Change several of NAME's settings at once: all are checked before any is written.
    Running consumers pick the changes up within 2 s (a new handler applies from the
    queue's next assignment)."""
    changes = given(options)
    if not changes:
        raise click.UsageError(
            "nothing to set; give any of "
            + ", ".join(option.opts[0] for option in _tuning_params())
        )
    record = app.queues.update(name, **changes)
    click.echo(f"{name}: " + ", ".join(f"{key.replace('_', ' ')} {_shown(record, key)}"
                                       for key in changes))  # fmt: skip
    app.warn_if_unimportable(changes.get("handler"))


def _tuning_params() -> list[click.Option]:
    return [p for p in set_.params if isinstance(p, click.Option)]


def _shown(record: QueueRecord, key: str) -> str:
    value = getattr(record, key)
    if value is None:
        return "none"
    return validate.number_text(value) if isinstance(value, float) else str(value)


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
    app.warn_if_unimportable(handler)


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
@YES_REALLY
@pass_app
def purge(app: App, name: str, yes_really: bool) -> None:
    """Delete every message in NAME."""
    app.queues.purge(name, yes_really)
    click.echo(f"{name}: purged")


IDS = click.option("--id", "ids", multiple=True, metavar="ID",
                   help="Only this DLQ message (repeat for more); default: all.")


@queue.command()
@NAME
@IDS
@pass_app
def redrive(app: App, name: str, ids: tuple[str, ...]) -> None:
    """Move the messages of NAME's DLQ (all, or those of --id) back to NAME."""
    done = app.queues.redrive(name, ids or None)
    click.echo(f"{name}: moved {render.counted(done.count or 0, 'message')} back from its DLQ")
    _fail_on_not_found(name, done.not_found)


@queue.command()
@NAME
@click.option("--limit", type=StrictInt(1, 1000), default=20, show_default=True,
              help="Messages to show at most.")
@json_option
@pass_app
def dlq(app: App, name: str, limit: int, as_json: bool) -> None:
    """List the messages in NAME's DLQ with the last failure of each. Reading a DLQ
    message is a receive: each look raises its receive count by one."""
    look = app.queues.dlq(name, limit)
    found = [d.to_json(preview=80 if not as_json else 2048) for d in look.letters]
    if len(found) < min(limit, look.held):
        why = (": a FIFO DLQ shows at most the first 10 messages of each group (SQS's group "
               "lock; README, \"Dead letters\")" if name.endswith(".fifo") else "")
        click.echo(f"{name}: showing {len(found)} of about {look.held} messages in its DLQ"
                   f"{why}", err=True)  # fmt: skip
    if as_json:
        render.emit_json(found)
        return
    render.table(
        ["MESSAGE ID", "RECEIVES", "LAST ERROR", "BODY"],
        [[d["messageId"], d["receiveCount"],
          _last_error(d["lastFailure"]), d["body"]] for d in found],
    )  # fmt: skip


def _last_error(failure: dict[str, Any] | None) -> str:
    if failure is None:
        return "-"
    return f'{failure["errorType"]}: {failure["error"]}'[:60]


@queue.command("dlq-purge")
@NAME
@IDS
@YES_REALLY
@pass_app
def dlq_purge(app: App, name: str, ids: tuple[str, ...], yes_really: bool) -> None:
    """Delete the messages of NAME's DLQ (all, or those of --id)."""
    done = app.queues.dlq_purge(name, ids or None, yes_really)
    what = "every message" if done.count is None else render.counted(done.count, "message")
    click.echo(f"{name}: deleted {what} from its DLQ")
    _fail_on_not_found(name, done.not_found)


def _fail_on_not_found(name: str, not_found: list[str]) -> None:
    """Ids asked for and not found: named on stderr, exit 1 (what was found was done)."""
    if not_found:
        why = (" (in a FIFO DLQ, also a message behind the first 10 of its group: SQS's group "
               "lock; README, \"Dead letters\")" if name.endswith(".fifo") else "")
        click.echo(f"Error: {name}: {render.counted(len(not_found), 'message id')} not found "
                   f"in its DLQ: {', '.join(not_found)}{why}", err=True)  # fmt: skip
        click.get_current_context().exit(1)


@queue.command()
@pass_app
def sync(app: App) -> None:
    """Create in SQS every queue that MongoDB has and SQS lacks."""
    created = app.queues.sync()
    for record in created:
        click.echo(f"created {record.name} in SQS")
    click.echo(f"synced: {len(created)} queue(s) created")


queue.add_command(queuefile.apply)  # queues as code: orchestrator/cli/queuefile.py
queue.add_command(queuefile.export)
