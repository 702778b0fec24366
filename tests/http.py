"""A small HTTP client for tests: real requests over real sockets, with urllib."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, parsed JSON or text) for one request; HTTP errors are answers, not raised."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and content_type:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _parse(response.read(), response.headers.get_content_type())
    except urllib.error.HTTPError as exc:
        return exc.code, _parse(exc.read(), exc.headers.get_content_type())


def _parse(raw: bytes, content_type: str) -> Any:
    return json.loads(raw) if content_type == "application/json" else raw.decode()


def get(url: str) -> Any:
    status, doc = call("GET", url)
    assert status == 200, (url, status, doc)
    return doc
