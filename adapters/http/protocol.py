"""uvicorn's httptools protocol with limits on what it parses that is not body (issue 10 item 4).

httptools (llhttp) sets no limit on the request line, the headers or a chunked body's trailer, and
uvicorn adds none for it (its ``h11_max_incomplete_event_size`` applies to h11 only): httptools
gathers a header's value in memory until its end arrives, so four requests with 40 MB headers took a
node to 287 MB and ``/healthz`` to 2.6 s, and four ``Transfer-Encoding: chunked`` requests ending in
an unfinished 40 MB trailer field took one from 89 MB to 256 MB and held their connections open. This
protocol keeps httptools (measured faster, see pyproject.toml) and bounds what it parses:

* **head size**: the request line and header fields of one request may be at most
  ``max_header_bytes``. The bytes of an unfinished head are counted before they reach the parser, and
  a read is cut at the limit, so httptools never holds more than that of one head (the bytes of a
  pipelined request that arrive in the same read as the end of the one before are counted from its
  next read on);
* **trailer size**: the trailer of a chunked body (the fields after its last, empty chunk) may be at
  most ``max_header_bytes`` too. No callback tells where in a read a body ends, so a trailer is
  recognised once the read that holds its beginning is parsed (``on_chunk_header`` with no
  ``on_body`` after it, then trailer fields or bytes): its bytes in that read are counted then (found
  by their line ends; if it also ends in that read, by its fields' names and values, 3 bytes more
  each), and every later read is counted before the parser sees it and cut at the limit, as a head's.
  So httptools holds at most ``max_header_bytes`` of a trailer, or the one read it begins in (at most
  256,000 bytes with uvloop, 256 KiB with asyncio), after which it is refused at once. (A read that
  ends exactly at the end of the last chunk's size line, or of the trailer's first field, does not
  show whether chunk data or a trailer follows: the next read does, and counts that field.)
  Trailer fields are dropped: an ASGI application has no request trailers, and uvicorn would
  otherwise add them to the request's headers while the application runs;
* **count**: at most ``max_headers`` header fields, and as many trailer fields;
* **time**: a head must be complete within ``header_timeout_s`` of its first byte (or of the
  connection opening, or of the end of a request that was answered before it ended), and a trailer
  within ``header_timeout_s`` of being recognised. A request answered before its body ended (a 401
  before the body is read: uvicorn discards the rest) must end within ``header_timeout_s`` of the
  answer, or the connection is closed. Otherwise the time to upload a body is not bounded here.

Nothing here counts a body's bytes or scans them: body reads go to httptools whole, and each read
and each chunk cost a constant amount more (about 0.1 µs a chunk: ``on_chunk_header`` and ``on_body``
are Python callbacks). Chunk extensions are skipped by llhttp without being kept (httptools registers
no callback for them).

Over a size or a count: ``431 Request Header Fields Too Large``; over a time: ``408 Request
Timeout``; both with the API's JSON error body and ``Connection: close``. A request whose answer is
already sent, or being sent, gets no second one: its connection is closed (a pipelined head's, once
the answer before it is written). The application of a request refused in its trailer sees the
client disconnect. After refusing, the node stops parsing,
discards what the client still sends and closes the connection at most ``_LINGER_S`` later: closing
at once, with unread bytes, makes the kernel reset the connection and the client may never read the
answer.
"""

from __future__ import annotations

import asyncio
import http
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bus.errors import BusError

__all__ = ["HeadLimits", "LimitedHttpToolsProtocol"]

log = structlog.get_logger("bus.http")

_LINGER_S = 2.0

# What the bytes arriving on a connection are: a request line and headers (counted), a body (not
# counted) or a chunked body's trailer (counted).
_HEAD, _BODY, _TRAILER = 0, 1, 2

_on_body = HttpToolsProtocol.on_body  # called directly: on_body is the hot path


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 20.0


