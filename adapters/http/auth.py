"""Who sent a request to the agency API: the signing headers (each once), the agency and its secret,
the HMAC and the clock (:mod:`bus.auth`), the body against its signed digest, and the nonce, which the
store remembers so that a request cannot be replayed. Any failure is an :class:`AuthError` (401).

An envelope (:func:`authenticate_envelope`, up to ``http.max_body_bytes``: a 100 MB scanned dossier)
is spooled to a temporary file while its SHA-256 is computed, never held whole in memory; small ones
stay in memory. Its digest is checked, as any body's, before anything else reads it."""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Awaitable, Callable
from typing import IO, TypeVar

from starlette.requests import ClientDisconnect, Request

from adapters.http.context import ApiContext
from adapters.http.errors import ApiError
from adapters.http.limits import MAX_SMALL_BODY_BYTES
from adapters.http.reading import _content_length, read_body, request_target
from bus.auth import SIGNING_HEADERS, AuthError, body_digest, read_headers, verify_request
from bus.errors import InputError
from bus.organ_id import OrganId
from bus.spooled import Received

__all__ = ["authenticate", "authenticate_envelope"]

B = TypeVar("B")
# An envelope up to this size is spooled in memory; a larger one goes to a temporary file (unlinked
# at once: nothing is left behind, whatever happens to the process).
SPOOL_IN_MEMORY = 256 * 1024
_DIGEST_MISMATCH = "X-Bus-Content-SHA256 is not the SHA-256 of the body"


async def authenticate(
    ctx: ApiContext, request: Request, body_limit: int = MAX_SMALL_BODY_BYTES
) -> tuple[OrganId, bytes]:
    """The authenticated agency and the request body (read within *body_limit*)."""

    async def small(digest: str) -> bytes:
        body = await read_body(request, body_limit)
        if body_digest(body) != digest:
            raise AuthError("body-digest-mismatch", _DIGEST_MISMATCH)
        return body

    return await _authenticated(ctx, request, small)


async def authenticate_envelope(ctx: ApiContext, request: Request) -> tuple[OrganId, Received]:
    """The authenticated agency and the envelope it sent, spooled within ``http.max_body_bytes``; the
    caller closes ``received.file`` when done with it."""

    read: list[Received] = []

    async def spooled(digest: str) -> Received:
        read.append(await _spool(request, ctx.max_body_bytes))
        if read[0].sha256 != digest:
            raise AuthError("body-digest-mismatch", _DIGEST_MISMATCH)
        return read[0]

    try:
        return await _authenticated(ctx, request, spooled)
    except BaseException:
        for received in read:  # refused after the body was read (its digest, a replayed nonce)
            received.file.close()
        raise


async def _spool(request: Request, limit: int) -> Received:
    """The body, hashed as it arrives, in a spool file; 413 past *limit* (before reading, when
    Content-Length says so)."""
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise ApiError(
            413,
            "too-large",
            f"the envelope of {declared} bytes exceeds the limit of {limit} bytes (http.max_body_bytes)",
        )
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned
    digest, size = hashlib.sha256(), 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, "too-large", f"the envelope exceeds the limit of {limit} bytes (http.max_body_bytes)"
                )
            digest.update(chunk)
            spool.write(chunk)
    except ClientDisconnect:
        spool.close()
        raise ApiError(400, "client-disconnected", "the client went away before the body arrived") from None
    except BaseException:
        spool.close()
        raise
    return Received(spool, size, digest.hexdigest())


async def _authenticated(
    ctx: ApiContext, request: Request, read_body_of: Callable[[str], Awaitable[B]]
) -> tuple[OrganId, B]:
    """Authenticate *request*; *read_body_of(signed digest)* reads its body and checks it."""
    repeated = [name for name in SIGNING_HEADERS if len(request.headers.getlist(name)) > 1]
    if repeated:
        # Two values of a signed header: which one was signed depends on who reads it.
        raise AuthError("duplicate-header", f"header(s) sent more than once: {', '.join(repeated)}")
    signed = read_headers(request.headers)
    try:
        organ = OrganId.parse(signed.agency)
    except InputError:
        raise AuthError("unknown-agency", f"X-Bus-Agency {signed.agency!r} is no OrganId") from None
    agency = ctx.topology.agency(organ)
    secret = ctx.secrets.get(str(agency.organ_id)) if agency is not None else None
    if agency is None or secret is None or agency.organ_id != organ:
        raise AuthError(
            "unknown-agency",
            f"{signed.agency} has no API access on this axis (sign with the agency's current code)",
        )
    now = ctx.clock()
    target = request_target(request)
    verify_request(signed, secret, request.method, target, now=now, skew_s=ctx.clock_skew_s)
    body = await read_body_of(signed.content_sha256)
    first = await ctx.store.remember_nonce(
        str(organ),
        signed.nonce,
        dt.datetime.fromtimestamp(now, dt.UTC),
        keep=dt.timedelta(seconds=2 * ctx.clock_skew_s),
    )
    if not first:
        raise AuthError("replayed-request", "this request (its nonce) was already received")
    request.state.agency = organ  # for the log line of a refusal after this point
    return organ, body
