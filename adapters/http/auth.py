"""Who sent a request to the agency API: the signing headers (each once), the agency and its secret,
the HMAC and the clock (:mod:`bus.auth`), the body against its signed digest, and the nonce, which the
store remembers so that a request cannot be replayed. Any failure is an :class:`AuthError` (401)."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request

from adapters.http.context import ApiContext
from adapters.http.limits import MAX_SMALL_BODY_BYTES
from adapters.http.reading import read_body, request_target
from bus.auth import SIGNING_HEADERS, AuthError, body_digest, read_headers, verify_request
from bus.errors import InputError
from bus.organ_id import OrganId

__all__ = ["authenticate"]


async def authenticate(
    ctx: ApiContext, request: Request, body_limit: int = MAX_SMALL_BODY_BYTES
) -> tuple[OrganId, bytes]:
    """The authenticated agency and the request body (read within *body_limit*)."""
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
    body = await read_body(request, body_limit)
    if body_digest(body) != signed.content_sha256:
        raise AuthError("body-digest-mismatch", "X-Bus-Content-SHA256 is not the SHA-256 of the body")
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
