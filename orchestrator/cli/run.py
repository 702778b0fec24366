"""`orchestrator run`: the daemon, in mode M, W or MW."""

from __future__ import annotations

import os

import click

from orchestrator.cli.app import App, pass_app
from orchestrator.cli.types import StrictInt
from orchestrator.config import MODES


@click.command()
@click.option(
    "--mode",
    type=click.Choice(MODES, case_sensitive=False),
    envvar="MODE",
    default="MW",
    show_default=True,
    help="M: master only; W: workers only; MW: both in one process tree.",
)
@click.option(
    "--workers",
    type=StrictInt(1, 64),
    default=None,
    help="Worker processes to run (default WORKER_INSTANCES).",
)
@pass_app
def run(app: App, mode: str, workers: int | None) -> None:
    """Run the daemon until SIGTERM or Ctrl-C (a second one stops at once)."""
    from orchestrator import log, tracing
    from orchestrator.roles.process.supervisor import Supervisor

    log.bind_process(role="supervisor", pid=os.getpid())
    _refuse_a_newer_schema(app)
    tracing.check()  # before any role starts: they inherit what it decides
    supervisor = Supervisor(
        app.settings, app.endpoints, mode.upper(), workers or app.settings.worker_instances
    )
    probes = None
    if app.settings.health_port:
        from orchestrator.http.probes import ProbeServer

        probes = ProbeServer(app.settings, supervisor.liveness, supervisor.readiness)
        probes.start()
    try:
        code = supervisor.run()
    finally:
        if probes is not None:
            probes.stop()
    raise SystemExit(code)


def _refuse_a_newer_schema(app: App) -> None:
    """Exit 2 (SchemaTooNew) before starting any role if a newer orchestrator upgraded the
    database: each role would refuse it too. Read-only. MongoDB being down is no reason
    not to start: the roles wait for it, and check the schema when it answers."""
    import structlog

    from orchestrator.backends.store import DAEMON_TIMEOUT_MS, Store
    from orchestrator.errors import ServiceUnavailable

    store = Store.connect(app.settings, app.endpoints.mongodb_uri, timeout_ms=DAEMON_TIMEOUT_MS)
    try:
        store.check_schema()
    except ServiceUnavailable as exc:
        structlog.get_logger().warning("supervisor.schema_unchecked", error=str(exc))
    finally:
        store.close()
