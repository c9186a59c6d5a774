"""The national axis's wire format (``docs`` of the axis's Java SDK 2.0.1, recovered in
``national-axis-protocol.md``): parameters as signed ``XroadVnpt-*`` headers, an HMAC-SHA256 over the
sign-header JSON, and a response envelope with ``status``/``ErrorCode``/``ErrorDesc``.

Shared by the client (:mod:`adapters.national_axis.client`) and the mock axis
(:mod:`mock_axis`), so both sides speak exactly one format. The header order of the
Java client (a ``java.util.HashMap``'s iteration order) is reproduced, though a server must not rely on
it: it recomputes the HMAC over the sign-header it received.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from bus.errors import AxisError

__all__ = [
    "CONTENT_TYPE_JSON",
    "HEADER_PREFIX",
    "USER_AGENT",
    "VERSION",
    "AuthFailure",
    "SignedRequest",
    "envelope",
    "gson_string",
    "hash_file",
    "java_hashmap_order",
    "java_timestamp",
    "sign_header_string",
    "signed_headers",
    "verify_request",
]

HEADER_PREFIX = "XroadVnpt-"
USER_AGENT = "JAVASDKAgent/1.0.0 XRoad/VPCP"
VERSION = "3.0.201608"
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_FILE = "application/octet-stream"
AXIS_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def java_timestamp(at: dt.datetime) -> str:
    """``ddMMyyyy'T'HHmmss+SSSS`` in Vietnam's local time; ``+`` is a literal, ``SSSS`` the milliseconds."""
    local = at.astimezone(AXIS_TZ)
    return local.strftime("%d%m%YT%H%M%S") + f"+{local.microsecond // 1000:04d}"


def _java_hash(text: str) -> int:
    """Java ``String.hashCode`` (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h


def _spread(key: str) -> int:
    h = _java_hash(key)
    return h ^ (h >> 16)


def java_hashmap_order(keys: Iterable[str]) -> list[str]:
    """Iteration order of a ``java.util.HashMap`` after putting *keys* in this order (repeats ignored).

    A replay of ``HashMap.putVal``: bucket = ``(h ^ (h >>> 16)) & (cap - 1)``, a bucket keeps insertion
    order (appended at its tail; a resize splits it keeping the order), and the table doubles from 16
    when the size exceeds 0.75 of the capacity, and also when one bucket reaches 9 entries while the
    capacity is below 64 (``treeifyBin`` resizes instead of making a tree). A sort by final bucket alone
    misses that second resize: 7 keys in bucket 15 with ``timestamp`` and ``Content-Type`` reorder them.
    Tree bins (a bucket of 9 or more once the capacity is 64) are not replayed: they need 8 colliding
    keys or more than 48 keys, which no SDK call sends."""
    table: list[list[str]] = [[] for _ in range(16)]
    for size, key in enumerate(dict.fromkeys(keys), start=1):
        bucket = table[_spread(key) & (len(table) - 1)]
        bucket.append(key)
        if len(bucket) > 8 and len(table) < 64:  # TREEIFY_THRESHOLD 8, MIN_TREEIFY_CAPACITY 64
            table = _resized(table)
        if size > len(table) * 3 // 4:  # then putVal's own check, against the new threshold
            table = _resized(table)
    return [key for bucket in table for key in bucket]


def _resized(table: list[list[str]]) -> list[list[str]]:
    capacity = 2 * len(table)
    grown: list[list[str]] = [[] for _ in range(capacity)]
    for bucket in table:
        for key in bucket:
            grown[_spread(key) & (capacity - 1)].append(key)
    return grown


def gson_string(text: str) -> str:
    """A JSON string literal as gson writes it without HTML escaping: only ``"``, ``\\``, control
    characters and U+2028/2029 are escaped; ``/ < > & = '`` and non-ASCII characters stay."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif code < 0x20 or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def sign_header_string(pairs: Iterable[tuple[str, str]]) -> str:
    """``{"XroadVnpt-k":"v",...}``, compact, in the given order."""
    return "{" + ",".join(f"{gson_string(HEADER_PREFIX + k)}:{gson_string(v)}" for k, v in pairs) + "}"


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def hash_file(data: bytes) -> str:
    """SHA-256 in hex as the SDK writes it: each byte without zero-padding (so often < 64 characters)."""
    return "".join(format(b, "x") for b in hashlib.sha256(data).digest())


