"""HTTP API, dashboard and /metrics, served by every master process on API_HOST:PORT.

`Api.dispatch` turns a request into a response (routing, the token for writes,
JSON errors); `ApiServer` runs it on a threaded stdlib HTTP server next to the
master's loop, so that a slow request never delays a master cycle.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from prometheus_client import CollectorRegistry

from orchestrator import exposition
from orchestrator.config import Settings
from orchestrator.errors import (
    InvalidValue,
    NameTaken,
    NoDeadLetterQueue,
    OrchestratorError,
    QueueExists,
    QueueNotFound,
    ServiceUnavailable,
)
from orchestrator.fleet import Fleet
from orchestrator.models import JOB_STATES
from orchestrator.openapi import spec

log = structlog.get_logger()

MAX_BODY_BYTES = 64 * 1024
MAX_JOBS = 1000
SOCKET_TIMEOUT_SECONDS = 10  # a client that stops mid-request frees its thread
BIND_RETRY_MAX_SECONDS = 30.0
PATCHABLE = {"concurrency": int, "paused": bool, "handler": str}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
STATUS_BY_ERROR: list[tuple[type[OrchestratorError], int]] = [
    (QueueNotFound, 404),
    (InvalidValue, 422),
    (QueueExists, 409),
    (NameTaken, 409),
    (NoDeadLetterQueue, 409),
    (ServiceUnavailable, 503),
]
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
)


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        if self.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HttpError(415, "send the body as JSON with Content-Type: application/json")
        try:
            doc = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise HttpError(400, "the body must be a JSON object")
        return doc

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc, default=str).encode())


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    doc = {"status": status, "error": HTTPStatus(status).phrase, "message": message}
    return Response(status, json.dumps(doc).encode(), headers=headers or {})


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    call: Callable[[Request], Response]
    write: bool = False


class Api:
    """Routes requests to the fleet; writes need the token when API_TOKEN is set."""

    def __init__(
        self,
        settings: Settings,
        fleet: Fleet,
        registry: CollectorRegistry,
        health: Callable[[], dict[str, Any]],
    ) -> None:
        self.settings = settings
        self.fleet = fleet
        self.registry = registry
        self.health = health
        self.loopback_only = is_loopback(settings.api_host)
        self.routes = [
            Route("GET", _path("/"), self.dashboard),
            Route("GET", _path("/health"), lambda r: json_response(self.health())),
            Route("GET", _path("/metrics"), self.metrics),
            Route("GET", _path("/openapi.json"), lambda r: json_response(spec())),
            Route("GET", _path("/api/queues"), lambda r: json_response(self.fleet.queues())),
            Route("GET", _path("/api/queues/{name}"), self.get_queue),
            Route("PATCH", _path("/api/queues/{name}"), self.patch_queue, write=True),
            Route("POST", _path("/api/queues/{name}/redrive"), self.redrive, write=True),
            Route("GET", _path("/api/workers"), lambda r: json_response(self.fleet.workers())),
            Route("GET", _path("/api/jobs"), self.jobs),
            Route("GET", _path("/api/jobs/{id}"), self.job),
        ]

    def dispatch(self, request: Request) -> Response:
        try:
            self._check_host(request)
            route = self._route(request)
            if route.write:
                self._authorize(request)
            return route.call(request)
        except HttpError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except OrchestratorError as exc:
            status = next((s for t, s in STATUS_BY_ERROR if isinstance(exc, t)), 500)
            return error_response(status, str(exc))
        except Exception:  # a request's boundary: the traceback goes to the log only
            log.exception("api.request_failed", method=request.method, path=request.path)
            return error_response(500, "internal error (logged by the master)")

    def _route(self, request: Request) -> Route:
        allowed = []
        for route in self.routes:
            match = route.pattern.fullmatch(request.path)
            if match is None:
                continue
            if route.method == request.method:
                request.params = {k: unquote(v) for k, v in match.groupdict().items()}
                return route
            allowed.append(route.method)
        if allowed:
            raise HttpError(405, f"{request.method} is not allowed on {request.path}",
                            {"Allow": ", ".join(allowed)})  # fmt: skip
        raise HttpError(404, f"no such resource: {request.path}")

    def _check_host(self, request: Request) -> None:
        """Bound to loopback, answer only requests addressed to it: a web page must not
        reach the API by pointing its own host name at 127.0.0.1 (DNS rebinding)."""
        host = request.headers.get("host")
        if not self.loopback_only or host is None:
            return
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.strip("[]").lower() not in LOOPBACK_NAMES:
            raise HttpError(403, f"host {host!r} is not this API's address")

    def _authorize(self, request: Request) -> None:
        token = self.settings.api_token
        if not token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            raise HttpError(
                401,
                "this API requires 'Authorization: Bearer <API_TOKEN>' for changes",
                {"WWW-Authenticate": 'Bearer realm="orchestrator"'},
            )

    # --- resources ---------------------------------------------------------------

    def dashboard(self, request: Request) -> Response:
        page = resources.files("orchestrator").joinpath("static/dashboard.html").read_bytes()
        return Response(200, page, "text/html; charset=utf-8", {"Content-Security-Policy":
                                                                 DASHBOARD_CSP})  # fmt: skip

    def metrics(self, request: Request) -> Response:
        return Response(200, exposition.render(self.registry), exposition.CONTENT_TYPE)

    def get_queue(self, request: Request) -> Response:
        return json_response(self.fleet.queue(request.params["name"]))

    def patch_queue(self, request: Request) -> Response:
        name = request.params["name"]
        changes = patch_changes(request.json())
        queue = self.fleet.update_queue(name, changes)
        log.info("api.queue_updated", queue=name, changes=changes)
        return json_response(queue)

    def redrive(self, request: Request) -> Response:
        if request.body:
            request.json()  # a body, if any, must be JSON (a form post is refused)
        elif "application/json" not in request.headers.get("content-type", ""):
            raise HttpError(415, "send Content-Type: application/json")
        result = self.fleet.redrive(request.params["name"])
        log.info("api.queue_redriven", queue=result["name"], moved=result["moved"])
        return json_response(result)

    def jobs(self, request: Request) -> Response:
        status = request.arg("status") or None
        if status is not None and status not in JOB_STATES:
            raise HttpError(400, f"status must be one of {', '.join(JOB_STATES)} (got {status!r})")
        raw_limit = request.arg("limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_JOBS:
            raise HttpError(400, f"limit must be from 1 to {MAX_JOBS} (got {raw_limit!r})")
        return json_response(self.fleet.jobs(status, request.arg("queue") or None, int(raw_limit)))

    def job(self, request: Request) -> Response:
        job_id = request.params["id"]
        try:
            found = self.fleet.job(job_id)
        except InvalidValue:
            found = None  # not an ObjectId: no such job either
        if found is None:
            raise HttpError(404, f"job {job_id} does not exist")
        return json_response(found)


def patch_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body's fields, type-checked (400); their values are validated later (422)."""
    unknown = sorted(set(body) - PATCHABLE.keys())
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(PATCHABLE)}")  # fmt: skip
    if not body:
        raise HttpError(400, f"nothing to change; send any of {', '.join(PATCHABLE)}")
    for key, value in body.items():
        kind = PATCHABLE[key]
        # bool is an int in Python; JSON's true is not a concurrency.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise HttpError(400, f"{key} must be a JSON {_json_type(kind)} (got {value!r})")
    return body


