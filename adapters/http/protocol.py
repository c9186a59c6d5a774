"""uvicorn's httptools protocol with limits on the request head (issue 10 item 4).

httptools (llhttp) sets no limit on the request line or the headers, and uvicorn adds none for it (its
``h11_max_incomplete_event_size`` applies to h11 only): httptools gathers a header's value in memory
until its end arrives, so four requests with 40 MB headers took a node to 287 MB and ``/healthz`` to
2.6 s. This protocol keeps httptools (measured faster, see pyproject.toml) and bounds what it parses:

* **size**: the request line and header fields of one request may be at most
  ``max_header_bytes``. The bytes of an unfinished head are counted before they reach the parser, and
  a read is cut at the limit, so httptools never holds more than that of one head (the bytes of a
  pipelined request that arrive in the same read as the end of the one before are counted from its
  next read on);
* **count**: at most ``max_headers`` header fields;
* **time**: a head must be complete within ``header_timeout_s`` of its first byte (or of the
  connection opening), so that slow heads cannot hold connections and buffers without end.

Over the size or the count: ``431 Request Header Fields Too Large``; over the time: ``408 Request
Timeout``; both with the API's JSON error body and ``Connection: close``. After answering, the node
stops parsing, discards what the client still sends and closes the connection at most
``_LINGER_S`` later: closing at once, with unread bytes, makes the kernel reset the connection and
the client may never read the answer.
"""

from __future__ import annotations

import asyncio
import http
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeadLimits", "LimitedHttpToolsProtocol"]

log = structlog.get_logger("bus.http")

_LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 20.0


class _HeadRefused(Exception):
    """Raised from a parser callback to stop httptools once the answer is written."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Pass ``LimitedHttpToolsProtocol.with_limits(limits)`` as ``uvicorn.Config(http=...)``."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    @classmethod
    def with_limits(cls, limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes arriving belong to a request line or headers
        self._head_bytes = 0
        self._header_count = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: what still comes is discarded
        limit = self.limits.max_header_bytes
        view = memoryview(data)
        while view and not self._refused and not self.transport.is_closing():
            if self._in_head:
                room = limit - self._head_bytes
                if room <= 0:
                    self._refuse(431, "header-too-large", f"request line and headers over {limit} bytes")
                    return
                self._arm_head_timer()
                piece, view = view[:room], view[room:]
                self._head_bytes += len(piece)
            else:
                piece, view = view, view[:0]
            super().data_received(piece)  # type: ignore[arg-type]  # httptools takes a memoryview

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # our own answer is written; httptools reports the stop as an error
            super().send_400_response(msg)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431, "header-too-large", f"more than {self.limits.max_headers} header fields")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
        super().on_message_complete()

    # -- refusing --------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self._refused and not self.transport.is_closing():
            timeout = self.limits.header_timeout_s
            self._refuse(408, "header-timeout", f"the request line and headers took over {timeout} s")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refused = True
        log.info("http.refused", status=status, code=code, message=message, client=self.client)
        if self.cycle is not None and not self.cycle.response_complete:
            # A response to an earlier (pipelined) request is being written: let it finish, then
            # close, rather than interleave an answer with it.
            self.cycle.keep_alive = False
            return
        body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode("ascii")]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(_LINGER_S, self.transport.close)
