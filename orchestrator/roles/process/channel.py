"""Channel: JSON lines over a socket between two processes (a worker and one of its
consumers, a consumer and one of its handler processes). It moves JSON objects; what
they mean is the codec's (codec.py), which also refuses a line that is not JSON."""

from __future__ import annotations

import json
import socket
from typing import Any


class ChannelClosed(Exception):
    """The other end went away (its process died or closed the socket)."""


class Channel:
    """Non-blocking reads of whole JSON lines; blocking writes of small ones."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self._ended = False  # the other end closed; what came before is still returned

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc

    def receive(self) -> list[dict[str, Any] | bytes]:
        """Every complete message available now (possibly none); ChannelClosed at the end
        of the stream once every message before it was returned (the last report of a
        process that exited right after sending it is not lost)."""
        ended = self._ended
        self.sock.setblocking(False)
        try:
            while not ended:
                chunk = self.sock.recv(65536)
                if not chunk:
                    ended = True
                self._buffer += chunk
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        finally:
            self.sock.setblocking(True)
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = _parsed(lines)
        if ended and not messages:
            raise ChannelClosed("end of stream")
        self._ended = ended
        return messages

    def read_blocking(self) -> list[dict[str, Any] | bytes]:
        """Wait for data, then every complete message it finishes; ChannelClosed on EOF.

        For a reader thread that shares the (blocking) socket with a writing thread:
        `receive` switches the socket to non-blocking, which a concurrent `send` must
        never see.
        """
        try:
            chunk = self.sock.recv(65536)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        if not chunk:
            raise ChannelClosed("end of stream")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return _parsed(lines)

    def close(self) -> None:
        self.sock.close()


def _parsed(lines: list[bytes]) -> list[dict[str, Any] | bytes]:
    """Each line's JSON, or the line itself when it is not JSON: the codec refuses it
    (a ProtocolError the reader logs), and the lines after it still count."""
    out: list[dict[str, Any] | bytes] = []
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(line)
    return out
