"""The probes of every `orchestrator run` (M, W and MW): GET /livez and GET /readyz on
API_HOST:HEALTH_PORT, JSON bodies, 200 or 503 (docs/design.md §11).

Served by the supervisor's process from a thread of its own; the answers come from the
supervisor, which knows its children and the notes they send (roles/process/status.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from orchestrator.config import Settings, url_host
from orchestrator.errors import OrchestratorError

log = structlog.get_logger()

Probe = Callable[[], tuple[bool, dict[str, Any]]]


class ProbeServer:
    """Binds at start (a taken port is an error the operator must see), serves until stop."""

    def __init__(self, settings: Settings, liveness: Probe, readiness: Probe) -> None:
        probes = {"/livez": liveness, "/readyz": readiness}
        try:
            self.server = _Server((settings.api_host, settings.health_port), probes)
        except OSError as exc:
            raise OrchestratorError(
                f"cannot serve the probes on {settings.api_host}:{settings.health_port} "
                f"(HEALTH_PORT): {exc.strerror or exc}"
            ) from exc
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={
            "poll_interval": 0.2}, name="probes", daemon=True)  # fmt: skip

    def start(self) -> None:
        self.thread.start()
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        log.info("probes.listening", url=f"http://{url_host(host)}:{port}/",
                 paths=["/livez", "/readyz"])  # fmt: skip

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], probes: dict[str, Probe]) -> None:
        self.probes = probes
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5  # a client that sends nothing does not hold a thread for long

    def do_GET(self) -> None:
        probe = self.server.probes.get(self.path.split("?", 1)[0])
        if probe is None:
            self._answer(404, {"error": f"no such probe: {self.path} (/livez, /readyz)"})
            return
        try:
            ok, doc = probe()
        except Exception:  # a bug: answer 503 (not ready, not alive), keep the traceback
            log.exception("probes.failed", path=self.path)
            ok, doc = False, {"status": "error"}
        self._answer(200 if ok else 503, doc)

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: not worth a log line each."""
