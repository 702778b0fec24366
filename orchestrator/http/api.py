"""HTTP API, dashboard and /metrics, served by every master process on API_HOST:PORT.

`Api.dispatch` turns a request into a response: routing, the Host and Origin
checks, the token for writes, JSON errors. orchestrator/http/server.py serves it.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from prometheus_client import CollectorRegistry

from orchestrator.config import Settings, is_loopback
from orchestrator.errors import (
    AlreadyRunning,
    InvalidValue,
    NameTaken,
    NoDeadLetterQueue,
    NotOurs,
    OrchestratorError,
    QueueExists,
    QueueNotFound,
    ServiceUnavailable,
)
from orchestrator.http import exposition
from orchestrator.http.fleet import MAX_QUEUE_PAGE, MAX_SERIES_NAMES, QUEUE_PAGE, Fleet
from orchestrator.http.openapi import spec
from orchestrator.models import JOB_STATES

log = structlog.get_logger()

MAX_JOBS = 1000
DIGITS = re.compile(r"[0-9]{1,9}")
# PATCH fields (JSON names) → their JSON type, and QueueAdmin.update's argument names.
PATCHABLE = {"concurrency": int, "paused": bool, "handler": str, "processes": int,
             "batchSize": int, "batchWindow": float, "rateLimit": float, "priority": int,
             "adaptive": bool, "maxShards": int, "failureBodies": bool}  # fmt: skip
NULLABLE = {"rateLimit"}  # null: no limit
UPDATE_ARGS = {"batchSize": "batch_size", "batchWindow": "batch_window",
               "rateLimit": "rate_limit", "maxShards": "max_shards",
               "failureBodies": "failure_bodies"}  # fmt: skip
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
STATUS_BY_ERROR: list[tuple[type[OrchestratorError], int]] = [
    (QueueNotFound, 404),
    (InvalidValue, 422),
    (QueueExists, 409),
    (NameTaken, 409),
    (NotOurs, 409),
    (NoDeadLetterQueue, 409),
    (AlreadyRunning, 409),
    (ServiceUnavailable, 503),
]
# The dashboard's script and styles are files of their own: no inline code runs.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
)
STATIC = {  # served as they are (no build step)
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}


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
        """The body as a JSON object (its media type was checked by dispatch: writes only).
        A key given twice is refused, not settled by whichever came last."""
        try:
            doc = json.loads(self.body or b"{}", object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise HttpError(400, "the body is nested too deeply") from exc
        if not isinstance(doc, dict):
            raise HttpError(400, "the body must be a JSON object")
        return doc

    def require_json(self) -> None:
        """Writes with a body must say JSON: a web page cannot send that without the
        browser asking first (a CORS preflight, which this API never grants). A write
        with no body and no media type is fine: a cross-site one still names its Origin,
        which the origin check refuses."""
        media_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if not media_type and self.headers.get("content-length", "0").strip() == "0":
            return  # no body at all (a redrive of everything): nothing to misread
        if media_type != "application/json":
            raise HttpError(415, "send the body as JSON with Content-Type: application/json")

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"the key {key!r} is given twice")
        doc[key] = value
    return doc


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
    # Needs the token (when API_TOKEN is set) and a same-site origin without being a write:
    # a DLQ look receives messages, raising their receive counts.
    guarded: bool = False


class Api:
    """Routes requests to the fleet; writes and DLQ looks need the token when API_TOKEN
    is set."""

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
            *(Route("GET", _path(path), self.static) for path in STATIC),
            Route("GET", _path("/health"), self.get_health),
            Route("GET", _path("/metrics"), self.metrics),
            Route("GET", _path("/openapi.json"), lambda r: json_response(spec(settings))),
            Route("GET", _path("/api/queues"), self.get_queues),
            Route("GET", _path("/api/queues/{name}"), self.get_queue),
            Route("PATCH", _path("/api/queues/{name}"), self.patch_queue, write=True),
            Route("POST", _path("/api/queues/{name}/redrive"), self.redrive, write=True),
            Route("GET", _path("/api/queues/{name}/dlq"), self.dlq, guarded=True),
            Route("GET", _path("/api/series"), self.series),
            Route("POST", _path("/api/queues/{name}/dlq/purge"), self.dlq_purge, write=True),
            Route("GET", _path("/api/fleet"), lambda r: json_response(self.fleet.need())),
            Route("GET", _path("/api/workers"), lambda r: json_response(self.fleet.workers())),
            Route("GET", _path("/api/jobs"), self.jobs),
            Route("GET", _path("/api/jobs/{id}"), self.job),
        ]

    def admit(self, request: Request) -> Response | None:
        """The checks that need only the request line and headers (host, route, and for
        writes origin, token and media type; origin and token for DLQ looks): an error
        answer, or None to go on. The server runs them before it reads a body or takes one
        of its request slots, so that a client without the token can hold neither."""
        try:
            self._admitted_route(request)
        except HttpError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        return None

    def _admitted_route(self, request: Request) -> Route:
        self._check_host(request)
        route = self._route(request)
        if route.write or route.guarded:
            self._check_origin(request)
            self._authorize(request)
        if route.write:
            request.require_json()
        return route

    def dispatch(self, request: Request) -> Response:
        try:
            return self._admitted_route(request).call(request)
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
        name = (host.rsplit(":", 1)[0] if not host.endswith("]") else host).strip("[]").lower()
        if name not in LOOPBACK_NAMES and name != self.settings.api_host.lower():
            raise HttpError(403, f"host {host!r} is not this API's address")

    def _check_origin(self, request: Request) -> None:
        """A browser names the page a write comes from: only our own pages may write."""
        origin = request.headers.get("origin")
        if origin is None:
            return  # not a browser (curl, scripts): the token, when set, decides
        if urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            raise HttpError(403, f"writes from pages of {origin} are refused")

    def _authorize(self, request: Request) -> None:
        token = self.settings.api_token
        if not token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        given_token = value.strip().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_token, token.encode()):
            raise HttpError(
                401,
                "this API requires 'Authorization: Bearer <API_TOKEN>' for changes and DLQ "
                "looks",
                {"WWW-Authenticate": 'Bearer realm="orchestrator"'},
            )

    # --- resources ---------------------------------------------------------------

    def dashboard(self, request: Request) -> Response:
        return Response(200, _static("dashboard.html"), "text/html; charset=utf-8",
                        {"Content-Security-Policy": DASHBOARD_CSP})  # fmt: skip

    def static(self, request: Request) -> Response:
        name, content_type = STATIC[request.path]
        return Response(200, _static(name), content_type)

    def get_health(self, request: Request) -> Response:
        doc = self.health()
        return json_response(doc, 200 if doc["status"] == "ok" else 503)

    def metrics(self, request: Request) -> Response:
        return Response(200, exposition.render(self.registry), exposition.CONTENT_TYPE)

    def get_queues(self, request: Request) -> Response:
        """A page of queues by name: ?limit= (1..10,000, default 1,000) &after=NAME."""
        raw_limit = request.query.get("limit", [str(QUEUE_PAGE)])[-1]
        if not DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_QUEUE_PAGE:
            raise HttpError(400, f"limit must be from 1 to {MAX_QUEUE_PAGE} (got {raw_limit!r})")
        after = request.arg("after")
        return json_response(self.fleet.queues(int(raw_limit), after or None))

    def get_queue(self, request: Request) -> Response:
        return json_response(self.fleet.queue(request.params["name"]))

    def patch_queue(self, request: Request) -> Response:
        name = request.params["name"]
        changes = patch_changes(request.json())
        queue = self.fleet.update_queue(name, changes)
        log.info("api.queue_updated", queue=name, changes=changes)
        return json_response(queue)

    def redrive(self, request: Request) -> Response:
        ids = _ids(request.json())  # any body must be a JSON object; none is {}
        result = self.fleet.redrive(request.params["name"], ids)
        log.info("api.queue_redriven", queue=result["name"], moved=result["moved"],
                 not_found=len(result["notFound"]))
        return json_response(result)

    def series(self, request: Request) -> Response:
        """?queue=NAME&…&worker=ID&…: the last hour of each, minute by minute."""
        queues, workers = request.query.get("queue", []), request.query.get("worker", [])
        if len(queues) + len(workers) > MAX_SERIES_NAMES:
            raise HttpError(400, f"at most {MAX_SERIES_NAMES} queues and workers at once")
        return json_response(self.fleet.series(queues, workers))

    def dlq_purge(self, request: Request) -> Response:
        body = request.json()
        ids = _ids(body, ("ids", "yesReally"))
        yes_really = body.get("yesReally", False)
        if not isinstance(yes_really, bool):
            raise HttpError(400, "yesReally must be true or false")
        result = self.fleet.dlq_purge(request.params["name"], ids, yes_really)
        log.info("api.dlq_purged", queue=result["name"], deleted=result["deleted"],
                 not_found=len(result["notFound"]))
        return json_response(result)

    def dlq(self, request: Request) -> Response:
        raw_limit = request.query.get("limit", ["50"])[-1]
        if not DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_JOBS:
            raise HttpError(400, f"limit must be from 1 to {MAX_JOBS} (got {raw_limit!r})")
        look = self.fleet.dlq(request.params["name"], int(raw_limit))
        log.info("api.dlq_looked", queue=request.params["name"], seen=len(look.letters),
                 held=look.held)  # fmt: skip
        return json_response([d.to_json() for d in look.letters])

    def jobs(self, request: Request) -> Response:
        status = request.arg("status")  # present but empty is a bad value, not "any"
        if status is not None and status not in JOB_STATES:
            raise HttpError(400, f"status must be one of {', '.join(JOB_STATES)} (got {status!r})")
        raw_limit = request.query.get("limit", ["50"])[-1]
        if not DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_JOBS:
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


def _ids(body: dict[str, Any], allowed: tuple[str, ...] = ("ids",)) -> list[str] | None:
    """The optional `ids` of a DLQ operation's body: a list of message ids (None: all)."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(allowed)}")  # fmt: skip
    if "ids" not in body:
        return None
    ids = body["ids"]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise HttpError(400, "ids must be a non-empty JSON list of message ids (strings)")
    return ids


