"""The API's request handling that needs no server: routing, the token, the Host check,
PATCH bodies, and the OpenAPI description matching the routes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from orchestrator import config
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.http.api import Api, HttpError, Request, is_loopback, patch_changes
from orchestrator.http.fleet import Fleet
from orchestrator.http.openapi import spec

UNREACHABLE = "mongodb://127.0.0.1:9"  # nothing listens: a request that gets there is a 503
PASSED = 503  # every check passed and the request reached the (absent) store


def make_api(**environ: str) -> Api:
    settings = config.load("development", {"MONGODB_NAME": "unused", **environ})
    fleet = Fleet(settings, Store(UNREACHABLE, "unused", job_ttl_days=1, timeout_ms=100),
                  Sqs("http://127.0.0.1:9", "us-east-1", "test", "test"))  # fmt: skip
    return Api(settings, fleet, CollectorRegistry(), lambda: {"status": "ok"})


def request(method: str, path: str, body: bytes = b"", **headers: str) -> Request:
    return Request(method, path, {}, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def test_every_route_is_described_and_every_description_is_routed() -> None:
    routes = {(r.method.lower(), r.pattern.pattern) for r in make_api().routes}
    described = {
        (method, path)
        for path, item in spec(config.load("development", {}))["paths"].items()
        for method in item
        if method != "parameters"
    }
    as_patterns = {(m, re.escape(p).replace(re.escape("{name}"), "(?P<name>[^/]+)")
                     .replace(re.escape("{id}"), "(?P<id>[^/]+)"))
                   for m, p in described}  # fmt: skip
    assert routes == as_patterns


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": "Basic dG9rZW4="}, 401),
        ({"authorization": "Bearer t0ken", "content_type": "text/plain"}, 415),
        ({"authorization": "Bearer t0ken", "content_type": "application/json"}, 400),
    ],
)
def test_writes_need_the_token_before_anything_else(headers: dict[str, str], status: int) -> None:
    api = make_api(API_TOKEN="t0ken")
    response = api.dispatch(request("PATCH", "/api/queues/q", b"{}", **headers))
    assert response.status == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"t0ken" not in response.body


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer wrong"}, 401),
     ({"authorization": "Bearer t0ken"}, PASSED),
     ({"authorization": "Bearer t0ken", "origin": "http://evil.example"}, 403)],
)  # fmt: skip
def test_a_dlq_look_needs_the_token_like_a_write(headers: dict[str, str], status: int) -> None:
    """A look receives the DLQ's messages (raising their receive counts): not a read."""
    api = make_api(API_TOKEN="t0ken")
    response = api.dispatch(request("GET", "/api/queues/q/dlq", host="127.0.0.1:3000",
                                    **headers))  # fmt: skip
    assert response.status == status
    if status == 401:
        assert b"DLQ looks" in response.body


def test_without_a_token_a_dlq_look_is_open() -> None:
    api = make_api()
    assert api.dispatch(request("GET", "/api/queues/q/dlq")).status == PASSED


def test_the_description_says_which_operations_need_the_token() -> None:
    paths = spec(config.load("development", {"API_TOKEN": "t0ken"}))["paths"]
    secured = {(path, method) for path, item in paths.items() for method, op in item.items()
               if isinstance(op, dict) and op.get("security")}  # fmt: skip
    assert secured == {("/api/queues/{name}", "patch"), ("/api/queues/{name}/redrive", "post"),
                       ("/api/queues/{name}/dlq", "get"),
                       ("/api/queues/{name}/dlq/purge", "post")}  # fmt: skip
    open_paths = spec(config.load("development", {}))["paths"]
    assert "security" not in open_paths["/api/queues/{name}/dlq"]["get"]


@pytest.mark.parametrize(
    ("host", "status"),
    [("evil.example", 403), ("evil.example:3000", 403), ("127.0.0.1.evil.example", 403),
     ("localhost:3000", 401), ("127.0.0.1:3000", 401), ("[::1]:3000", 401)],
)  # fmt: skip
def test_on_loopback_only_requests_addressed_to_it_are_served(host: str, status: int) -> None:
    api = make_api(API_TOKEN="t0ken")
    assert api.dispatch(request("POST", "/api/queues/q/redrive", host=host)).status == status


def test_bound_to_the_network_any_host_name_is_served() -> None:
    api = make_api(API_TOKEN="t0ken", API_HOST="0.0.0.0")
    response = api.dispatch(request("POST", "/api/queues/q/redrive", host="orch.internal"))
    assert response.status == 401


