"""A pass-through HTTP proxy in front of the SQS server (moto: SQS and STS) that notes
what goes through it.

The daemon talks to it as to AWS; every request goes to the real server unchanged and
every answer comes back unchanged. It keeps, for each message a ReceiveMessage answered
with, the receipt handles it was given, so that a test can do what happens to a consumer
on real SQS (a visibility that runs out, a second receive of a message still running)
with the real API: ChangeMessageVisibility on that receipt. It notes each SQS call's
operation, queue URL, and the region and access key it was signed with (where the call
went, as whom). And it can refuse AssumeRole for chosen roles, as IAM would (AccessDenied).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}
# SigV4: Credential=AKID/20261207/eu-west-1/sqs/aws4_request
_SIGNED = re.compile(r"Credential=([^/]+)/[0-9]+/([^/]+)/")
_DENIED = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
           b"<Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform "
           b"sts:AssumeRole (refused by the test)</Message></Error><RequestId>tap</RequestId>"
           b"</ErrorResponse>")  # fmt: skip


@dataclass(frozen=True)
class Call:
    operation: str  # "ReceiveMessage", ...
    queue_url: str | None
    region: str
    access_key: str


class SqsTap:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lock = threading.Lock()
        self.receipts: dict[str, list[str]] = defaultdict(list)  # message id → receipts given
        self.calls: list[Call] = []  # SQS calls, in order
        self.refused_roles: set[str] = set()  # AssumeRole of these is refused
        self.refusals = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> SqsTap:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self, message_id: str) -> list[str]:
        """The receipt handles receives have handed out for this message, oldest first."""
        with self.lock:
            return list(self.receipts.get(message_id, ()))

    def sqs_calls(self, url: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.queue_url == url]

    def _refuse(self, body: bytes) -> bool:
        """An AssumeRole (STS speaks the query protocol) of a role refused."""
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        if form.get("Action") != ["AssumeRole"]:
            return False
        with self.lock:
            refused = form.get("RoleArn", [""])[0] in self.refused_roles
            self.refusals += refused
        return refused

    def _call(self, target: str, authorization: str, request: bytes) -> None:
        if not target.startswith("AmazonSQS."):
            return
        signed = _SIGNED.search(authorization)
        url = json.loads(request or b"{}").get("QueueUrl")
        with self.lock:
            self.calls.append(Call(target.removeprefix("AmazonSQS."), url,
                                   signed.group(2) if signed else "",
                                   signed.group(1) if signed else ""))  # fmt: skip

    def _note(self, target: str, body: bytes) -> None:
        if not target.endswith(".ReceiveMessage"):
            return
        answer = json.loads(body or b"{}")  # botocore speaks SQS's JSON protocol
        with self.lock:
            for message in answer.get("Messages", ()):
                self.receipts[message["MessageId"]].append(message["ReceiptHandle"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if tap._refuse(body):
                    self.send_response(403)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(_DENIED)))
                    self.end_headers()
                    self.wfile.write(_DENIED)
                    return
                target = self.headers.get("X-Amz-Target", "")
                tap._call(target, self.headers.get("Authorization", ""), body)
                conn = http.client.HTTPConnection(*tap.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body, headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    tap._note(target, data)
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in _HOP | {"content-length"}:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
