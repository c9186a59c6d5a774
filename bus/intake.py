"""The intake pipeline: one untrusted envelope in, durable deliveries out, or a clear refusal.

parse → schema and business checks (no comment or processing instruction anywhere: signatures do not
cover them) → sender authenticated and equal to ``From`` → every signature verified whenever there is
one, and required where the agency's policy says so, the first being provably the sender's (and from
then on only *what was signed* is read) → at most ``max_recipients``, none an unknown code of this
province → duplicate check on (sender, DocumentId, business type) → this node's ``TraceHeader`` and
signature → one confirmed publish per recipient → the store records the acceptance.

The bus id is derived from the duplicate key, so a client that retries after a crash between the
publishes and the store write gets the same bus id, and its recipients' copies carry the same message
ids: duplicates are absorbed downstream instead of lost upstream. The broker and the store are ports.

The checks of sender, signatures and fan-out are in :mod:`bus.intake_checks`; what a status or a
revocation concerns, in :mod:`bus.linking`; what each copy carries on the broker, :mod:`bus.headers`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from lxml import etree

from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.dsig import SigningKey, sign_tree
from bus.envelope import ParsedEnvelope
from bus.errors import DuplicateEnvelopeError, UnknownDocumentError
from bus.headers import BusHeaders
from bus.intake_checks import IntakeChecks, IntakePolicy
from bus.linking import links_of
from bus.model import DocumentEnvelope, StatusMessage
from bus.organ_id import OrganId
from bus.routing import Destination, DestinationKind, route
from bus.topology import Topology
from bus.trace import append_trace

__all__ = ["Accepted", "Intake", "IntakePolicy", "NodeIdentity", "PublisherPort", "StorePort", "bus_id_for"]

_BUS_NAMESPACE = uuid.UUID("6f1d5c2e-3b0a-4a59-9d1e-0c7e2b6a9f10")
_DEFAULT_POLICY = IntakePolicy()


class PublisherPort(Protocol):
    async def deliver(self, routing_key: str, body: bytes, *, message_id: str, headers: BusHeaders) -> None:
        """Publish one copy of an envelope; returns once the broker has it (raises BrokerError)."""


class StorePort(Protocol):
    async def begin_accept(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]], *, related: str | None = None
    ) -> str | None: ...
    async def confirm_accept(
        self,
        document: AcceptedDocument,
        recipients: Sequence[str],
        links: Sequence[tuple[TimelineEvent, str]] = (),
        *,
        business_status: tuple[str, Sequence[str], str] | None = None,
    ) -> None: ...
    async def original(self, sender: str, document_id: str) -> tuple[str, list[str]] | None: ...


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """This axis node: its OrganId for trace headers and its key for the bus's own signature."""

    organ_id: OrganId
    key: SigningKey
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class Accepted:
    bus_id: str
    document_id: str
    destinations: tuple[Destination, ...]
    # What was accepted from whom, for the caller's log lines and metrics.
    kind: str  # "document" or "status"
    sender: str


def bus_id_for(document: AcceptedDocument) -> str:
    return str(uuid.uuid5(_BUS_NAMESPACE, document.dedupe_key))


