"""What an agency may do with what the bus holds for it: read a document, fetch and acknowledge the
envelopes of its inbox (issue 11: the core owns these rules; the HTTP API calls them and translates
their errors, the store applies what they allow).

* **Reading a document**: only its sender and its recipients may, by their current code or a former one
  (an agency merged or renamed keeps what it sent and received). For anyone else a document that
  exists must look exactly like one that does not: bus ids are uuid5 of public facts, so anyone can
  compute one (issue 10 item 6).
* **Acknowledging an envelope**: an agency sends ``processing``, ``done`` or ``fail`` (no other state is
  the recipient's to set); a ``fail`` needs a reason, since it goes on the sender's timeline; and an
  acknowledgement only moves forward: ``done`` and ``fail`` are final, so a later different
  acknowledgement is refused (:class:`AlreadyFinalError`) while the same one again is a harmless repeat.
* **The first fetch** of an envelope ends its wait in the inbox (the metric of that wait counts it once).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bus.delivery import DeliveryState
from bus.errors import AlreadyFinalError, BadAcknowledgementError
from bus.organ_id import OrganId

__all__ = [
    "ACKNOWLEDGEMENTS",
    "ACKNOWLEDGEMENT_FORM",
    "Acknowledgement",
    "acknowledgement",
    "confirm_acknowledged",
    "is_first_fetch",
    "may_read",
]

# The states an agency may acknowledge an envelope with, by the name it sends.
ACKNOWLEDGEMENTS: Mapping[str, DeliveryState] = MappingProxyType(
    {"processing": DeliveryState.PROCESSING, "done": DeliveryState.DONE, "fail": DeliveryState.FAIL}
)
ACKNOWLEDGEMENT_FORM = 'send {"state": "processing" | "done" | "fail", "reason": "..."}'


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """A recipient's transport acknowledgement of one envelope, checked by :func:`acknowledgement`."""

    state: DeliveryState
    reason: str | None = None


def acknowledgement(state: object, reason: object, *, max_reason_chars: int) -> Acknowledgement:
    """The acknowledgement an agency sent (*state* and *reason* as it sent them, any JSON value), or
    :class:`BadAcknowledgementError` saying what is wrong with it."""
    acknowledged = ACKNOWLEDGEMENTS.get(state) if isinstance(state, str) else None
    if acknowledged is None:
        raise BadAcknowledgementError(ACKNOWLEDGEMENT_FORM)
    if reason is not None and not isinstance(reason, str):
        raise BadAcknowledgementError("reason must be text")
    if reason is not None and len(reason) > max_reason_chars:
        raise BadAcknowledgementError(f"reason has {len(reason)} characters; at most {max_reason_chars}")
    if acknowledged is DeliveryState.FAIL and not reason:
        raise BadAcknowledgementError("a 'fail' acknowledgement needs a reason")
    return Acknowledgement(acknowledged, reason)


def confirm_acknowledged(item_id: int, ack: Acknowledgement, recorded: str | None) -> None:
    """Forward only: *recorded* is the envelope's acknowledgement state after the store was asked to
    record *ack*. The store records it unless the envelope is final already (``done`` or ``fail``: its
    conditional update), so any other state than *ack*'s means it was final: :class:`AlreadyFinalError`."""
    if recorded != ack.state.value:
        raise AlreadyFinalError(f"envelope {item_id} was already acknowledged as {recorded}")


def may_read(
    reader: OrganId, former_codes: Iterable[OrganId], sender: str, recipients: Iterable[str]
) -> bool:
    """Whether *reader* (an agency's current code, with its *former_codes*) sent the document of
    *sender* or is one of its *recipients*. If not, the caller answers as for a missing document."""
    codes = {str(reader), *(str(code) for code in former_codes)}
    return sender in codes or not codes.isdisjoint(recipients)


def is_first_fetch(fetched_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether the fetch made at *now* was the envelope's first. The store sets ``fetched_at`` on the
    first fetch only, to the time that fetch gave it, and returns the earlier time to every later one."""
    return fetched_at == now
