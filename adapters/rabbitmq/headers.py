"""The bus's AMQP headers: every ``x-bus-*`` name in one place, and :class:`~bus.headers.BusHeaders` to
and from them (:func:`to_amqp`, :func:`from_amqp`).

Who writes what: the intake writes the five :data:`BUS_HEADERS` on every copy it publishes; the
publisher adds ``x-bus-attempt`` to a copy parked for a retry, and the reason, the source queue and a
dead-lettering id to a dead letter; a replay tags its copy (``x-bus-replay``); the relay marks an
envelope from the national axis with its DocId and a copy sent again after a loss with the lost DocId.
A copy whose envelope is in the body store (claim check, docs/data-path.md) names it by
``x-bus-body-sha256`` and ``x-bus-body-size`` and has an empty body; every copy made of it (a retry, a
dead letter, a replay, a resend) keeps them, as it keeps every header it does not change.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from bus.errors import PoisonMessageError
from bus.headers import FIELD_LIMITS, BodyRef, BusHeaders

__all__ = [
    "ATTEMPT_HEADER",
    "AXIS_DOC_HEADER",
    "BODY_SHA256_HEADER",
    "BODY_SIZE_HEADER",
    "BUS_HEADERS",
    "DEAD_ID_HEADER",
    "NOT_RESTORED",
    "REASON_HEADER",
    "REPLAY_HEADER",
    "RESEND_HEADER",
    "SOURCE_HEADER",
    "HeaderValue",
    "bus_fields",
    "from_amqp",
    "restorable",
    "text_header",
    "to_amqp",
    "usable",
]

HeaderValue = str | int | bool

# BusHeaders field -> its header.
BUS_HEADERS = {
    "bus_id": "x-bus-id",
    "sender": "x-bus-sender",
    "recipient": "x-bus-recipient",
    "kind": "x-bus-kind",
    "document_id": "x-bus-document-id",
}
# The envelope of a copy that carries none: its SHA-256 (hex) and size in the body store.
BODY_SHA256_HEADER = "x-bus-body-sha256"
BODY_SIZE_HEADER = "x-bus-body-size"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_BODY_SIZE = 2**40  # larger than any limit (http.max_body_bytes); bounds what int() is given
REASON_HEADER = "x-bus-reason"
ATTEMPT_HEADER = "x-bus-attempt"
SOURCE_HEADER = "x-bus-source-queue"
# One dead-lettering, one id: the dead-letter worker stores each event once however often the broker
# redelivers it, and the same message dead-lettered again (after a replay) is a new event.
DEAD_ID_HEADER = "x-bus-dead-id"
# Set on a replayed message: "<dead letter id>/<random>". Should the broker dead-letter it again, its
# x-death count starts at 1 again (a replay drops x-death); this header keeps that a new dead letter.
REPLAY_HEADER = "x-bus-replay"
AXIS_DOC_HEADER = "x-bus-axis-doc-id"  # the national axis's DocId of an envelope that came from it
RESEND_HEADER = "x-bus-resend-of"  # on a copy sent again because the axis lost one: the lost DocId

# Headers about the dead-lettering itself, not the message: a replay does not put them back.
NOT_RESTORED = frozenset(
    {
        REASON_HEADER,
        SOURCE_HEADER,
        DEAD_ID_HEADER,
        ATTEMPT_HEADER,  # a replay starts its retries afresh
        REPLAY_HEADER,
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


def to_amqp(headers: BusHeaders) -> dict[str, HeaderValue]:
    """The AMQP headers of one copy of an envelope."""
    amqp: dict[str, HeaderValue] = {name: getattr(headers, field) for field, name in BUS_HEADERS.items()}
    if headers.body is not None:
        amqp[BODY_SHA256_HEADER] = headers.body.sha256
        amqp[BODY_SIZE_HEADER] = headers.body.size
    return amqp


def _body_ref(raw: Mapping[str, Any]) -> tuple[BodyRef | None, str | None]:
    """The body reference of a message (None when it carries its body), or why it is not one."""
    digest, size = raw.get(BODY_SHA256_HEADER), raw.get(BODY_SIZE_HEADER)
    if digest is None and size is None:
        return None, None
    text, problem = _read(digest, 64)
    if text is None or _SHA256.fullmatch(text) is None:
        return None, f"{BODY_SHA256_HEADER} ({problem or 'not 64 lower-case hex digits'})"
    if isinstance(size, bytes):
        size = size.decode("ascii", "replace")
    if isinstance(size, str) and size.isascii() and size.isdigit() and len(size) <= 13:
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= _MAX_BODY_SIZE:
        return None, f"{BODY_SIZE_HEADER} ({'missing' if size is None else 'not a size in bytes'})"
    return BodyRef(text, size), None


def _read(value: Any, limit: int) -> tuple[str | None, str | None]:
    """A header value as the bus wrote it, or None and why not ("" when it is missing)."""
    if value is None or value in ("", b""):
        return None, ""
    if isinstance(value, bytes):  # pamqp hands over a non-UTF-8 string as bytes
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "not UTF-8"
    if not isinstance(value, str):
        return None, f"{type(value).__name__}, not text"
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        return None, "holds a NUL character"
    if len(value) > limit:
        return None, f"over {limit} characters"
    return value, None


def from_amqp(raw: Mapping[str, Any]) -> BusHeaders:
    """The bus headers of a message, or :class:`~bus.errors.PoisonMessageError` naming every header
    that is missing or not what the bus writes (not text, not UTF-8, too long)."""
    values: dict[str, str] = {}
    missing: list[str] = []
    malformed: list[str] = []
    for field, name in BUS_HEADERS.items():
        value, problem = _read(raw.get(name), FIELD_LIMITS[field])
        if value is not None:
            values[field] = value
        elif problem:
            malformed.append(f"{name} ({problem})")
        else:
            missing.append(name)
    body, problem = _body_ref(raw)
    if problem is not None:
        malformed.append(problem)
    if missing or malformed:
        what = [f"missing {', '.join(missing)}"] if missing else []
        what += [f"malformed {', '.join(malformed)}"] if malformed else []
        raise PoisonMessageError(f"not a bus message: {'; '.join(what)}")
    return BusHeaders(**values, body=body)


def bus_fields(raw: Mapping[str, Any]) -> dict[str, str | None]:
    """Each :class:`~bus.headers.BusHeaders` field that *raw* carries as the bus writes it, else None:
    what can be read of a message that may not be the bus's (a dead letter). Never raises."""
    return {field: _read(raw.get(name), FIELD_LIMITS[field])[0] for field, name in BUS_HEADERS.items()}


def usable(raw: Mapping[str, Any]) -> dict[str, HeaderValue]:
    """The headers that can travel on: text (bytes only when UTF-8), integers and booleans. Tables,
    lists (``x-death``), floats and timestamps are left out."""
    kept: dict[str, HeaderValue] = {}
    for name, value in raw.items():
        if isinstance(value, str | bool | int):
            kept[name] = value
        elif isinstance(value, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                kept[name] = value.decode("utf-8")
    return kept


def restorable(raw: Mapping[str, Any]) -> dict[str, HeaderValue]:
    """What a replay puts back on a dead letter: its usable headers, not those of the dead-lettering."""
    return {name: value for name, value in usable(raw).items() if name not in NOT_RESTORED}


def text_header(raw: Mapping[str, Any], name: str) -> str | None:
    """One header as text (an integer as its digits), or None when it is absent or not text."""
    value = usable(raw).get(name)
    return None if value is None or isinstance(value, bool) else str(value)
