"""Receipts the bus signs for senders (issue 15 item 4), as AS4's non-repudiation of receipt.

An **acceptance receipt** answers an accepted envelope: the bus took these bytes (their SHA-256), from
this sender, at this time, for these recipients. A **delivery receipt** says a recipient acknowledged the
document (``done``, or ``fail`` with its reason), when, and the SHA-256 of the bytes it was given (the
envelope as the bus sealed it). Each is a JWS (:mod:`bus.jws`) signed by the node's key; a delivery
receipt names the audit record it was made from (chain, seq, hash), so that it can be found in the log
and in an exported archive. ``bus receipt verify`` checks either with the CA certificate alone.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from bus.audit import claimed_time, iso, parse_iso
from bus.dsig.keys import SigningKey
from bus.dsig.trust import TrustStore
from bus.jws import EvidenceError, Signed, canonical_json, check_node, sign, verify

if TYPE_CHECKING:
    from bus.intake import Accepted

__all__ = [
    "ACCEPTED",
    "DELIVERED",
    "Notary",
    "acceptance_receipt",
    "receipts_from_records",
    "verify_receipt",
]

ACCEPTED = "bus-receipt-accepted"
DELIVERED = "bus-receipt-delivered"
_VERSION = 1


class Notary:
    """Signs receipts with the node's key; *chain* is its certificate chain, the node's first."""

    def __init__(self, node: str, key: SigningKey, chain: Sequence[x509.Certificate]) -> None:
        self.node = node
        self._key = key
        self._chain = tuple(chain)

    def _sign(self, value: Mapping[str, Any]) -> dict[str, str]:
        # signed_at: when this signature was made (a receipt of an old event is signed again on request,
        # with the node's current certificate, which must be valid then, not at the event).
        signed_at = iso(dt.datetime.now(dt.UTC))
        payload = {**value, "v": _VERSION, "node": self.node, "signed_at": signed_at}
        return sign(canonical_json(payload), self._key, self._chain)

    def accepted(
        self,
        *,
        bus_id: str,
        document_id: str,
        sender: str,
        sha256: str,
        at: dt.datetime,
        recipients: Sequence[str],
        audit: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        value: dict[str, Any] = {
            "type": ACCEPTED,
            "bus_id": bus_id,
            "document_id": document_id,
            "sender": sender,
            "sha256": sha256,
            "at": iso(at),
            "recipients": sorted(recipients),
        }
        if audit is not None:
            value["audit"] = dict(audit)
        return self._sign(value)

    def delivered(
        self,
        *,
        bus_id: str,
        document_id: str,
        sender: str,
        recipient: str,
        state: str,
        at: dt.datetime,
        sha256: str | None,
        reason: str | None,
        audit: Mapping[str, Any],
    ) -> dict[str, str]:
        value: dict[str, Any] = {
            "type": DELIVERED,
            "bus_id": bus_id,
            "document_id": document_id,
            "sender": sender,
            "recipient": recipient,
            "state": state,
            "at": iso(at),
            "sha256": sha256,
            "audit": dict(audit),
        }
        if reason:
            value["reason"] = reason
        return self._sign(value)


def acceptance_receipt(notary: Notary, accepted: Accepted) -> dict[str, str] | None:
    """The receipt an accepted envelope's answer carries (HTTP 202, the AMQP agencies' reply)."""
    if accepted.accepted_at is None:
        return None
    return notary.accepted(
        bus_id=accepted.bus_id,
        document_id=accepted.document_id,
        sender=accepted.sender,
        sha256=accepted.received_sha256,
        at=accepted.accepted_at,
        recipients=accepted.recipients,
    )


def verify_receipt(receipt: Any, trust: TrustStore, *, node: str | None = None) -> Signed:
    """Check a receipt (the JWS as parsed JSON, or its JSON text): its signature, its signer's chain at
    the time the receipt states, and that it is a receipt. :class:`EvidenceError` says what failed."""
    if isinstance(receipt, (str, bytes)):
        try:
            receipt = json.loads(receipt)
        except ValueError as exc:
            raise EvidenceError(f"a receipt is JSON; this is not: {exc}") from exc
    if isinstance(receipt, dict) and "receipt" in receipt and "protected" not in receipt:
        receipt = receipt["receipt"]  # the 202 answer as saved, or a list's item
    signed = verify(receipt, trust, at=claimed_time(receipt, "signed_at", "at"))
    if signed.value.get("type") not in (ACCEPTED, DELIVERED):
        raise EvidenceError(f"a signed {signed.value.get('type')!r}, not a receipt of the bus")
    check_node(signed, node)
    return signed


def receipts_from_records(
    notary: Notary, records: Sequence[tuple[str, int, str, bytes]]
) -> list[dict[str, str]]:
    """A document's receipts, made from its audit records ``(chain, seq, sha256, bytes)`` in the order
    they were written: the acceptance, then each final acknowledgement (``done`` or ``fail``) of a
    recipient, signed now. Each names its record, which anyone can find in the log or an archive."""
    receipts: list[dict[str, str]] = []
    accepted: dict[str, Any] | None = None
    given: dict[str, str] = {}  # recipient -> the SHA-256 of what its inbox was given
    values = [json.loads(data) for _, _, _, data in records]
    for value in values:
        if value.get("kind") == "delivery.queued" and value.get("sha256"):
            given[value["recipient"]] = value["sha256"]
    # The acceptance first, whatever the gateways' clocks put before it.
    order = sorted(range(len(records)), key=lambda i: values[i].get("kind") != "envelope.accepted")
    for index in order:
        chain, seq, sha256, _ = records[index]
        value = values[index]
        audit = {"chain": chain, "seq": seq, "record": sha256}
        if value.get("kind") == "envelope.accepted":
            accepted = value
            receipts.append(
                notary.accepted(
                    bus_id=value["bus_id"],
                    document_id=value["document_id"],
                    sender=value["sender"],
                    sha256=value["received_sha256"],
                    at=parse_iso(value["at"]),
                    recipients=value.get("recipients", []),
                    audit=audit,
                )
            )
        elif value.get("kind") in ("delivery.done", "delivery.fail") and accepted is not None:
            receipts.append(
                notary.delivered(
                    bus_id=value["bus_id"],
                    document_id=accepted["document_id"],
                    sender=accepted["sender"],
                    recipient=value["recipient"],
                    state=value["kind"].removeprefix("delivery."),
                    at=parse_iso(value["at"]),
                    sha256=given.get(value["recipient"], accepted.get("delivered_sha256")),
                    reason=value.get("detail"),
                    audit=audit,
                )
            )
    return receipts
