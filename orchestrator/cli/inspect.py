"""`orchestrator jobs …`, `workers list` and `status`: what the fleet is doing."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli import render
from orchestrator.cli.app import App, Group, json_option, pass_app
from orchestrator.cli.types import StrictInt
from orchestrator.models import JOB_STATES, utcnow


@click.group(cls=Group)
def jobs() -> None:
    """Inspect jobs: one per assignment of a queue to a worker."""


@jobs.command("list")
@click.option("--status", type=click.Choice(JOB_STATES), help="Only jobs in this state.")
@click.option("--queue", "queue_name", metavar="NAME", help="Only jobs of this queue.")
@click.option("--limit", type=StrictInt(1, 10_000), default=20, show_default=True)
@json_option
@pass_app
def list_jobs(
    app: App, status: str | None, queue_name: str | None, limit: int, as_json: bool
) -> None:
    """List the newest jobs first."""
    found = app.store.jobs(status, queue_name, limit)
    if as_json:
        render.emit_json([j.to_json() for j in found])
        return
    render.table(
        ["ID", "QUEUE", "STATUS", "HANDLED", "FAILED", "WORKER", "CREATED", "REASON"],
        [
            [j.id, j.queue_name, j.status, j.message_count, j.failed_count, j.worker_id,
             j.created_at.strftime("%Y-%m-%d %H:%M:%S"), j.end_reason]
            for j in found
        ],
    )  # fmt: skip


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@json_option
@pass_app
def show_job(app: App, job_id: str, as_json: bool) -> None:
    """Show one job."""
    job = app.store.job(job_id)
    if job is None:
        raise click.ClickException(f"job {job_id} does not exist")
    doc = job.to_json()
    if as_json:
        render.emit_json(doc)
        return
    render.fields(doc)


@click.group(cls=Group)
def workers() -> None:
    """Inspect workers."""


def _workers(app: App) -> list[dict[str, Any]]:
    loads = app.store.worker_loads()
    now = utcnow()
    return [w.to_json(loads[w.id], now) for w in app.store.workers()]


@workers.command("list")
@json_option
@pass_app
def list_workers(app: App, as_json: bool) -> None:
    """List live workers with their load and consumers."""
    found = _workers(app)
    if as_json:
        render.emit_json(found)
        return
    render.table(
        ["ID", "STATUS", "LOAD", "HEARTBEAT AGO", "CONSUMERS (PID:QUEUE RSS CPU)"],
        [
            [w["id"], w["status"], f"{w['load']}/{w['maxLoad']}", f"{w['heartbeatAgeSeconds']}s",
             ", ".join(f"{c['pid']}:{c['queueName'] or 'idle'} {c['rssMb']}MB "
                       f"{c['cpuPercent']}%" for c in w["consumers"])]
            for w in found
        ],
    )  # fmt: skip


@click.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Queues with depth and worker, workers with load, and job counts."""
    queues = [v.to_json() for v in app.queues.views()]
    found = _workers(app)
    counts = {s: 0 for s in JOB_STATES} | app.store.job_counts()
    lease = app.store.lease()
    leader = lease.holder if lease and lease.expires_at and lease.expires_at > utcnow() else None
    if as_json:
        render.emit_json({"queues": queues, "workers": found, "jobs": counts, "leader": leader})
        return
    render.table(
        ["QUEUE", "VISIBLE", "IN FLIGHT", "CONCURRENCY", "PAUSED", "WORKER"],
        [[q["name"], q["visible"], q["inFlight"], q["concurrency"], q["paused"], q["worker"]]
         for q in queues],
    )  # fmt: skip
    click.echo()
    render.table(
        ["WORKER", "STATUS", "LOAD", "CONSUMERS"],
        [[w["id"], w["status"], f"{w['load']}/{w['maxLoad']}", len(w["consumers"])]
         for w in found],
    )  # fmt: skip
    click.echo()
    click.echo("jobs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    click.echo(f"leader: {leader or 'none'}")
