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
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from lxml import etree

from bus.checks import VN_TZ
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.dsig import SignatureConfig, SigningKey, TrustStore, find_signatures, sign_tree, verify_tree
from bus.envelope import ParsedEnvelope, check_tree
from bus.errors import (
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    Problem,
    SignatureError,
    UnknownDocumentError,
)
from bus.model import BussinessDocType, DocumentEnvelope, StatusMessage
from bus.organ_id import OrganId
from bus.routing import Destination, DestinationKind, route
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
class IntakePolicy:
    """``signed_senders``: agencies whose envelopes must carry a valid signature (canonical OrganIds)."""

    trust: TrustStore | None = None
    signed_senders: frozenset[str] = field(default_factory=frozenset)
    # Agencies whose signing certificate is pinned: canonical OrganId -> SHA-256 of the DER certificate.
    pinned: Mapping[str, bytes] = field(default_factory=dict)
    signatures: SignatureConfig = field(default_factory=SignatureConfig)
    limits: XmlLimits = DEFAULT_LIMITS
    # Envelopes relayed in from the national axis: the CAs of other provinces and ministries, and
    # whether such an envelope must carry a signature that checks against them.
    axis_trust: TrustStore | None = None
    axis_require_signature: bool = True
    # Other provinces' axes (their node OrganIds) whose signature vouches for a sender of their own
    # body: they authenticated the sender before signing. Anyone else must be signed by the sender.
    trusted_axes: frozenset[str] = frozenset()
    # Recipients (To) one document may name: each is a copy to keep and deliver, so an unbounded list
    # is an amplification attack (one 213 KB envelope to 2,000 codes made 430 MB of copies).
    max_recipients: int = 500
    # ... and bytes: copies x envelope size (a 64 MiB envelope to 500 recipients would be 32 GiB).
    max_fanout_bytes: int = 1024**3


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
        required = str(sender) in self._policy.signed_senders
        if not required and not find_signatures(tree.getroot()):
            return tree, parsed
        # A signature is checked whenever there is one: the bus countersigns what it forwards, and
        # must not vouch for a signature nobody checked (a rogue CA's, say) because the sender was
        # not obliged to sign.
        if self._policy.trust is None:
            raise SignatureError(
                f"the envelope from {sender} carries a signature and this node trusts no CA to check it "
                "against (node.trust): send it unsigned, or ask the operator to configure the CA"
                if not required
                else f"{sender} must sign, and this node has no trust store configured (node.trust)"
            )
        verified = verify_tree(tree, self._policy.trust, self._policy.signatures)
        self._check_signer(verified[0].signer, sender, required=required)
        # From here on, read only what the sender signed (trace headers are not part of it).
        parsed = check_tree(
            parse_untrusted(verified[0].signed_xml, self._policy.limits),
            today=self._clock().astimezone(VN_TZ).date(),
        )
        if parsed.message.sender.organ_id != sender:
            raise ForgedSenderError("the signed envelope names another sender")
        return tree, parsed

    def _check_signer(self, signer: x509.Certificate, sender: OrganId, *, required: bool) -> None:
        """The first signature must be the sender's: its pinned certificate, or one whose UID names it
        (or one of its former codes). A UID naming another agency is a forgery. A certificate whose UID
        names no agency (none, or a person's CMND/CCCD/MST) proves nothing about which agency signed,
        so it cannot meet a "must sign" policy; from an agency that need not sign it is let through."""
        pin = self._policy.pinned.get(str(sender))
        if pin is not None:
            if signer.fingerprint(hashes.SHA256()) != pin:
                raise ForgedSenderError(f"the envelope is signed with a certificate that is not {sender}'s")
            return
        uids = [str(a.value) for a in signer.subject.get_attributes_for_oid(NameOID.USER_ID)]
        organs = [str(organ) for organ in map(_organ_or_none, uids) if organ is not None]
        codes = self._codes(sender)
        others = [organ for organ in organs if organ not in codes]
        if others:
            raise ForgedSenderError(f"the envelope is signed by {others[0]}, not by {sender} that sends it")
        if required and not organs:
            named = f"names UID {', '.join(uids)}, no OrganId" if uids else "names no UID (OrganId)"
            raise ForgedSenderError(
                f"{sender} must sign its envelopes, and the signing certificate {named}: it does not "
                f"prove that {sender} signed; sign with the agency's certificate, or pin it "
                "(agencies[].certificate)"
            )

    async def _links(
        self, message: DocumentEnvelope | StatusMessage, sender: OrganId, bus_id: str, now: dt.datetime
    ) -> _Links:
        """What this envelope concerns: the document a status answers, or the one a revocation, update
        or replacement changes; and who a take-back request (13) goes to."""
        if isinstance(message, StatusMessage):
            about = message.response_for
            original = await self._store.original(str(about.organ_id), about.document_id)
            code = message.status_code
            detail = f"{code.value} {code.label}" + (
                f": {message.description}" if message.description else ""
            )
            if about.organ_id == sender:
                # The document's own sender: a take-back request (13) goes to its recipients.
                if original is None:
                    raise UnknownDocumentError(
                        f"status {code.value} from {sender} concerns document {about.document_id!r}, "
                        "which this axis never carried: nobody to send it to"
                    )
                related, recipients = original
                event = TimelineEvent(
                    related, None, DeliveryState.RELATED, now, f"{detail} (gói tin {bus_id})"
                )
                return _Links(
                    related, [OrganId.parse(r) for r in recipients], [(event, f"{bus_id}|link")], None
                )
            if original is None:
                return _Links(None, [about.organ_id], [], None)
            related, recipients = original
            codes = self._codes(sender)
            recipient = next((r for r in recipients if r in codes), None)
            if recipient is None:
                # Not one of the document's recipients: it still reaches the document's sender, but
                # writes nothing on a timeline it has no part in.
                return _Links(None, [about.organ_id], [], None)
            event = TimelineEvent(related, recipient, DeliveryState.STATUS, now, detail)
            return _Links(
                related, [about.organ_id], [(event, f"{bus_id}|link")], (related, codes, code.value)
            )
        addressed = [r.organ_id for r in message.recipients]
        doc_type = message.business_type
        if doc_type is BussinessDocType.NEW:
            return _Links(None, addressed, [], None)
        concerned = (
            message.bussiness.document_id if message.bussiness and message.bussiness.document_id else None
        )
        targets = [concerned or message.document_id]
        if message.bussiness is not None:
            targets += [r.document_id for r in message.bussiness.replacements]
        links: list[tuple[TimelineEvent, str]] = []
        first: str | None = None
        for target in dict.fromkeys(targets):
            found = await self._store.original(str(sender), target)
            if found is None or found[0] == bus_id:
                continue
            first = first or found[0]
            number = f"{message.code.number}/{message.code.notation}"
            detail = f"{_DOC_TYPE_LABELS[doc_type]}: văn bản {number} (gói tin {bus_id})"
            links.append(
                (
                    TimelineEvent(found[0], None, DeliveryState.RELATED, now, detail),
                    f"{bus_id}|link|{found[0]}",
                )
            )
        return _Links(first, addressed, links, None)

    def _refuse_fan_out(self, copies: int, size: int) -> None:
        """Each recipient is a copy to keep and deliver: bound how many, and how many bytes, one
        envelope may make (one 213 KB envelope to 2,000 codes made ~430 MB in RabbitMQ)."""
        policy = self._policy
        if copies > policy.max_recipients:
            why = (
                f"the envelope names {copies} recipients; this axis accepts at most "
                f"{policy.max_recipients} per envelope (intake.max_recipients)"
            )
        elif copies * size > policy.max_fanout_bytes:
            why = (
                f"{copies} copies of {size:,} bytes make {copies * size:,} bytes; this axis accepts at "
                f"most {policy.max_fanout_bytes:,} per envelope (intake.max_fanout_bytes)"
            )
        else:
            return
        raise EnvelopeInvalidError(
            [
                Problem(
                    "too-many-recipients",
                    "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To",
                    f"{why}: every recipient is a copy to keep and deliver, so split the list, address "
                    "a unit instead of each of its agencies, or send the attachments separately",
                )
            ]
        )

    def _refuse_unknown_local(
        self, message: DocumentEnvelope | StatusMessage, routed: Sequence[Destination]
    ) -> None:
        """A code of this province that no agency here has (nor had) is a mistake to report, not an
        address to relay to the national axis, which would only bounce it back."""
        province = self._node.organ_id.top
        header = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
        problems = [
            Problem(
                "unknown-recipient",
                f"{header}/ResponseFor/OrganId"
                if isinstance(message, StatusMessage)
                else f"{header}/To[{position}]/OrganId",
                f"{d.addressed_to} is a code of this province ({province}) but no agency of this axis "
                "has it, now or formerly: check the code against GET /v1/agencies",
            )
            for position, d in enumerate(routed, start=1)
            if d.kind is DestinationKind.OUTBOUND and d.addressed_to.top == province
        ]
        if problems:
            raise EnvelopeInvalidError(problems)

    def _codes(self, organ: OrganId) -> list[str]:
        """An agency's code and its former codes (a delivery may be addressed to either)."""
        agency = self._topology.agency(organ)
        return [str(organ)] if agency is None else [str(agency.organ_id), *map(str, agency.aliases)]

    async def accept(self, body: bytes, *, sender: OrganId) -> Accepted:
        """Accept *body* from the authenticated *sender*; returns once every delivery is durable."""
        tree, parsed = self._checked(body, sender)
        return await self._accept(body, tree, parsed, sender, local_only=False)

    async def accept_from_axis(self, body: bytes) -> Accepted:
        """Accept an envelope the national axis delivered for this province's agencies.

        Checked like any intake; its sender is outside the province (an envelope from the axis that
        claims a local agency as sender is forged), its signature must check against the CAs trusted
        for other provinces and ministries (when the policy requires it), and only the local
        recipients get a copy: the axis delivers the others itself."""
        tree, parsed = self._checked_from_axis(body)
        return await self._accept(body, tree, parsed, parsed.message.sender.organ_id, local_only=True)

    def _checked_from_axis(self, body: bytes) -> tuple[etree._ElementTree, ParsedEnvelope]:
        today = self._clock().astimezone(VN_TZ).date()
        tree = parse_untrusted(body, self._policy.limits)
        parsed = check_tree(tree, today=today)
        sender = parsed.message.sender.organ_id
        if self._topology.agency(sender) is not None or sender.top == self._node.organ_id.top:
            raise ForgedSenderError(
                f"an envelope from the national axis names {sender}, a unit of this province, as its "
                "sender: this province's units send through this bus, not through the national axis"
            )
        required = self._policy.axis_require_signature
        if not required and not find_signatures(tree.getroot()):
            return tree, parsed
        if self._policy.axis_trust is None:
            raise SignatureError(
                "envelopes from the national axis must be signed, and no CA is trusted (national_axis.trust)"
                if required
                else f"the envelope from {sender} carries a signature, and no CA of other provinces "
                "and ministries is trusted to check it (national_axis.trust)"
            )
        verified = verify_tree(tree, self._policy.axis_trust, self._policy.signatures)
        if not required:
            return tree, check_tree(parse_untrusted(verified[0].signed_xml, self._policy.limits), today=today)
        vouching = next((v for v in verified if self._vouches_for(v.signer, sender)), None)
        if vouching is None:
            signers = ", ".join(_uid(v.signer) or "(no UID)" for v in verified)
            raise ForgedSenderError(
                f"the envelope from {sender} is signed by {signers}: neither the sender itself nor a "
                "trusted axis of the sender's own body (national_axis.trusted_axes)"
            )
        parsed = check_tree(parse_untrusted(vouching.signed_xml, self._policy.limits), today=today)
        if parsed.message.sender.organ_id != sender:
            raise ForgedSenderError("the signed envelope names another sender")
        return tree, parsed

    def _vouches_for(self, signer: x509.Certificate, sender: OrganId) -> bool:
        """The sender signed it, or a trusted axis of the sender's own province or ministry did."""
        uid = _uid(signer)
        organ = None if uid is None else _organ_or_none(uid)
        if organ is None:
            return False
        if organ == sender:
            return True
        return str(organ) in self._policy.trusted_axes and organ.top == sender.top

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
            self._refuse_fan_out(len(message.recipients), len(body))  # before any look-up
        links = await self._links(message, sender, bus_id, now)
        routed = [route(self._topology, recipient) for recipient in links.recipients]
        if not local_only:
            self._refuse_unknown_local(message, routed)
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
            self._refuse_fan_out(len(destinations), len(body))
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
                    headers={
                        "x-bus-id": bus_id,
                        "x-bus-sender": str(sender),
                        "x-bus-recipient": recipient,
                        "x-bus-kind": parsed.kind.value,
                        "x-bus-document-id": document_id,
                    },
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


def _organ_or_none(text: str) -> OrganId | None:
    try:
        return OrganId.parse(text)
    except ValueError:
        return None


def _uid(certificate: x509.Certificate) -> str | None:
    uids = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(uids[0].value) if uids else None


def _one_per_agency(destinations: Iterable[Destination]) -> tuple[Destination, ...]:
    """One delivery per receiving agency: ``To`` naming an agency by its current and its former code
    would otherwise put the document in its inbox twice (two message ids)."""
    kept: dict[str, Destination] = {}
    for destination in destinations:
        key = str(destination.agency.organ_id) if destination.agency else str(destination.addressed_to)
        kept.setdefault(key, destination)
    return tuple(kept.values())


@dataclass(frozen=True, slots=True)
class _Links:
    related: str | None
    recipients: list[OrganId]
    links: list[tuple[TimelineEvent, str]]
    business_status: tuple[str, Sequence[str], str] | None


_DOC_TYPE_LABELS = {
    BussinessDocType.REVOCATION: "Thu hồi",
    BussinessDocType.UPDATE: "Cập nhật",
    BussinessDocType.REPLACEMENT: "Thay thế",
}