class _HeadRefused(BusError):
    """Raised from a parser callback to stop httptools once the answer is written."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Pass ``LimitedHttpToolsProtocol.with_limits(limits)`` as ``uvicorn.Config(http=...)``."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    @classmethod
    def with_limits(cls, limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _HEAD
        self._counted = 0  # bytes of the current head or trailer
        self._fields = 0  # fields of the current head or trailer
        # A chunk's size line was parsed and none of its data since: either the data comes next, or
        # the chunk was the last one and its trailer has begun.
        self._chunk_open = False
        self._line_before = 0  # see _find_trailer
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()  # a connection that sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._deadline, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._deadline = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: what still comes is discarded
        limit = self.limits.max_header_bytes
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end and not self._refused and not self.transport.is_closing():
            if self._phase == _BODY:
                stop = end
            else:  # a head or a trailer: counted before the parser holds it, cut at the limit
                room = limit - self._counted
                if room <= 0:
                    self._refuse_size()
                    return
                self._arm_deadline()
                stop = min(end, start + room)
                self._counted += stop - start
            super().data_received(view[start:stop])  # type: ignore[arg-type]  # httptools takes a memoryview
            if self._chunk_open and self._phase == _BODY and not self._refused:
                self._find_trailer(data, start, stop)
            start = stop

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # our own answer is written; httptools reports the stop as an error
            super().send_400_response(msg)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._fields = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.limits.max_headers:
            what = "header" if self._phase == _HEAD else "trailer"
            self._refuse(431, "header-too-large", f"more than {self.limits.max_headers} {what} fields")
            raise _HeadRefused
        if self._phase == _HEAD:
            super().on_header(name, value)
            return
        # A trailer field: dropped (see the module's docstring). Parsed before the trailer could be
        # counted (in the read in which it began), it counts by its name and value.
        if self._phase == _BODY:
            self._counted += len(name) + len(value) + 3  # at least ":" and CRLF between them
            if self._counted > self.limits.max_header_bytes:
                self._refuse_size()
                raise _HeadRefused

    def on_headers_complete(self) -> None:
        self._phase, self._counted, self._fields, self._chunk_open = _BODY, 0, 0, False
        self._cancel_deadline()
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._chunk_open = True

    def on_body(self, body: bytes) -> None:
        self._chunk_open = False
        _on_body(self, body)

    def on_message_complete(self) -> None:
        # What follows is the next request's head.
        self._phase, self._counted, self._chunk_open = _HEAD, 0, False
        self._cancel_deadline()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            # Answered before its body ended: uvicorn's keep-alive timer, armed at the answer, was
            # cancelled by the body's reads. The next head has its time from now.
            self._arm_deadline()

    # -- uvicorn -------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase != _HEAD and self.cycle is not None and self.cycle.response_complete:
            # The request being read was answered before it ended: uvicorn discards the rest, which
            # must then come within the time a head has, not hold the connection without end.
            self._arm_deadline()

    # -- the trailer -----------------------------------------------------------------------------

    def _find_trailer(self, data: bytes, start: int, stop: int) -> None:
        """After ``data[start:stop]`` was parsed, ending after a chunk's size line with none of its
        data: if the chunk was the last one and its trailer has begun, count that trailer's bytes in
        the read and count every later read before parsing it."""
        # Each line of a trailer ends with one CRLF (llhttp refuses a bare LF and folded lines), and
        # so does the last chunk's size line before it. The lines in this read are the fields that
        # httptools reported, plus one that ended the read (a field is reported when the next one
        # begins, or the trailer ends), plus the size line: the trailer starts after that many LFs
        # from the end. Only the trailer's bytes are scanned.
        fields, last = self._fields, data[stop - 1]
        ended = last == 0x0A or (last == 0x0D and stop - start >= 2 and data[stop - 2] == 0x0A)
        lines = fields + 1 + (1 if fields and ended else 0)
        begin, found = stop, 0
        while found < lines:
            at = data.rfind(b"\n", start, begin)
            if at < 0:
                break
            begin, found = at, found + 1
        trailer = stop - (begin + 1 if found == lines else start)
        if fields == 0 and trailer == 0:
            # The read ended at the end of a line: a size line, whose chunk's data may come next, or
            # the last chunk's, or the first field of its trailer (reported once the next begins).
            # The next read tells; keep that line's length for it.
            at = data.rfind(b"\n", start, stop - 1)
            self._line_before = stop - (at + 1 if at >= 0 else start)
            return
        if found < lines - 1:  # the first field reported is the line that ended the read before
            trailer += self._line_before
        # (max: on_header counted the fields reported in this read by their names and values)
        self._phase, self._counted = _TRAILER, max(self._counted, trailer)
        self._arm_deadline()
        if self._counted > self.limits.max_header_bytes:
            self._refuse_size()

    # -- refusing --------------------------------------------------------------------------------

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._refused or self.transport.is_closing():
            return
        timeout = self.limits.header_timeout_s
        if self._phase == _HEAD:
            self._refuse(408, "header-timeout", f"the request line and headers took over {timeout} s")
        elif self._phase == _TRAILER:
            self._refuse(408, "header-timeout", f"the request trailer took over {timeout} s")
        else:  # armed by on_response_complete
            self._refuse(408, "body-timeout", f"the request did not end within {timeout} s of its answer")

    def _refuse_size(self) -> None:
        limit = self.limits.max_header_bytes
        if self._phase == _HEAD:
            self._refuse(431, "header-too-large", f"request line and headers over {limit} bytes")
        else:
            self._refuse(431, "header-too-large", f"request trailer over {limit} bytes")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refused = True
        cycle = self.cycle
        if self._phase == _HEAD:
            # *cycle* is the request before this one, if any.
            if cycle is not None and not cycle.response_complete:
                # Its response is being written: let it finish, then close, rather than interleave
                # an answer with it.
                log.info("http.refused", status=status, code=code, message=message, client=self.client)
                cycle.keep_alive = False
                return
            self._answer(status, code, message)
            return
        # The body or trailer of *cycle*'s request is being read.
        if cycle is None:  # pragma: no cover  (uvicorn makes one for every request but an upgrade)
            self.transport.close()
            return
        cycle.keep_alive = False
        if cycle.response_complete:
            log.info("http.closed", status=status, code=code, message=message, client=self.client)
            self._close_softly()
            return
        # Its application sees the client go away: it stops waiting for the body, and what it still
        # sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        if not cycle.response_started and not self.pipeline:
            self._answer(status, code, message)
        else:
            # Its answer is partly written, or that of a request before it is being written.
            log.info("http.closed", status=status, code=code, message=message, client=self.client)
            self.transport.close()

    def _answer(self, status: int, code: str, message: str) -> None:
        log.info("http.refused", status=status, code=code, message=message, client=self.client)
        body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode("ascii")]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._close_softly()

    def _close_softly(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(_LINGER_S, self.transport.close)
