"""Entry point of every child process: `python -m orchestrator.roles.process.child ROLE`,
whose boot document (settings, endpoints, role arguments) arrives on stdin, or `forked`
for a consumer forked from the fork server (forkserver.py).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import structlog

from orchestrator import handlers, log
from orchestrator.config import Endpoints, Settings
from orchestrator.errors import SchemaTooNew
from orchestrator.roles.process import processes, signals
from orchestrator.roles.process.status import Reporter

CRASH_EXIT = 70  # an unexpected error ended the process (EX_SOFTWARE)
# The database has a newer schema than this code (SchemaTooNew): a restart cannot help,
# and the supervisor stops the daemon with this code (roles/process/supervisor.py).
REFUSED_EXIT = SchemaTooNew.exit_code


def main() -> None:
    role = sys.argv[1]
    signals.reset_in_child()
    settings, endpoints, extra = processes.read_boot_document()
    _run(role, settings, endpoints, extra)


def forked(role: str, boot: dict[str, Any], channel: socket.socket) -> None:
    """A process forked from the fork server: the same as `main`, its channel passed in."""
    signals.reset_in_child()
    processes.name_process(f"orc-{role}")
    settings, endpoints, extra = processes.parse_boot_document(boot)
    extra["channel_fd"] = channel.detach()
    _run(role, settings, endpoints, extra)


def _run(role: str, settings: Settings, endpoints: Endpoints, extra: dict[str, Any]) -> None:
    log.configure(settings, role=role, pid=os.getpid())
    # Consumers and handler processes import handlers, the master's API checks them.
    handlers.use_handler_path(settings)
    reporter = Reporter(extra.get("status_fd"))  # notes for the supervisor's probes
    try:
        if role == "master":
            from orchestrator.http.service import ApiService
            from orchestrator.roles.master import master

            # The process that runs a master serves the HTTP API beside it.
            master.run(settings, endpoints,
                       lambda m: ApiService(settings, endpoints, m), reporter)  # fmt: skip
        elif role == "worker":
            from orchestrator.roles.worker import worker

            worker.run(settings, endpoints, reporter)
        elif role == "consumer":
            from orchestrator.roles.consumer import consumer

            consumer.run(settings, endpoints, int(extra["channel_fd"]))
        elif role == "handler":
            from orchestrator.roles.consumer.engine import handlerproc

            handlerproc.run(settings, extra)
        else:
            raise SystemExit(f"unknown role {role!r}")
    except SchemaTooNew as exc:  # not a crash: said in one line, no traceback
        structlog.get_logger().error("process.refused", error=str(exc))
        sys.exit(REFUSED_EXIT)
    except Exception:  # the process boundary: say what happened, with the traceback
        structlog.get_logger().exception("process.crashed")
        sys.exit(CRASH_EXIT)


if __name__ == "__main__":
    main()