class Intake:
    def __init__(
        self,
        topology: Topology,
        node: NodeIdentity,
        publisher: PublisherPort,
        store: StorePort,
        policy: IntakePolicy = _DEFAULT_POLICY,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._topology = topology
        self._node = node
        self._publisher = publisher
        self._store = store
        self._clock = clock
        self._checks = IntakeChecks(topology, node.organ_id, policy, clock)

    async def accept(self, body: bytes, *, sender: OrganId) -> Accepted:
        """Accept *body* from the authenticated *sender*; returns once every delivery is durable."""
        tree, parsed = self._checks.checked(body, sender)
        return await self._accept(body, tree, parsed, sender, local_only=False)

    async def accept_from_axis(self, body: bytes) -> Accepted:
        """Accept an envelope the national axis delivered for this province's agencies.

        Checked like any intake; its sender is outside the province (an envelope from the axis that
        claims a local agency as sender is forged), its signature must check against the CAs trusted
        for other provinces and ministries (when the policy requires it), and only the local
        recipients get a copy: the axis delivers the others itself."""
        tree, parsed = self._checks.checked_from_axis(body)
        return await self._accept(body, tree, parsed, parsed.message.sender.organ_id, local_only=True)

    async def _accept(
        self,
        body: bytes,
        tree: etree._ElementTree,
        parsed: ParsedEnvelope,
        sender: OrganId,
        *,
        local_only: bool,
    ) -> Accepted:
        message = parsed.message
        now = self._clock()
        if isinstance(message, StatusMessage):
            document_id, business_type = message.response_for.document_id, int(message.status_code)
            code, subject, concerns = None, None, str(message.response_for.organ_id)
        else:
            document_id, business_type = message.document_id, int(message.business_type)
            code, subject = f"{message.code.number}/{message.code.notation}", message.subject
            concerns = None
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
            concerns=concerns,
        )
        bus_id = bus_id_for(draft)
        record = dataclasses.replace(draft, bus_id=bus_id)
        if isinstance(message, DocumentEnvelope) and not local_only:
            self._checks.refuse_fan_out(len(message.recipients), len(body))  # before any look-up
        links = await links_of(message, sender, bus_id, now, store=self._store, codes_of=self._checks.codes)
        routed = [route(self._topology, recipient) for recipient in links.recipients]
        if not local_only:
            self._checks.refuse_unknown_local(message, routed)
        destinations = _one_per_agency(routed)
        if local_only:
            destinations = tuple(d for d in destinations if d.kind is DestinationKind.LOCAL)
            if not destinations:
                raise UnknownDocumentError(
                    f"none of the recipients ({', '.join(map(str, links.recipients))}) is an agency "
                    "of this province"
                )
            # From the national axis only this province's copies are made here: a national broadcast
            # to thousands is fine as long as few of them are ours.
            self._checks.refuse_fan_out(len(destinations), len(body))
        recipients = [str(d.addressed_to) for d in destinations]
        earlier = await self._store.begin_accept(
            record, [(str(d.addressed_to), d.kind.value) for d in destinations], related=links.related
        )
        if earlier is not None:
            raise DuplicateEnvelopeError(
                earlier,
                f"already accepted as {earlier} (or attempted with other content): same sender, "
                f"DocumentId {document_id!r} and business type {business_type}; send exactly the same "
                "envelope to retry, or an update (BussinessDocType 2) to change a document",
            )
        append_trace(tree, str(self._node.organ_id), now)
        sign_tree(tree, self._node.key, self._node.certificate)
        out = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
        await asyncio.gather(
            *(
                self._publisher.deliver(
                    destination.routing_key,
                    out,
                    message_id=f"{bus_id}|{recipient}",
                    headers=BusHeaders(bus_id, str(sender), recipient, parsed.kind.value, document_id),
                )
                for destination, recipient in zip(destinations, recipients, strict=True)
            )
        )
        outbound = [
            (
                TimelineEvent(bus_id, recipient, DeliveryState.QUEUED, now, "chờ chuyển lên trục quốc gia"),
                f"{bus_id}|{recipient}|queued",
            )
            for destination, recipient in zip(destinations, recipients, strict=True)
            if destination.kind is DestinationKind.OUTBOUND
        ]
        await self._store.confirm_accept(
            record, recipients, [*links.links, *outbound], business_status=links.business_status
        )
        return Accepted(bus_id, document_id, destinations, parsed.kind.value, str(sender))


def _one_per_agency(destinations: Iterable[Destination]) -> tuple[Destination, ...]:
    """One delivery per receiving agency: ``To`` naming an agency by its current and its former code
    would otherwise put the document in its inbox twice (two message ids)."""
    kept: dict[str, Destination] = {}
    for destination in destinations:
        key = str(destination.agency.organ_id) if destination.agency else str(destination.addressed_to)
        kept.setdefault(key, destination)
    return tuple(kept.values())
