"""The HTTP exchange with an RFC 3161 time-stamping authority (RFC 3161 §3.4, time-stamp over HTTP).

One POST of a ``application/timestamp-query``, one ``application/timestamp-reply`` back. This module
checks only what belongs to the exchange: the HTTP status, the TSA's granted status and that the
token answers *this* request (its nonce is the one sent). Whether the token is worth keeping (the
TSA's signature, certificate and trust, the digest it stamps, genTime) is
:func:`bus.timestamp.verify_token`'s question, asked by the caller with its own trust anchors.
"""

from __future__ import annotations

import secrets

import httpx

from bus.timestamp import TimestampError, parse_response, timestamp_request, token_nonce

__all__ = ["request_timestamp"]

QUERY_TYPE = "application/timestamp-query"
# RFC 3161 §3.4 names the reply application/timestamp-reply; some TSAs still send the draft's name.
_REPLY_TYPES = frozenset({"application/timestamp-reply", "application/timestamp-response"})
_MAX_REPLY = 1 << 20  # a reply is a few kilobytes; a TSA that streams more is not answering


async def request_timestamp(
    url: str, digest: bytes, *, timeout_s: float = 10.0, nonce: int | None = None
) -> bytes:
    """Ask the TSA at *url* to stamp *digest* (a SHA-256); the DER TimeStampToken it granted.

    A random 64-bit nonce is sent when none is given. :class:`~bus.timestamp.TimestampError`, naming
    the URL, on a transport error or timeout, an HTTP error, a refusal, or a reply to another request.
    """
    sent_nonce = secrets.randbits(64) if nonce is None else nonce
    query = timestamp_request(digest, nonce=sent_nonce)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout_s) as client,
            client.stream("POST", url, content=query, headers={"Content-Type": QUERY_TYPE}) as response,
        ):
            if response.status_code != httpx.codes.OK:
                raise TimestampError(f"the TSA at {url} answered HTTP {response.status_code}")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type not in _REPLY_TYPES:
                raise TimestampError(
                    f"the TSA at {url} answered {content_type or 'no content type'}, "
                    "expected application/timestamp-reply"
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_REPLY:
                    raise TimestampError(f"the TSA at {url} sent more than {_MAX_REPLY} bytes")
    except httpx.TimeoutException as exc:
        raise TimestampError(f"the TSA at {url} did not answer within {timeout_s} s") from exc
    except httpx.HTTPError as exc:
        raise TimestampError(f"cannot reach the TSA at {url}: {exc!r}") from exc
    try:
        token = parse_response(bytes(body))
        found = token_nonce(token)
    except TimestampError as exc:
        raise TimestampError(f"the TSA at {url}: {exc}") from exc
    if found != sent_nonce:
        raise TimestampError(f"the TSA at {url} answered with nonce {found}, not the {sent_nonce} sent")
    return token
