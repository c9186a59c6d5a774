"""Reading an agency API request defensively: every header, parameter and body the handlers use goes
through here, bounded and parsed whole, so that a bad value is an :class:`ApiError` (400, 404 or 413)
and never an exception from the parsing itself (issue 10 item 3). Errors quote what the client sent
only in part (:func:`adapters.http.errors.echo`)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from adapters.http.errors import ApiError

__all__ = ["bounded_int", "json_object", "media_type", "read_body", "request_target"]

_MAX_CONTENT_TYPE_CHARS = 200
_MAX_CONTENT_LENGTH_DIGITS = 19  # 10**19 bytes: larger than any limit, and int() of it is cheap


def request_target(request: Request) -> str:
    """The request target as the client sent it (raw path and query), which the signature covers."""
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode("utf-8")
    query: bytes = request.scope.get("query_string", b"")
    return (raw_path + (b"?" + query if query else b"")).decode("latin-1")


def _content_length(request: Request) -> int | None:
    """The declared body size, or None. uvicorn's parser already refuses a bad Content-Length; this is
    for any other ASGI server: a value that is not plain ASCII digits (``"²".isdigit()`` is true, and
    ``int()`` of 5,000 digits raises) is a 400, not a 500."""
    values = request.headers.getlist("content-length")
    if not values:
        return None
    if len(values) > 1 or not (
        0 < len(values[0]) <= _MAX_CONTENT_LENGTH_DIGITS and values[0].isascii() and values[0].isdigit()
    ):
        raise ApiError(400, "bad-header", "Content-Length must be one decimal number of bytes")
    return int(values[0])


async def read_body(request: Request, limit: int) -> bytes:
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise ApiError(413, "too-large", f"the body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too-large", f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client-disconnected", "the client went away before the body arrived") from None
    return b"".join(chunks)


def bounded_int(text: str, name: str, low: int, high: int) -> int:
    # Length first: int() of more than 4,300 digits raises ValueError.
    if (
        not (len(text) <= len(str(high)) and text.isascii() and text.isdigit())
        or not low <= int(text) <= high
    ):
        raise ApiError(400, "bad-parameter", f"{name} must be an integer from {low} to {high}")
    return int(text)


def media_type(request: Request, default: str) -> str:
    """The media type of Content-Type (lower case, without parameters), bounded in length."""
    value = request.headers.get("content-type", default)
    if len(value) > _MAX_CONTENT_TYPE_CHARS:
        raise ApiError(400, "bad-header", f"Content-Type is over {_MAX_CONTENT_TYPE_CHARS} characters")
    return value.split(";")[0].strip().lower()


def json_object(body: bytes) -> dict[str, Any]:
    value = json.loads(body.decode("utf-8")) if body else {}
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value
