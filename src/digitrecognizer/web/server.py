"""Running the app under uvicorn: its HTTP protocol with bounds on the request head, and the server's limits."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROTOCOL = "digitrecognizer.web.server:BoundedHttpToolsProtocol"  # by name: worker processes import it


@dataclass(frozen=True)
class ServerLimits:
    """What one worker process allows its clients, besides the app's body limit and read timeout."""

    max_head_bytes: int = 64 * 1024  # the request line and headers together; browsers send 1-2 kB
    head_timeout_s: float = 10.0  # from a connection's first byte (or its opening) to the end of the headers
    keep_alive_s: int = 5  # an idle connection is closed after this (uvicorn's default)
    max_connections: int = 256  # open connections and requests in progress; beyond it uvicorn answers 503


LIMITS = ServerLimits()


def _error_bytes(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the two bounds it lacks: a request head over `max_head_bytes` is
    answered 431 and its connection closed (without this a 64 MB header is read into memory), and a head not
    received whole within `head_timeout_s` closes the connection (a client trickling headers, or opening
    connections and sending nothing, would otherwise hold them for ever)."""

    limits = LIMITS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes, self._awaiting_head, self._head_timer = 0, True, None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > self.limits.max_head_bytes and not self.transport.is_closing():
            self.transport.write(_error_bytes(431, "Request Header Fields Too Large", "header_too_large",
                                              f"the request line and headers are over "
                                              f"{self.limits.max_head_bytes // 1024} kB"))
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes, self._awaiting_head = 0, True  # what comes next on this connection is a new head

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(limits: ServerLimits = LIMITS) -> dict:
    """uvicorn.run's keyword arguments for these limits (the protocol by name for the defaults, so that worker
    processes can import it; other limits get a protocol class of their own)."""
    protocol = PROTOCOL if limits == LIMITS else type("BoundedProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
    return dict(http=protocol, timeout_keep_alive=limits.keep_alive_s, limit_concurrency=limits.max_connections)
