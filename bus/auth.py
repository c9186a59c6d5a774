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
(:mod:`adapters.http.client`) and checks in the server, so the two cannot drift apart;
docs/http-api.md shows a worked example that other languages can test against.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bus.errors import BusError

__all__ = [
    "MAX_AGENCY_CHARS",
    "SCHEME",
    "SIGNING_HEADERS",
    "AuthError",
    "SignedHeaders",
    "body_digest",
    "canonical_request",
    "read_headers",
    "sign_request",
    "signature",
    "verify_request",
]

SCHEME = "BUS-HMAC-SHA256"
SIGNING_HEADERS = ("x-bus-agency", "x-bus-timestamp", "x-bus-nonce", "x-bus-content-sha256", "authorization")

# Every signing header is checked for its length and its alphabet before anything parses it, so that
# no header value can make the check itself fail (issue 10 item 3: an X-Bus-Timestamp of 310 digits
# overflowed a float in the clock comparison, a 500 before authentication; a non-ASCII signature made
# hmac.compare_digest raise TypeError). The patterns are anchored and bounded: they are linear in the
# (already bounded, see docs/http-api.md "Limits") header length.
MAX_AGENCY_CHARS = 32  # an OrganId is 13 characters (000.00.01.H99); room for a longer future form
_AGENCY = re.compile(rf"[0-9A-Za-z.]{{1,{MAX_AGENCY_CHARS}}}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds: 10 digits until the year 2286
_NONCE = re.compile(r"[0-9A-Za-z]{16,64}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_AUTHORIZATION = re.compile(SCHEME + r" Signature=([0-9a-fA-F]{64})")
_ECHO_CHARS = 40  # at most this much of a refused value is quoted back in an error message


class AuthError(BusError):
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
    """The signing headers of a request, or :class:`AuthError` naming the one that is missing or bad.

    Each value must match its pattern whole (see ``_AGENCY`` and the others above): nothing else is
    converted, so no value can raise anything but :class:`AuthError`."""
    missing = [name for name in SIGNING_HEADERS if not headers.get(name)]
    if missing:
        raise AuthError("unauthenticated", f"missing header(s): {', '.join(missing)}")
    authorization = _AUTHORIZATION.fullmatch(headers["authorization"])
    if authorization is None:
        raise AuthError("bad-authorization", f"Authorization must be '{SCHEME} Signature=<64 hex digits>'")
    agency = headers["x-bus-agency"]
    if _AGENCY.fullmatch(agency) is None:
        raise AuthError(
            "unknown-agency",
            f"X-Bus-Agency {_echo(agency)} is no OrganId (at most {MAX_AGENCY_CHARS} ASCII letters, "
            "digits and dots)",
        )
    if _TIMESTAMP.fullmatch(headers["x-bus-timestamp"]) is None:
        raise AuthError("bad-timestamp", "X-Bus-Timestamp must be Unix seconds (1 to 12 ASCII digits)")
    nonce = headers["x-bus-nonce"]
    if _NONCE.fullmatch(nonce) is None:
        raise AuthError("bad-nonce", "X-Bus-Nonce must be 16 to 64 ASCII letters or digits")
    content_sha256 = headers["x-bus-content-sha256"]
    if _HEX_SHA256.fullmatch(content_sha256) is None:
        raise AuthError(
            "bad-content-sha256", "X-Bus-Content-SHA256 must be the body's SHA-256 as 64 hex digits"
        )
    return SignedHeaders(
        agency=agency,
        timestamp=int(headers["x-bus-timestamp"]),
        nonce=nonce,
        content_sha256=content_sha256.lower(),
        signature=authorization.group(1).lower(),
    )


def _echo(value: str) -> str:
    """*value* quoted for an error message, cut short: a refused header is not copied back whole."""
    return repr(value if len(value) <= _ECHO_CHARS else value[:_ECHO_CHARS] + "…")


def verify_request(
    signed: SignedHeaders, secret: bytes, method: str, target: str, *, now: float, skew_s: int
) -> None:
    """Check the timestamp window and the HMAC (constant-time). The body digest is checked by the
    caller once the body is read (it streams); replays by the caller's nonce store."""
    # In integers: a float of a huge timestamp overflows (SignedHeaders may be built by other code
    # than read_headers, which bounds it).
    drift = int(now) - signed.timestamp
    if abs(drift) > skew_s:
        raise AuthError(
            "stale-request",
            f"X-Bus-Timestamp is {drift} s from the server's clock; "
            f"at most {skew_s} s are allowed (check the client's clock)",
        )
    canonical = canonical_request(
        method, target, signed.timestamp, signed.nonce, signed.agency, signed.content_sha256
    )
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
    expected = signature(secret, canonical).encode("ascii")
    if not hmac.compare_digest(expected, signed.signature.encode("utf-8", "replace")):
        raise AuthError(
            "bad-signature", "the request signature does not match (wrong secret or altered request)"
        )