def patch_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body's fields, type-checked (400); their values are validated later (422)."""
    unknown = sorted(set(body) - PATCHABLE.keys())
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(PATCHABLE)}")  # fmt: skip
    if not body:
        raise HttpError(400, f"nothing to change; send any of {', '.join(PATCHABLE)}")
    changes: dict[str, Any] = {}
    for key, value in body.items():
        kind = PATCHABLE[key]
        if value is None and key in NULLABLE:
            changes[UPDATE_ARGS.get(key, key)] = None
            continue
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # 4.0 is an integer in JSON Schema's eyes too
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # 2 is a number too
        # bool is an int in Python; JSON's true is not a concurrency.
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise HttpError(400, f"{key} must be a JSON {_json_type(kind)} (got {value!r})")
        changes[UPDATE_ARGS.get(key, key)] = value
    return changes


def _json_type(kind: type) -> str:
    return {int: "integer", bool: "boolean", str: "string", float: "number"}[kind]


def _static(name: str) -> bytes:
    return resources.files("orchestrator.http").joinpath("static", name).read_bytes()


def _path(template: str) -> re.Pattern[str]:
    """`/api/queues/{name}` → a pattern with a named group for each segment (the rest
    taken literally: the dot of `/static/dashboard.js` matches only a dot)."""
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
                              for i, part in enumerate(parts)))  # fmt: skip


