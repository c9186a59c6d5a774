"""The agency API's errors: one table says, by the error's type, what the API answers for it.

Every error is JSON::

    {"error": {"code": "invalid-envelope", "message": "...", "problems": [...]}}

with 400 (every validation problem at once), 401 (not authenticated), 403 (not allowed), 404, 405 (with
``Allow``), 409 (duplicate, with the earlier bus id; or already final), 413 (body too large), 415, 503
(broker unavailable and the like: retry, with ``Retry-After``). docs/http-api.md lists every code.

The core raises its own errors (:mod:`bus.errors`, :class:`bus.auth.AuthError`); :data:`ANSWERS` gives
each its status and code, so that no handler picks a status by reading an error's message. What only
the HTTP layer knows (a bad parameter, a body over its bound, an unknown path) it raises as
:class:`ApiError`, which carries its answer. Anything else is a bug: 500, logged with its traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bus.auth import AuthError
from bus.errors import (
    AlreadyFinalError,
    BadAcknowledgementError,
    BrokerError,
    BusError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    InputError,
    MalformedXmlError,
    RevocationUnknownError,
    SignatureError,
    StoreError,
    UnknownDocumentError,
    UnsafeXmlError,
    XmlTooLargeError,
)

__all__ = ["ANSWERS", "Answer", "ApiError", "api_error", "echo", "error_response", "guarded", "http_error"]

log = structlog.get_logger("bus.api")

_ECHO_CHARS = 64  # at most this much of a refused value is quoted back in an error message

Endpoint = Callable[[Request], Awaitable[Response]]


class ApiError(BusError):
    """The API refuses the request: *status* and *code* are its answer (:func:`error_response`)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status, self.code, self.message, self.extra = status, code, message, extra
        super().__init__(message)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status, headers=headers)


def echo(value: str) -> str:
    """*value* quoted for an error message, cut short: what a client sent is not copied back whole."""
    return repr(value if len(value) <= _ECHO_CHARS else value[:_ECHO_CHARS] + "…")


def _no_fields(exc: Any) -> dict[str, Any]:
    return {}


def _problems(exc: EnvelopeInvalidError) -> dict[str, Any]:
    return {"problems": [dataclasses.asdict(p) for p in exc.problems]}


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API answers for one type of error: the HTTP *status*, the ``code`` (or a function of the
    error that gives it), the ``message`` (the error's own unless a function says otherwise) and
    further *fields* of the error body."""

    status: int
    code: str | Callable[[Any], str]
    message: Callable[[Any], str] = str
    fields: Callable[[Any], dict[str, Any]] = _no_fields


# The answer to each error, looked up along the error's class hierarchy: the most specific class with
# an entry decides (XmlTooLargeError is 413 although it is an UnsafeXmlError, 400).
ANSWERS: Mapping[type[BaseException], Answer] = MappingProxyType(
    {
        AuthError: Answer(401, lambda exc: exc.code),  # the reason: bad-signature, stale-request, ...
        EnvelopeInvalidError: Answer(400, "invalid-envelope", fields=_problems),  # every problem at once
        DuplicateEnvelopeError: Answer(409, "duplicate", fields=lambda exc: {"bus_id": exc.bus_id}),
        ForgedSenderError: Answer(403, "forged-sender"),
        XmlTooLargeError: Answer(413, "too-large"),
        UnsafeXmlError: Answer(400, "unsafe-xml"),
        MalformedXmlError: Answer(400, "malformed-xml"),
        SignatureError: Answer(400, "signature-invalid"),
        UnknownDocumentError: Answer(400, "unknown-document"),
        BadAcknowledgementError: Answer(400, "bad-acknowledgement"),
        AlreadyFinalError: Answer(409, "already-final"),
        InputError: Answer(400, "invalid-input"),
        # Nothing is wrong with the envelope as far as anyone knows: the CA's CRL is out of date.
        RevocationUnknownError: Answer(
            503,
            "revocation-unavailable",
            message=lambda exc: f"the envelope was NOT accepted: {exc}; send it again later",
        ),
        BrokerError: Answer(
            503, "broker-unavailable", message=lambda exc: "the envelope was NOT accepted: retry later"
        ),
        # The database failed (down, a dropped connection): the request may be repeated as it is. During
        # intake a store error is 503 outcome-unknown instead (adapters/http/envelopes.py).
        StoreError: Answer(
            503,
            "store-unavailable",
            message=lambda exc: "the status store is unavailable: send the same request again later",
        ),
    }
)


def api_error(exc: BaseException) -> ApiError | None:
    """*exc* as the API answers it: an :class:`ApiError` as it is, another error by :data:`ANSWERS`,
    or None for an error the table does not know (the caller decides: a 500, or a 503 for intake)."""
    if isinstance(exc, ApiError):
        return exc
    for kind in type(exc).__mro__:
        answer = ANSWERS.get(kind)
        if answer is not None:
            code = answer.code if isinstance(answer.code, str) else answer.code(exc)
            return ApiError(answer.status, code, answer.message(exc), **answer.fields(exc))
    return None


def guarded(handler: Endpoint) -> Endpoint:
    """*handler*, answering every error as JSON: by :func:`api_error`, or 500 for an unknown one."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException:
            raise
        except Exception as exc:
            error = api_error(exc)
            if error is None:
                log.exception("api.internal_error", path=request.url.path, method=request.method)
                message = "internal error; the request had no effect unless a 202 was sent"
                return error_response(500, "internal", message)
            return error_response(error.status, error.code, error.message, **error.extra)

    return run


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, no such method) in the API's error body."""
    status = getattr(exc, "status_code", 404)
    code = {404: "not-found", 405: "method-not-allowed"}.get(status, "http-error")
    response = error_response(
        status, code, f"{echo(request.method)} {echo(request.url.path)}: {getattr(exc, 'detail', '')}"
    )
    # A 405 names the methods the resource has (RFC 9110 section 15.5.6): Starlette puts them in
    # the exception's Allow header.
    response.headers.update(getattr(exc, "headers", None) or {})
    return response