def signed_headers(
    system_id: str,
    secret: str,
    params: Mapping[str, str],
    *,
    timestamp: str,
    content_type: str = CONTENT_TYPE_JSON,
    hash_of_file: str | None = None,
) -> list[tuple[str, str]]:
    """The headers of one request, in the order the Java client sends them.

    The logical map is ``timestamp``, ``systemid``, ``Content-Type``, the caller's *params*, then
    ``hash-file`` for ``sendEdoc``; each entry goes out as ``XroadVnpt-k``, signed together."""
    logical: dict[str, str] = {"timestamp": timestamp, "systemid": system_id, "Content-Type": content_type}
    for key, value in params.items():
        logical[key] = value
    if hash_of_file is not None:
        logical["hash-file"] = hash_of_file
    order = java_hashmap_order(logical)
    pairs = [(k, logical[k]) for k in order]
    sign_header = sign_header_string(pairs)
    headers = [(HEADER_PREFIX + k, v) for k, v in pairs]
    headers.insert(order.index("Content-Type"), ("Content-Type", content_type))  # as the SDK sends it
    headers += [
        (HEADER_PREFIX + "sign-header-key", ";".join(order)),
        (HEADER_PREFIX + "sign-header", sign_header),
        (HEADER_PREFIX + "hash-header", _hmac_hex(secret, sign_header.encode("utf-8"))),
        ("User-Agent", USER_AGENT),
        (HEADER_PREFIX + "version", VERSION),
    ]
    return headers


class AuthFailure(AxisError):
    """A request whose signed headers are missing, malformed, or do not verify."""


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a verified request says: its system, its timestamp and its signed parameters."""

    system_id: str
    timestamp: str
    params: dict[str, str]


def verify_request(raw_headers: Mapping[str, bytes], secret_of: Callable[[str], str | None]) -> SignedRequest:
    """Check one request's signature. *raw_headers* maps lower-case names to the raw header bytes;
    *secret_of(system_id)* returns the system's secret or None.

    The HMAC is recomputed over the sign-header as received (any header order, stale extra keys
    allowed), and only the values inside it are believed: an unsigned header changes nothing."""
    sign_header = raw_headers.get((HEADER_PREFIX + "sign-header").lower())
    given = raw_headers.get((HEADER_PREFIX + "hash-header").lower())
    if sign_header is None or given is None:
        raise AuthFailure("missing XroadVnpt-sign-header or XroadVnpt-hash-header")
    try:
        signed = json.loads(sign_header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuthFailure(f"XroadVnpt-sign-header is not a JSON object: {exc}") from exc
    if not isinstance(signed, dict) or not all(isinstance(v, str) for v in signed.values()):
        raise AuthFailure("XroadVnpt-sign-header must be a JSON object of strings")
    params = {
        k[len(HEADER_PREFIX) :]: v
        for k, v in signed.items()
        if isinstance(k, str) and k.startswith(HEADER_PREFIX)
    }
    system_id = params.get("systemid")
    if not system_id:
        raise AuthFailure("the signed headers name no systemid")
    secret = secret_of(system_id)
    if secret is None:
        raise AuthFailure(f"unknown system {system_id!r}")
    expected = _hmac_hex(secret, sign_header)
    if not hmac.compare_digest(expected.encode("ascii"), given.strip().lower()):
        raise AuthFailure("XroadVnpt-hash-header does not match the signed headers")
    return SignedRequest(system_id, params.get("timestamp", ""), params)


def envelope(
    *, ok: bool = True, code: str = "0", description: str = "Thành công", **extra: Any
) -> dict[str, Any]:
    """The response envelope every operation answers with (``status``, ``ErrorCode``, ``ErrorDesc``)."""
    return {"status": "OK" if ok else "FAIL", "ErrorCode": code, "ErrorDesc": description, **extra}
