"""The intake pipeline: one untrusted envelope in, durable deliveries out, or a clear refusal.

parse → schema and business checks → sender authenticated and equal to ``From`` → the sender's
signature verified where the agency's policy requires one (and from then on only *what was signed* is
read) → duplicate check on (sender, DocumentId, business type) → this node's ``TraceHeader`` and
signature → one confirmed publish per recipient → the store records the acceptance.

The bus id is derived from the duplicate key, so a client that retries after a crash between the
publishes and the store write gets the same bus id, and its recipients' copies carry the same message
ids: duplicates are absorbed downstream instead of lost upstream. The broker and the store are ports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from lxml import etree

from bus.checks import VN_TZ
from bus.delivery import AcceptedDocument
from bus.dsig import SignatureConfig, SigningKey, TrustStore, sign_tree, verify_tree
from bus.envelope import ParsedEnvelope, check_tree
from bus.errors import DuplicateEnvelopeError, ForgedSenderError
from bus.model import DocumentEnvelope, StatusMessage
from bus.organ_id import OrganId
from bus.routing import Destination, route
from bus.topology import Topology
from bus.trace import append_trace
from bus.xmlparse import DEFAULT_LIMITS, XmlLimits, parse_untrusted

__all__ = ["Accepted", "Intake", "IntakePolicy", "NodeIdentity", "PublisherPort", "StorePort", "bus_id_for"]

_BUS_NAMESPACE = uuid.UUID("6f1d5c2e-3b0a-4a59-9d1e-0c7e2b6a9f10")


class PublisherPort(Protocol):
    async def deliver(
        self, routing_key: str, body: bytes, *, message_id: str, headers: Mapping[str, str | int | bool] = ...
    ) -> None: ...


class StorePort(Protocol):
    async def find_duplicate(self, document: AcceptedDocument) -> str | None: ...
    async def record_accepted(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]]
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """This axis node: its OrganId for trace headers and its key for the bus's own signature."""

    organ_id: OrganId
    key: SigningKey
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class IntakePolicy:
    """``signed_senders``: agencies whose envelopes must carry a valid signature (canonical OrganIds)."""

    trust: TrustStore | None = None
    signed_senders: frozenset[str] = field(default_factory=frozenset)
    signatures: SignatureConfig = field(default_factory=SignatureConfig)
    limits: XmlLimits = DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class Accepted:
    bus_id: str
    document_id: str
    destinations: tuple[Destination, ...]


def bus_id_for(document: AcceptedDocument) -> str:
    return str(uuid.uuid5(_BUS_NAMESPACE, document.dedupe_key))


class Intake:
    def __init__(
        self,
        topology: Topology,
        node: NodeIdentity,
        publisher: PublisherPort,
        store: StorePort,
        policy: IntakePolicy = IntakePolicy(),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._topology = topology
        self._node = node
        self._publisher = publisher
        self._store = store
        self._policy = policy
        self._clock = clock

    def _checked(self, body: bytes, sender: OrganId) -> tuple[etree._ElementTree, ParsedEnvelope]:
        tree = parse_untrusted(body, self._policy.limits)
        parsed = check_tree(tree, today=self._clock().astimezone(VN_TZ).date())
        claimed = parsed.message.sender.organ_id
        if claimed != sender:
            raise ForgedSenderError(
                f"envelope says From/OrganId {claimed}, but the request was authenticated "
                f"as {sender}: an agency may only send as itself"
            )
        if str(sender) in self._policy.signed_senders:
            if self._policy.trust is None:
                raise ForgedSenderError(f"{sender} must sign, and this node has no trust store configured")
            verified = verify_tree(tree, self._policy.trust, self._policy.signatures)
            # From here on, read only what the sender signed (trace headers are not part of it).
            parsed = check_tree(
                parse_untrusted(verified[0].signed_xml, self._policy.limits),
                today=self._clock().astimezone(VN_TZ).date(),
            )
            if parsed.message.sender.organ_id != sender:
                raise ForgedSenderError("the signed envelope names another sender")
        return tree, parsed

    def _recipients(self, message: DocumentEnvelope | StatusMessage) -> list[OrganId]:
        if isinstance(message, StatusMessage):
            return [message.response_for.organ_id]  # a status goes back to the document's sender
        return [r.organ_id for r in message.recipients]

    async def accept(self, body: bytes, *, sender: OrganId) -> Accepted:
        """Accept *body* from the authenticated *sender*; returns once every delivery is durable."""
        tree, parsed = self._checked(body, sender)
        message = parsed.message
        now = self._clock()
        if isinstance(message, StatusMessage):
            document_id, business_type = message.response_for.document_id, int(message.status_code)
            code, subject = None, None
        else:
            document_id, business_type = message.document_id, int(message.business_type)
            code, subject = f"{message.code.number}/{message.code.notation}", message.subject
        draft = AcceptedDocument(
            bus_id="",
            kind=parsed.kind.value,
            sender=str(sender),
            document_id=document_id,
            business_type=business_type,
            code=code,
            subject=subject,
            accepted_at=now,
            envelope_sha256=hashlib.sha256(body).hexdigest(),
        )
        bus_id = bus_id_for(draft)
        record = dataclasses.replace(draft, bus_id=bus_id)
        if (earlier := await self._store.find_duplicate(record)) is not None:
            raise DuplicateEnvelopeError(
                earlier,
                f"already accepted as {earlier}: same sender, DocumentId "
                f"{document_id!r} and business type {business_type}",
            )
        append_trace(tree, str(self._node.organ_id), now)
        sign_tree(tree, self._node.key, self._node.certificate)
        out = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
        destinations = tuple(route(self._topology, recipient) for recipient in self._recipients(message))
        for destination in destinations:
            recipient = str(destination.addressed_to)
            await self._publisher.deliver(
                destination.routing_key,
                out,
                message_id=f"{bus_id}|{recipient}",
                headers={
                    "x-bus-id": bus_id,
                    "x-bus-sender": str(sender),
                    "x-bus-recipient": recipient,
                    "x-bus-kind": parsed.kind.value,
                },
            )
        await self._store.record_accepted(record, [(str(d.addressed_to), d.kind.value) for d in destinations])
        return Accepted(bus_id, document_id, destinations)
