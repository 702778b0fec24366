"""The API's HTTP server over real sockets, against clients that misbehave: slow or
token-less writers must not starve it, and malformed requests get JSON errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from orchestrator import config
from orchestrator.backends.sqs import Sqs
from orchestrator.backends.store import Store
from orchestrator.http import server as apiserver
from orchestrator.http.api import Api
from orchestrator.http.fleet import Fleet
from orchestrator.http.server import ApiServer
from tests.http import call
from tests.process.conftest import wait_for

TOKEN = "the-right-token"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def address() -> Iterator[tuple[str, int]]:
    """A running ApiServer (its store unreachable: nothing here needs one)."""
    settings = config.load("development", {"API_TOKEN": TOKEN, "PORT": "0"})
    fleet = Fleet(settings, Store("mongodb://127.0.0.1:9", "x", job_ttl_days=1, timeout_ms=100),
                  Sqs("http://127.0.0.1:9", "us-east-1", "t", "t"))  # fmt: skip
    api = Api(settings, fleet, CollectorRegistry(), lambda: {"status": "ok"})
    server = ApiServer(settings, api)
    server.start()
    bound = wait_for(lambda: server.server, 10, "the server to bind")
    yield "127.0.0.1", int(bound.server_address[1])
    server.stop()


def raw(address: tuple[str, int], data: bytes, timeout: float = 5) -> tuple[int, Any]:
    """Send `data` as is; (status, JSON body) of the answer."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_writers_without_the_token_are_answered_from_their_headers_and_health_answers(
    address: tuple[str, int],
) -> None:
    head = (b"PATCH /api/queues/q HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")  # fmt: skip
    answers: list[tuple[int, float]] = []

    def trickler() -> None:
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(head)
            started = time.monotonic()
            sock.settimeout(0.5)
            for _ in range(20):  # a byte of the body now and then, as a slow attack would
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    sock.sendall(b" ")
                    continue
                answers.append((int(reply.split()[1]), time.monotonic() - started))
                return

    threads = [threading.Thread(target=trickler) for _ in range(12)]
    for t in threads:
        t.start()
    started = time.monotonic()
    status, _ = call("GET", f"http://{address[0]}:{address[1]}/health")
    assert (status, time.monotonic() - started < 2) == (200, True)
    for t in threads:
        t.join()
    assert len(answers) == 12 and {s for s, _ in answers} == {401}
    assert max(seconds for _, seconds in answers) < 2  # not after reading their bodies


def test_a_client_that_trickles_its_request_is_cut_off(
    address: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apiserver, "READ_SECONDS", 1.0)
    with socket.create_connection(address, timeout=10) as sock:
        time.sleep(0.1)  # the handler's clock starts when it takes the connection
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        for _ in range(50):
            try:
                sock.sendall(b"X")  # one header byte at a time, never a whole line
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
    assert closed and time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"PATCH /api/queues/q HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
         b"Content-Length: 9\r\n\r\n{}", 400, "more than once"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "URI Too Long"),
        (b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 120 + b"\r\n", 431, "many headers"),
        (b"GET /health HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", 431, "Line too long"),
        (b"PATCH /api/queues/q HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
         b"Authorization: Bearer the-right-token\r\nContent-Type: application/json\r\n\r\n",
         400, "Transfer-Encoding"),
    ],
)  # fmt: skip
def test_malformed_requests_get_json_errors(
    address: tuple[str, int], data: bytes, status: int, words: str
) -> None:
    got, doc = raw(address, data)
    assert got == status and doc["status"] == status and words in doc["message"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"concurrency": 3, "concurrency": 4}', "'concurrency' is given twice"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),  # within the 64 KiB
    ],
)
def test_json_bodies_that_could_mean_two_things_or_blow_the_stack_are_400(
    address: tuple[str, int], body: bytes, words: str
) -> None:
    status, doc = call("PATCH", f"http://{address[0]}:{address[1]}/api/queues/q", body,
                       token=TOKEN)  # fmt: skip
    assert status == 400 and words in doc["message"]
