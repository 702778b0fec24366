"""The HTTP server of the API: stdlib threads next to the master's loop, so that a slow
request never delays a master cycle, and at most MAX_REQUESTS at once, so that requests
never crowd out the master's own work."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from orchestrator.config import Settings, url_host
from orchestrator.http.api import DIGITS, Api, Request, Response, error_response

log = structlog.get_logger()

MAX_BODY_BYTES = 64 * 1024
MAX_REQUESTS = 8  # served at once; more wait for a slot
HEALTH_REQUESTS = 2  # /health has slots of its own: a busy API still says how it is
BUSY_WAIT_SECONDS = 10.0
SOCKET_TIMEOUT_SECONDS = 10  # a client that stops mid-request frees its thread
READ_SECONDS = 10.0  # the most a client may take to send its whole request
BIND_RETRY_MAX_SECONDS = 30.0


class ApiServer:
    """Serves an Api on API_HOST:PORT from its own threads; retries the bind if it fails."""

    def __init__(self, settings: Settings, api: Api) -> None:
        self.settings = settings
        self.api = api
        self.server: _Server | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.context = structlog.contextvars.get_contextvars()  # role, pid, master_id
        self.thread = threading.Thread(target=self._serve, name="api", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop accepting requests (in-flight ones are cut off with the process)."""
        with self.lock:
            self.stopping.set()
            server = self.server
        if server is not None:
            server.shutdown()  # returns at once if serve_forever has not started yet
            server.server_close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        structlog.contextvars.bind_contextvars(**self.context)
        delay = 1.0
        host, port = self.settings.api_host, self.settings.port
        while not self.stopping.is_set():
            try:
                server = _Server((host, port), self.api, self.context)
            except OSError as exc:
                # Another process may hold the port (two masters on one host): say so and
                # retry with backoff, while the master goes on with its real work.
                log.error("api.bind_failed", host=host, port=port, error=exc.strerror or str(exc),
                          retry_in=delay)  # fmt: skip
                if self.stopping.wait(delay):
                    return
                delay = min(delay * 2, BIND_RETRY_MAX_SECONDS)
                continue
            with self.lock:  # a stop() that came first must not leave a server running
                if self.stopping.is_set():
                    server.server_close()
                    return
                self.server = server
            self._announce(server)
            server.serve_forever(poll_interval=0.2)
            return

    def _announce(self, server: _Server) -> None:
        bound_host, bound_port = server.server_address[:2]
        url = f"http://{url_host(str(bound_host))}:{bound_port}/"
        token = ("required for changes and DLQ looks" if self.settings.api_token
                 else "none (changes are open)")  # fmt: skip
        if self.api.loopback_only:
            log.info("api.listening", url=url, reachable_from="this host only (loopback)",
                     token=token)  # fmt: skip
        else:
            log.warning("api.listening", url=url, reachable_from="the network", token=token)


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most MAX_REQUESTS served at once, logged like the master."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: Api, context: dict[str, Any]) -> None:
        self.api = api
        self.context = context
        self.slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self.health_slots = threading.BoundedSemaphore(HEALTH_REQUESTS)
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        structlog.contextvars.bind_contextvars(**self.context)
        super().process_request_thread(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # the client went away (a dashboard tab closed mid-refresh)
        log.exception("api.connection_failed")


class _Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0). Its line and headers are checked first
    (route, token, media type): a client without the token never gets as far as having
    its body read or holding a request slot. Reading the request may take READ_SECONDS
    in all, however slowly a client trickles it."""

    server: _Server
    server_version = "orchestrator"
    timeout = SOCKET_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.cutoff = threading.Timer(READ_SECONDS, self._cut)
        self.cutoff.daemon = True
        self.cutoff.start()

    def _cut(self) -> None:
        """The client took too long to send its request: close the connection."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self.cutoff.cancel()
        super().finish()

    def do_GET(self) -> None:
        started = time.perf_counter()
        response = self._respond()
        self._send(response)
        ms = round((time.perf_counter() - started) * 1000, 1)
        log.debug("api.request", method=self.command, path=self.path.split("?")[0],
                  status=response.status, ms=ms)  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        # Every method (QUERY, TRACE, ...) goes through the router: one that a path does
        # not take is a JSON 405, not the stdlib's HTML 501.
        if name.startswith("do_"):
            return self.do_GET
        raise AttributeError(name)

    def _respond(self) -> Response:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = parse_qs(parts.query, keep_blank_values=True)  # "?limit=" is a bad limit
        request = Request(self.command, parts.path, query, headers)
        refused = self._refuse_length() or self.server.api.admit(request)
        if refused is not None:
            return refused
        length = int(self.headers.get("Content-Length") or 0)
        request.body = self.rfile.read(length)
        if len(request.body) < length:
            return error_response(400, "the body ended before its Content-Length")
        self.cutoff.cancel()  # read in time: what follows is the server's time, not its
        slots = self.server.health_slots if parts.path == "/health" else self.server.slots
        if not slots.acquire(timeout=BUSY_WAIT_SECONDS):
            return error_response(503, "the API is busy; try again")
        try:
            return self.server.api.dispatch(request)
        finally:
            slots.release()

    def _refuse_length(self) -> Response | None:
        """One Content-Length of digits, within MAX_BODY_BYTES; no other framing."""
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            return error_response(400, "Content-Length is given more than once")
        if self.headers.get("Transfer-Encoding"):
            return error_response(400, "Transfer-Encoding is not supported; send Content-Length")
        raw = lengths[0] if lengths else "0"
        if not DIGITS.fullmatch(raw):
            return error_response(400, f"bad Content-Length {raw!r}")
        if int(raw) > MAX_BODY_BYTES:
            return error_response(413, f"the body is over {MAX_BODY_BYTES} bytes")
        return None

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (414 a request line too long, 431 too many or too long
        headers, 400 a malformed request line) in JSON, like every other error."""
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._send(error_response(code, text), {"Connection": "close"})

    def _send(self, response: Response, extra: dict[str, str] | None = None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in {**response.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged by do_GET, through structlog
