"""What travels beside every copy of an envelope on the broker: who sent it, to whom, and what it is.

The intake writes one :class:`BusHeaders` with each copy it publishes (:class:`bus.intake.PublisherPort`);
every consumer (the inbox worker, the relay out, the dead-letter worker) reads the same fields back.
The broker adapter turns it into AMQP headers and back (``adapters/rabbitmq/headers.py``:
``to_amqp`` / ``from_amqp``); a message whose headers do not make one is not the bus's, and goes to the
dead-letter queue with the reason (:class:`bus.errors.PoisonMessageError`).

A copy of a large envelope, or of one sent to many recipients, carries no body: its :class:`BodyRef`
names the envelope in the body store, where it was stored once (a claim check, docs/data-path.md).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIELD_LIMITS", "BodyRef", "BusHeaders"]

# The longest value the bus writes in each field (the store's columns have these sizes): a bus id is a
# UUID, sender and recipient are OrganIds, kind is "document" or "status".
FIELD_LIMITS = {"bus_id": 36, "sender": 32, "recipient": 32, "kind": 16, "document_id": 256}


@dataclass(frozen=True, slots=True)
class BodyRef:
    """An envelope in the body store: the SHA-256 (64 lower-case hex digits) and the size of its bytes,
    the bus-signed envelope every recipient of it gets."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class BusHeaders:
    """One copy of an accepted envelope: its bus id, its sender, the recipient this copy is for (as
    addressed: maybe a former code), ``document`` or ``status``, and the envelope's DocumentId (the one
    a status answers, for a status). ``body``: where the envelope is, when the copy carries none."""

    bus_id: str
    sender: str
    recipient: str
    kind: str
    document_id: str
    body: BodyRef | None = None

    def log_fields(self) -> dict[str, str]:
        """What every log line about this envelope carries (issue 5: operators search by any of them)."""
        return {
            "bus_id": self.bus_id,
            "document_id": self.document_id,
            "sender": self.sender,
            "recipient": self.recipient,
        }
