"""Request signing for the agency HTTP API: an HMAC-SHA256 with the agency's shared secret.

A request carries::

    X-Bus-Agency: 000.00.01.H99                 who signs (an agency's current code)
    X-Bus-Timestamp: 1795695600                 Unix seconds; refused outside the allowed skew
    X-Bus-Nonce: 3f0c...                        unique per request; a replay inside the window is refused
    X-Bus-Content-SHA256: e3b0c442...           hex SHA-256 of the body (of b"" when there is none)
    Authorization: BUS-HMAC-SHA256 Signature=<hex>

and the signature is ``HMAC-SHA256(secret, canonical)`` over the UTF-8 bytes of::

    BUS-HMAC-SHA256 \\n METHOD \\n /path?query \\n timestamp \\n nonce \\n agency \\n body-sha256

(one line each, joined by ``\\n``, no trailing newline). The same function signs in the client
(:mod:`bus.client`) and checks in the server, so the two cannot drift apart; docs/http-api.md shows a
worked example that other languages can test against.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "SCHEME",
    "AuthError",
    "SignedHeaders",
    "body_digest",
    "canonical_request",
    "sign_request",
    "signature",
    "verify_request",
]

SCHEME = "BUS-HMAC-SHA256"
_HEADERS = ("x-bus-agency", "x-bus-timestamp", "x-bus-nonce", "x-bus-content-sha256", "authorization")


class AuthError(Exception):
    """The request is not authentic; ``code`` is the machine-readable reason (HTTP 401)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    agency: str
    timestamp: int
    nonce: str
    content_sha256: str
    signature: str


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str, target: str, timestamp: int, nonce: str, agency: str, content_sha256: str
) -> bytes:
    """*target* is the path with its query string exactly as sent (``/v1/inbox?after=5``)."""
    lines = (SCHEME, method.upper(), target, str(timestamp), nonce, agency, content_sha256)
    return "\n".join(lines).encode("utf-8")


def signature(secret: bytes, canonical: bytes) -> str:
    return hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def sign_request(
    secret: bytes,
    agency: str,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request (a fresh timestamp and nonce each call)."""
    timestamp = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(16)
    digest = body_digest(body)
    mac = signature(secret, canonical_request(method, target, timestamp, nonce, agency, digest))
    return {
        "X-Bus-Agency": agency,
        "X-Bus-Timestamp": str(timestamp),
        "X-Bus-Nonce": nonce,
        "X-Bus-Content-SHA256": digest,
        "Authorization": f"{SCHEME} Signature={mac}",
    }


def read_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """The signing headers of a request, or :class:`AuthError` naming the one that is missing or bad."""
    missing = [name for name in _HEADERS if not headers.get(name)]
    if missing:
        raise AuthError("unauthenticated", f"missing header(s): {', '.join(missing)}")
    scheme, _, value = headers["authorization"].partition(" ")
    if scheme != SCHEME or not value.startswith("Signature="):
        raise AuthError("bad-authorization", f"Authorization must be '{SCHEME} Signature=<hex>'")
    try:
        timestamp = int(headers["x-bus-timestamp"])
    except ValueError:
        raise AuthError("bad-timestamp", "X-Bus-Timestamp must be Unix seconds") from None
    nonce = headers["x-bus-nonce"]
    if not 16 <= len(nonce) <= 64 or not nonce.isascii() or not nonce.isalnum():
        raise AuthError("bad-nonce", "X-Bus-Nonce must be 16 to 64 ASCII letters or digits")
    return SignedHeaders(
        agency=headers["x-bus-agency"],
        timestamp=timestamp,
        nonce=nonce,
        content_sha256=headers["x-bus-content-sha256"].lower(),
        signature=value.removeprefix("Signature=").lower(),
    )


def verify_request(
    signed: SignedHeaders, secret: bytes, method: str, target: str, *, now: float, skew_s: int
) -> None:
    """Check the timestamp window and the HMAC (constant-time). The body digest is checked by the
    caller once the body is read (it streams); replays by the caller's nonce store."""
    if abs(now - signed.timestamp) > skew_s:
        raise AuthError(
            "stale-request",
            f"X-Bus-Timestamp is {int(now - signed.timestamp)} s from the server's clock; "
            f"at most {skew_s} s are allowed (check the client's clock)",
        )
    canonical = canonical_request(
        method, target, signed.timestamp, signed.nonce, signed.agency, signed.content_sha256
    )
    if not hmac.compare_digest(signature(secret, canonical), signed.signature):
        raise AuthError(
            "bad-signature", "the request signature does not match (wrong secret or altered request)"
        )
