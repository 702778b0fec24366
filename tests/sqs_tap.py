"""A pass-through HTTP proxy in front of the SQS server that notes what receives return.

The daemon talks to it as to SQS; every request goes to the real server unchanged and
every answer comes back unchanged. It only keeps, for each message a ReceiveMessage
answered with, the receipt handles it was given, so that a test can do what happens
to a consumer on real SQS (a visibility that runs out, a second receive of a message
still running) with the real API: ChangeMessageVisibility on that receipt.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class SqsTap:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lock = threading.Lock()
        self.receipts: dict[str, list[str]] = defaultdict(list)  # message id → receipts given
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
                conn = http.client.HTTPConnection(*tap.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body, headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    tap._note(self.headers.get("X-Amz-Target", ""), data)
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
