"""The intake pipeline: one untrusted envelope in, durable deliveries out, or a clear refusal.

parse → schema and business checks (no comment or processing instruction anywhere: signatures do not
cover them) → sender authenticated and equal to ``From`` → every signature verified whenever there is
one, and required where the agency's policy says so, the first being provably the sender's (and from
then on only *what was signed* is read) → at most ``max_recipients``, none an unknown code of this
province → duplicate check on (sender, DocumentId, business type) → this node's ``TraceHeader`` and
signature → the sealed envelope stored once in the body store when it is large or goes to many
recipients → one confirmed publish per recipient (carrying the envelope, or a reference to it) → the
store records the acceptance.

Any size passes in bounded memory (issue 12): the envelope arrives in a file (:class:`Received`), is
parsed from there with its long attachment texts left on disk (:mod:`bus.spooled`), and the sealed
envelope is written to a spool file while hashed, from which the body store reads it in chunks. The
CPU-heavy steps of a large envelope run in a worker thread, so the event loop goes on serving others.

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
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, ParamSpec, Protocol, TypeVar

from cryptography import x509
from lxml import etree

from bus.audit import Entry
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.dsig import SigningKey, sign_tree
from bus.envelope import ParsedEnvelope
from bus.errors import DuplicateEnvelopeError, InputError, UnknownDocumentError
from bus.headers import BodyRef, BusHeaders
from bus.intake_checks import IntakeChecks, IntakePolicy
from bus.linking import links_of
from bus.model import DocumentEnvelope, StatusMessage
from bus.organ_id import OrganId
from bus.routing import Destination, DestinationKind, route
from bus.spooled import Received, write_envelope
from bus.topology import Topology
from bus.trace import append_trace
from bus.xmlparse import parse_received

__all__ = [
    "Accepted",
    "AuditPort",
    "BodyPolicy",
    "BodyStorePort",
    "Intake",
    "IntakePolicy",
    "NodeIdentity",
    "PublisherPort",
    "Received",
    "StorePort",
    "bus_id_for",
]

_BUS_NAMESPACE = uuid.UUID("6f1d5c2e-3b0a-4a59-9d1e-0c7e2b6a9f10")
_DEFAULT_POLICY = IntakePolicy()
# An envelope larger than this is parsed, checked, signed and written out in a worker thread.
_THREAD_OVER = 1024 * 1024
P = ParamSpec("P")
R = TypeVar("R")


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
        delivered_sha256: str | None = None,
    ) -> None: ...
    async def original(self, sender: str, document_id: str) -> tuple[str, list[str]] | None: ...


class AuditPort(Protocol):
    async def audit_note(self, entry: Entry) -> None:
        """Append *entry* to the audit log, durably, before returning."""


class BodyStorePort(Protocol):
    async def put_body(self, ref: BodyRef, source: IO[bytes], *, bus_id: str) -> None:
        """Keep the *ref.size* bytes of *source* (read from its start) under *ref.sha256*, for the
        document *bus_id*, durably, before returning; storing the same bytes again changes nothing."""


@dataclass(frozen=True, slots=True)
class BodyPolicy:
    """Which copies carry their envelope (inline) and which a reference to the body store: a copy goes
    by reference when the envelope is over *inline_max_bytes* or goes to more than
    *inline_max_recipients* recipients (docs/data-path.md says why small ones stay inline)."""

    inline_max_bytes: int = 64 * 1024
    inline_max_recipients: int = 4


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
    # What the acceptance receipt states (bus/receipts.py).
    accepted_at: dt.datetime | None = None
    received_sha256: str = ""
    delivered_sha256: str = ""
    recipients: tuple[str, ...] = ()


def bus_id_for(document: AcceptedDocument) -> str:
    return str(uuid.uuid5(_BUS_NAMESPACE, document.dedupe_key))


class Intake:
    """*bodies*: the body store; without one (tools, tests) every copy carries its envelope."""

    def __init__(
        self,
        topology: Topology,
        node: NodeIdentity,
        publisher: PublisherPort,
        store: StorePort,
        policy: IntakePolicy = _DEFAULT_POLICY,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        *,
        bodies: BodyStorePort | None = None,
        body_policy: BodyPolicy = BodyPolicy(),
        audit: AuditPort | None = None,
    ) -> None:
        self._topology = topology
        self._node = node
        self._publisher = publisher
        self._store = store
        self._clock = clock
        self._bodies = bodies
        self._body_policy = body_policy
        self._audit = audit
        self._limits = policy.limits
        self._checks = IntakeChecks(topology, node.organ_id, policy, clock)

    async def accept(self, body: bytes | Received, *, sender: OrganId) -> Accepted:
        """Accept *body* from the authenticated *sender*; returns once every delivery is durable."""
        received = body if isinstance(body, Received) else Received.of_bytes(body)
        async with self._refusals_recorded(received, str(sender)):
            tree, texts = await _cpu(received.size, parse_received, received, self._limits)
            with texts.active():
                parsed = await _cpu(received.size, self._checks.checked, tree, sender)
                return await self._accept(received, tree, parsed, sender, local_only=False)

    async def accept_from_axis(self, body: bytes | Received) -> Accepted:
        """Accept an envelope the national axis delivered for this province's agencies.

        Checked like any intake; its sender is outside the province (an envelope from the axis that
        claims a local agency as sender is forged), its signature must check against the CAs trusted
        for other provinces and ministries (when the policy requires it), and only the local
        recipients get a copy: the axis delivers the others itself."""
        received = body if isinstance(body, Received) else Received.of_bytes(body)
        async with self._refusals_recorded(received, None):
            tree, texts = await _cpu(received.size, parse_received, received, self._limits)
            with texts.active():
                parsed = await _cpu(received.size, self._checks.checked_from_axis, tree)
                sender = parsed.message.sender.organ_id
                return await self._accept(received, tree, parsed, sender, local_only=True)

    @asynccontextmanager
    async def _refusals_recorded(self, received: Received, sender: str | None) -> AsyncIterator[None]:
        """An envelope refused is an event that matters (issue 15): the audit log records who sent which
        bytes (their SHA-256) and why they were refused, before the refusal is answered."""
        try:
            yield
        except InputError as exc:
            if self._audit is not None:
                fields: dict[str, Any] = {
                    "sender": sender or "national-axis",
                    "received_sha256": received.sha256,
                    "size": received.size,
                    "error": type(exc).__name__,
                    "reason": str(exc)[:2000],
                }
                if isinstance(exc, DuplicateEnvelopeError):
                    fields["earlier_bus_id"] = exc.bus_id
                await self._audit.audit_note(Entry("envelope.refused", self._clock(), fields))
            raise

    async def _accept(
        self,
        received: Received,
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
            envelope_sha256=received.sha256,
            concerns=concerns,
        )
        bus_id = bus_id_for(draft)
        record = dataclasses.replace(draft, bus_id=bus_id)
        if isinstance(message, DocumentEnvelope) and not local_only:
            copies = len(message.recipients)
            self._checks.refuse_fan_out(copies, self._carried(received.size, copies))  # before any look-up
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
            self._checks.refuse_fan_out(len(destinations), self._carried(received.size, len(destinations)))
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
        with tempfile.SpooledTemporaryFile(max_size=self._body_policy.inline_max_bytes) as sealed:
            ref = await _cpu(received.size, self._seal, tree, now, sealed)
            out, body = await self._claim_check(ref, sealed, bus_id, len(destinations))
        await asyncio.gather(
            *(
                self._publisher.deliver(
                    destination.routing_key,
                    out,
                    message_id=f"{bus_id}|{recipient}",
                    headers=BusHeaders(
                        bus_id, str(sender), recipient, parsed.kind.value, document_id, body=body
                    ),
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
            record,
            recipients,
            [*links.links, *outbound],
            business_status=links.business_status,
            delivered_sha256=ref.sha256,
        )
        return Accepted(
            bus_id,
            document_id,
            destinations,
            parsed.kind.value,
            str(sender),
            accepted_at=now,
            received_sha256=received.sha256,
            delivered_sha256=ref.sha256,
            recipients=tuple(recipients),
        )

    def _seal(self, tree: etree._ElementTree, now: dt.datetime, out: IO[bytes]) -> BodyRef:
        """This node's trace header and signature, and the envelope written to *out* (rewound)."""
        append_trace(tree, str(self._node.organ_id), now)
        sign_tree(tree, self._node.key, self._node.certificate)
        written = write_envelope(tree, out)
        out.seek(0)
        return BodyRef(written.sha256, written.size)

    def _carried(self, size: int, copies: int) -> int:
        """The bytes each copy carries through RabbitMQ: the envelope when it travels inline, next to
        nothing when the copies carry a reference to the body store (the fan-out cap counts these)."""
        return size if self._inline(size, copies) else 0

    def _inline(self, size: int, copies: int) -> bool:
        policy = self._body_policy
        return self._bodies is None or (
            size <= policy.inline_max_bytes and copies <= policy.inline_max_recipients
        )

    async def _claim_check(
        self, ref: BodyRef, sealed: IO[bytes], bus_id: str, copies: int
    ) -> tuple[bytes, BodyRef | None]:
        """What each copy carries: the envelope, or (stored once, before anything is published, so that
        no reference ever names a body the store lacks) an empty body and its reference."""
        if self._bodies is None or self._inline(ref.size, copies):
            return sealed.read(), None
        await self._bodies.put_body(ref, sealed, bus_id=bus_id)
        return b"", ref


async def _cpu(size: int, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """*work* here for a small envelope, in a worker thread (with this context) for a large one."""
    if size <= _THREAD_OVER:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


def _one_per_agency(destinations: Iterable[Destination]) -> tuple[Destination, ...]:
    """One delivery per receiving agency: ``To`` naming an agency by its current and its former code
    would otherwise put the document in its inbox twice (two message ids)."""
    kept: dict[str, Destination] = {}
    for destination in destinations:
        key = str(destination.agency.organ_id) if destination.agency else str(destination.addressed_to)
        kept.setdefault(key, destination)
    return tuple(kept.values())