def _json_type(kind: type) -> str:
    return {int: "integer", bool: "boolean", str: "string"}[kind]


def _path(template: str) -> re.Pattern[str]:
    """`/api/queues/{name}` → a pattern with a named group for each segment."""
    return re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template))


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiServer:
    """Serves an Api on API_HOST:PORT from its own threads; retries the bind if it fails."""

    def __init__(self, settings: Settings, api: Api) -> None:
        self.settings = settings
        self.api = api
        self.server: ThreadingHTTPServer | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="api", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop accepting requests (in-flight ones are cut off with the process)."""
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def address(self) -> tuple[str, int] | None:
        return self.server.server_address[:2] if self.server else None  # type: ignore[return-value]

    def _serve(self) -> None:
        delay = 1.0
        host, port = self.settings.api_host, self.settings.port
        while not self.stopping.is_set():
            try:
                server = ThreadingHTTPServer((host, port), _handler_class(self.api))
            except OSError as exc:
                # Another process may hold the port (two masters on one host): say so and
                # retry with backoff, while the master goes on with its real work.
                log.error("api.bind_failed", host=host, port=port, error=exc.strerror or str(exc),
                          retry_in=delay)  # fmt: skip
                if self.stopping.wait(delay):
                    return
                delay = min(delay * 2, BIND_RETRY_MAX_SECONDS)
                continue
            server.daemon_threads = True
            self.server = server
            self._announce(server)
            server.serve_forever(poll_interval=0.2)
            return

    def _announce(self, server: ThreadingHTTPServer) -> None:
        bound_host, bound_port = server.server_address[:2]
        url = f"http://{_url_host(str(bound_host))}:{bound_port}/"
        token = "required for changes" if self.settings.api_token else "none (changes are open)"
        if self.api.loopback_only:
            log.info("api.listening", url=url, reachable_from="this host only (loopback)",
                     token=token)  # fmt: skip
        else:
            log.warning("api.listening", url=url, reachable_from="the network", token=token)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _handler_class(api: Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "orchestrator"
        timeout = SOCKET_TIMEOUT_SECONDS

        def do_GET(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            started = time.perf_counter()
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Request(self.command, parts.path, parse_qs(parts.query), headers)
            raw_length = headers.get("content-length") or "0"
            length = int(raw_length) if raw_length.isdigit() else -1
            if length < 0:
                response = error_response(400, f"bad Content-Length {raw_length!r}")
            elif length > MAX_BODY_BYTES:
                response = error_response(413, f"the body is over {MAX_BODY_BYTES} bytes")
            else:
                request.body = self.rfile.read(length) if length > 0 else b""
                response = api.dispatch(request)
            self._send(response)
            log.debug("api.request", method=self.command, path=parts.path, status=response.status,
                      ms=round((time.perf_counter() - started) * 1000, 1))  # fmt: skip

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged by _serve, through structlog

    return Handler
