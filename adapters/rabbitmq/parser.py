"""An incoming message of a bus queue, parsed once into :class:`BusMessage`: what the workers read
instead of aio-pika's message (after FastStream's ``rabbit/parser.py``). A message that does not parse
is poison (:class:`~bus.errors.PoisonMessageError`): the consumer base dead-letters it with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from adapters.rabbitmq.headers import ATTEMPT_HEADER, BUS_HEADERS, HeaderValue, from_amqp, to_amqp, usable
from bus.errors import PoisonMessageError
from bus.headers import BusHeaders

__all__ = ["MESSAGE_ID_LIMIT", "BusMessage", "known_fields", "parse_message", "passed_on"]

# The inbox keeps message ids of up to 100 characters; the bus writes "<bus id>|<recipient>" (69 at most).
MESSAGE_ID_LIMIT = 100
_OWN = frozenset({*BUS_HEADERS.values(), ATTEMPT_HEADER})


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One copy of an envelope taken off a bus queue."""

    message_id: str
    headers: BusHeaders
    body: bytes
    attempt: int = 0  # sends tried already (x-bus-attempt, on a copy back from a retry queue)
    # Its other headers (a replay's or a resend's tag, trace hops, ...): passed on with every copy of it.
    carried: Mapping[str, HeaderValue] = field(default_factory=dict)

    def copy_headers(self) -> dict[str, HeaderValue]:
        """What a copy of it carries (a retry, a dead letter, the copy kept of a send): all its headers
        but the attempt count, which a retry sets afresh."""
        return {**self.carried, **to_amqp(self.headers)}


def _attempt(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise PoisonMessageError(f"not a bus message: malformed {ATTEMPT_HEADER} ({value!r:.40})")


def parse_message(message: AbstractIncomingMessage) -> BusMessage:
    """*message* as the bus wrote it; :class:`~bus.errors.PoisonMessageError` with the reason when
    its bus headers or its message id are missing or malformed."""
    raw = message.headers or {}
    headers = from_amqp(raw)
    if not message.message_id:
        raise PoisonMessageError("not a bus message: missing message id")
    if len(message.message_id) > MESSAGE_ID_LIMIT:
        raise PoisonMessageError(
            f"not a bus message: malformed message id (over {MESSAGE_ID_LIMIT} characters)"
        )
    carried = {name: value for name, value in usable(raw).items() if name not in _OWN}
    return BusMessage(message.message_id, headers, message.body, _attempt(raw.get(ATTEMPT_HEADER)), carried)


def passed_on(raw: Mapping[str, Any]) -> dict[str, HeaderValue]:
    """The headers a dead-lettered poison message keeps: what it had, but the attempt count."""
    return {name: value for name, value in usable(raw).items() if name != ATTEMPT_HEADER}


def known_fields(raw: Mapping[str, Any]) -> dict[str, str]:
    """What a message that may not be the bus's says of the envelope, cut short, for a log line."""
    text = usable(raw)
    headers = {name: BUS_HEADERS[name] for name in ("bus_id", "document_id", "sender", "recipient")}
    return {name: str(text[header])[:100] for name, header in headers.items() if text.get(header)}