def test_unknown_paths_and_methods() -> None:
    api = make_api()
    assert api.dispatch(request("GET", "/api/nope")).status == 404
    response = api.dispatch(request("DELETE", "/api/queues/q"))
    assert response.status == 405 and response.headers["Allow"] == "GET, PATCH"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "nothing to change"),
        ({"colour": 1}, "unknown field(s) colour"),
        ({"concurrency": "3"}, "concurrency must be a JSON integer"),
        ({"concurrency": 2.5}, "concurrency must be a JSON integer"),
        ({"concurrency": False}, "concurrency must be a JSON integer"),
        ({"paused": 1}, "paused must be a JSON boolean"),
        ({"handler": None}, "handler must be a JSON string"),
        ({"processes": "2"}, "processes must be a JSON integer"),
        ({"batchSize": 2.5}, "batchSize must be a JSON integer"),
        ({"batchWindow": True}, "batchWindow must be a JSON number"),
        ({"batchWindow": "1"}, "batchWindow must be a JSON number"),
        ({"rateLimit": "fast"}, "rateLimit must be a JSON number"),
        ({"priority": None}, "priority must be a JSON integer"),
        ({"maxShards": 1.5}, "maxShards must be a JSON integer"),
    ],
)
def test_patch_bodies_of_the_wrong_shape_are_400(body: dict[str, Any], words: str) -> None:
    with pytest.raises(HttpError) as caught:
        patch_changes(body)
    assert caught.value.status == 400 and words in caught.value.message


def test_a_well_formed_patch_passes_through() -> None:
    body = {"concurrency": 3, "paused": True, "handler": "a.b:c"}
    assert patch_changes(body) == body
    assert patch_changes({"concurrency": 4.0}) == {"concurrency": 4}
    # JSON names become QueueAdmin.update's; a whole number is a batch window too
    assert patch_changes({"processes": 2, "batchSize": 5, "batchWindow": 1}) == {
        "processes": 2, "batch_size": 5, "batch_window": 1.0}  # fmt: skip
    assert patch_changes({"rateLimit": None, "maxShards": 2, "adaptive": True}) == {
        "rate_limit": None, "max_shards": 2, "adaptive": True}  # fmt: skip
    assert patch_changes({"rateLimit": 5}) == {"rate_limit": 5.0}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.5", False), ("example.com", False), ("::", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # a page elsewhere, with a content type a browser sends without asking first
        ({"content_type": "text/plain; x=application/json"}, 415),
        ({"content_type": "application/json", "origin": "http://evil.example"}, 403),
        ({"content_type": "application/json", "origin": "http://127.0.0.1:3001"}, 403),
        ({"content_type": "application/json", "origin": "http://127.0.0.1:3000"}, PASSED),
        ({"content_type": "application/json"}, PASSED),  # curl: no Origin; no token is set
    ],
)
def test_without_a_token_other_sites_pages_still_cannot_write(
    headers: dict[str, str], status: int
) -> None:
    api = make_api()  # API_TOKEN empty, the development default
    response = api.dispatch(request("POST", "/api/queues/q/redrive", host="127.0.0.1:3000",
                                    **headers))  # fmt: skip
    assert response.status == status


def test_a_loopback_alias_as_api_host_is_its_own_address() -> None:
    api = make_api(API_TOKEN="t0ken", API_HOST="127.0.0.2")
    assert api.dispatch(request("POST", "/api/queues/q/redrive", host="127.0.0.2:3000")).status \
        == 401  # fmt: skip


def test_odd_tokens_and_numbers_are_refused_not_crashed_on() -> None:
    api = make_api(API_TOKEN="t0ken")
    refused = api.dispatch(request("PATCH", "/api/queues/q", b"{}", authorization="Bearer tökén"))
    assert refused.status == 401
    odd_limit = Request("GET", "/api/jobs", {"limit": ["²"]}, {})
    assert api.dispatch(odd_limit).status == 400


def test_a_handler_outside_handler_modules_is_422_before_the_store() -> None:
    api = make_api(HANDLER_MODULES="myapp,orchestrator.handlers")
    body = b'{"handler": "os:system"}'
    patch = request("PATCH", "/api/queues/q", body, content_type="application/json")
    response = api.dispatch(patch)
    assert response.status == 422
    assert b"outside HANDLER_MODULES" in response.body


def test_the_dashboard_runs_no_inline_code_and_its_files_are_served() -> None:
    api = make_api()
    page = api.dispatch(request("GET", "/", host="127.0.0.1:3000"))
    csp = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert b"<script>" not in page.body and b"<style>" not in page.body
    for path, kind in (("/static/dashboard.js", "text/javascript"),
                       ("/static/dashboard.css", "text/css")):  # fmt: skip
        served = api.dispatch(request("GET", path, host="127.0.0.1:3000"))
        assert served.status == 200 and served.content_type.startswith(kind) and served.body
        assert path.encode() in page.body
    near_miss = request("GET", "/static/dashboardXcss", host="127.0.0.1:3000")
    assert api.dispatch(near_miss).status == 404  # the dot is a dot


@pytest.mark.parametrize(("headers", "admitted"), [
    ({}, True),  # no body, no media type: a redrive or purge of everything
    ({"content_length": "0"}, True),
    ({"content_length": "2"}, False),  # a body must say it is JSON
    ({"content_length": "0", "content_type": "text/plain"}, False),
])  # fmt: skip
def test_a_write_without_a_body_needs_no_media_type(headers: dict[str, str],
                                                    admitted: bool) -> None:  # fmt: skip
    api = make_api()
    answer = api.admit(request("POST", "/api/queues/q/redrive", b"", **headers))
    assert (answer is None) is admitted
    if not admitted:
        assert answer is not None and answer.status == 415
