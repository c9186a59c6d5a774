"""Documents, their deliveries and their timelines: accepting an envelope (begin, confirm), the
events that move each recipient's delivery forward, and what the API and the CLI read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.audit import entry_fields
from adapters.store.base import utc
from adapters.store.group_commit import BatchCommit
from adapters.store.tables import deliveries, documents, events
from adapters.store.timelines import TimelineWriter
from bus.audit import Entry
from bus.delivery import AcceptedDocument, DeliveryRow, DeliveryState, TimelineEvent

__all__ = ["Documents"]

Begin = tuple[
    AcceptedDocument, Sequence[tuple[str, str]], str | None
]  # document, (recipient, route)s, related
Confirm = tuple[
    AcceptedDocument,
    Sequence[str],
    Sequence[tuple[TimelineEvent, str]],
    tuple[str, Sequence[str], str] | None,
    str | None,  # the SHA-256 of the envelope as sealed and delivered
]

# PostgreSQL: a batch of intakes is a few statements of fixed text, whatever its size (as the events in
# adapters/store/timelines.py). Documents already there (a retry, a duplicate) are not returned.
_PG_INSERT_DOCUMENTS = text(
    "INSERT INTO documents (bus_id, kind, sender, document_id, business_type, code, subject, accepted_at, "
    "envelope_sha256, dedupe_key, confirmed, related_bus_id) "
    "SELECT b, k, s, d, t, c, j, a, h, q, false, r FROM unnest(CAST(:bus AS varchar[]), "
    "CAST(:kind AS varchar[]), CAST(:sender AS varchar[]), CAST(:document AS varchar[]), "
    "CAST(:type AS integer[]), CAST(:code AS varchar[]), CAST(:subject AS text[]), "
    "CAST(:at AS timestamptz[]), CAST(:sha AS varchar[]), CAST(:key AS varchar[]), "
    "CAST(:related AS varchar[])) AS v(b, k, s, d, t, c, j, a, h, q, r) "
    "ON CONFLICT DO NOTHING RETURNING bus_id"
)
_PG_INSERT_DELIVERIES = text(
    "INSERT INTO deliveries (bus_id, recipient, route, state, updated_at) "
    "SELECT * FROM unnest(CAST(:bus AS varchar[]), CAST(:recipient AS varchar[]), "
    "CAST(:route AS varchar[]), CAST(:state AS varchar[]), CAST(:at AS timestamptz[])) "
    "ON CONFLICT DO NOTHING"
)
_PG_CONFIRM = text(
    "UPDATE documents SET confirmed = true WHERE bus_id = ANY(CAST(:bus AS varchar[])) AND NOT confirmed "
    "RETURNING bus_id"
)


def _document(row: Any) -> AcceptedDocument:
    return AcceptedDocument(
        bus_id=row.bus_id,
        kind=row.kind,
        sender=row.sender,
        document_id=row.document_id,
        business_type=row.business_type,
        code=row.code,
        subject=row.subject,
        accepted_at=utc(row.accepted_at),
        envelope_sha256=row.envelope_sha256,
    )


def _accepted_entry(
    document: AcceptedDocument,
    recipients: Sequence[str],
    business_status: tuple[str, Sequence[str], str] | None,
    delivered_sha256: str | None,
) -> Entry:
    """The audit record of an acceptance: what was received (its SHA-256), sealed and delivered, to whom."""
    return Entry(
        "envelope.accepted",
        document.accepted_at,
        entry_fields(
            bus_id=document.bus_id,
            type=document.kind,
            sender=document.sender,
            document_id=document.document_id,
            business_type=document.business_type,
            code=document.code,
            received_sha256=document.envelope_sha256,
            delivered_sha256=delivered_sha256,
            recipients=sorted(recipients),
            concerns=None if business_status is None else business_status[0],
        ),
    )


def _received_entry(document: AcceptedDocument, recipients: Sequence[tuple[str, str]]) -> Entry:
    """The audit record of an intake's first write: the document and its deliveries exist (unconfirmed)
    from here, whether or not the broker's confirms follow (then ``envelope.accepted``)."""
    return Entry(
        "envelope.received",
        document.accepted_at,
        entry_fields(
            bus_id=document.bus_id,
            sender=document.sender,
            document_id=document.document_id,
            received_sha256=document.envelope_sha256,
            recipients=sorted(recipient for recipient, _ in recipients),
        ),
    )


def _accepted(document: AcceptedDocument, recipients: Sequence[str]) -> list[tuple[TimelineEvent, str]]:
    return [
        (
            TimelineEvent(document.bus_id, recipient, DeliveryState.ACCEPTED, document.accepted_at),
            f"{document.bus_id}|{recipient}|accepted",
        )
        for recipient in recipients
    ]


class Documents(TimelineWriter):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        ins = self._insert_ignoring_duplicates
        self._ins_documents, self._ins_deliveries = ins(documents), ins(deliveries)
        self._q_dedupe = select(documents.c.bus_id, documents.c.confirmed, documents.c.envelope_sha256).where(
            documents.c.dedupe_key == bindparam("p_key")
        )
        self._q_confirm = (
            update(documents)
            .where(documents.c.bus_id == bindparam("p_bus"), documents.c.confirmed.is_(False))
            .values(confirmed=True)
        )
        self._q_dedupe_many = select(
            documents.c.bus_id, documents.c.confirmed, documents.c.envelope_sha256, documents.c.dedupe_key
        ).where(documents.c.dedupe_key.in_(bindparam("p_keys", expanding=True)))
        # Concurrent intakes share transactions and statements (adapters/store/group_commit.py).
        self._begins: BatchCommit[Begin, str | None] = BatchCommit(self._lane, self._begin_many)
        self._confirms: BatchCommit[Confirm, None] = BatchCommit(self._lane, self._confirm_many)

    async def begin_accept(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]], *, related: str | None = None
    ) -> str | None:
        """First write of an intake, before anything is published.

        Stores the document, unconfirmed, with one delivery per ``(recipient, route)``. Returns None when
        the intake should go on (a new document, or an earlier attempt with the same bytes that never
        got its confirms: the bus id is deterministic, so it is the same document), or the bus id of the
        earlier document with the same (sender, DocumentId, business type) when it is confirmed or had
        other bytes: the caller refuses the envelope (duplicate or conflicting retry).
        """

        return await self._begins.run((document, recipients, related))

    async def _begin_many(self, conn: AsyncConnection, batch: list[Begin]) -> list[str | None]:
        if not self._set_based:
            return [await self._begin_accept(conn, d, r, related) for d, r, related in batch]
        found = await conn.execute(
            _PG_INSERT_DOCUMENTS,
            {
                "bus": [d.bus_id for d, _, _ in batch],
                "kind": [d.kind for d, _, _ in batch],
                "sender": [d.sender for d, _, _ in batch],
                "document": [d.document_id for d, _, _ in batch],
                "type": [d.business_type for d, _, _ in batch],
                "code": [d.code for d, _, _ in batch],
                "subject": [d.subject for d, _, _ in batch],
                "at": [d.accepted_at for d, _, _ in batch],
                "sha": [d.envelope_sha256 for d, _, _ in batch],
                "key": [d.dedupe_key for d, _, _ in batch],
                "related": [related for _, _, related in batch],
            },
        )
        inserted = {bus_id for (bus_id,) in found}
        # Not inserted: an earlier attempt of the same document, or an earlier document (or one of
        # this batch, sent twice at once): which one?
        earlier = {}
        missing = [d.dedupe_key for d, _, _ in batch if d.bus_id not in inserted]
        if missing:
            earlier = {r.dedupe_key: r for r in await conn.execute(self._q_dedupe_many, {"p_keys": missing})}
        results: list[str | None] = []
        received: list[Entry] = []
        rows: list[tuple[str, str, str, dt.datetime]] = []
        for document, recipients, _ in batch:
            bus_id = document.bus_id
            if bus_id not in inserted:  # (the same bytes twice in the batch: both go on, as in turn)
                row = earlier[document.dedupe_key]
                # Confirmed: a duplicate. Unconfirmed but other bytes: an attempt that may have reached
                # some recipients with different content; retrying must resend the same.
                if row.confirmed or row.envelope_sha256 != document.envelope_sha256:
                    results.append(str(row.bus_id))
                    continue
                bus_id = row.bus_id
            rows += [(bus_id, recipient, route, document.accepted_at) for recipient, route in recipients]
            if document.bus_id in inserted:
                received.append(_received_entry(document, recipients))
            results.append(None)
        if rows:
            await conn.execute(
                _PG_INSERT_DELIVERIES,
                {
                    "bus": [b for b, _, _, _ in rows],
                    "recipient": [r for _, r, _, _ in rows],
                    "route": [route for _, _, route, _ in rows],
                    "state": [DeliveryState.ACCEPTED.value] * len(rows),
                    "at": [at for _, _, _, at in rows],
                },
            )
        self._audit(conn, received)
        return results

    async def _begin_accept(
        self,
        conn: AsyncConnection,
        document: AcceptedDocument,
        recipients: Sequence[tuple[str, str]],
        related: str | None,
        *,
        received: bool = True,
    ) -> str | None:
        inserted = await conn.execute(
            self._ins_documents,
            {
                "bus_id": document.bus_id,
                "kind": document.kind,
                "sender": document.sender,
                "document_id": document.document_id,
                "business_type": document.business_type,
                "code": document.code,
                "subject": document.subject,
                "accepted_at": document.accepted_at,
                "envelope_sha256": document.envelope_sha256,
                "dedupe_key": document.dedupe_key,
                "confirmed": False,
                "related_bus_id": related,
            },
        )
        bus_id = document.bus_id
        if inserted.rowcount and received:
            self._audit(conn, [_received_entry(document, recipients)])
        else:  # an earlier attempt or an earlier document: which one?
            row = (await conn.execute(self._q_dedupe, {"p_key": document.dedupe_key})).one()
            if row.confirmed or row.envelope_sha256 != document.envelope_sha256:
                # Confirmed: a duplicate. Unconfirmed but other bytes: an attempt that may have
                # reached some recipients with different content; retrying must resend the same.
                return str(row.bus_id)
            bus_id = row.bus_id
        if recipients:
            await conn.execute(
                self._ins_deliveries,
                [
                    {
                        "bus_id": bus_id,
                        "recipient": recipient,
                        "route": route,
                        "state": DeliveryState.ACCEPTED.value,
                        "updated_at": document.accepted_at,
                    }
                    for recipient, route in recipients
                ],
            )
        return None

    async def confirm_accept(
        self,
        document: AcceptedDocument,
        recipients: Sequence[str],
        links: Sequence[tuple[TimelineEvent, str]] = (),
        *,
        business_status: tuple[str, Sequence[str], str] | None = None,
        delivered_sha256: str | None = None,
    ) -> None:
        """The broker confirmed every delivery: the document is accepted (idempotent), and the audit log
        records it once (with *delivered_sha256*, the digest of the envelope as sealed).

        *links* are ``(event, key)`` pairs written on the timelines of related documents (a status
        that came back, a revocation); *business_status* is ``(related bus id, recipient codes,
        code)``: the recipient's delivery of the related document shows the code.
        """

        await self._confirms.run((document, recipients, links, business_status, delivered_sha256))

    async def _confirm_many(self, conn: AsyncConnection, batch: list[Confirm]) -> list[None]:
        if not self._set_based:
            for document, recipients, links, business_status, delivered in batch:
                await self._confirm_accept(conn, document, recipients, links, business_status, delivered)
            return [None] * len(batch)
        confirmed = {
            bus_id
            for (bus_id,) in await conn.execute(
                _PG_CONFIRM, {"bus": [document.bus_id for document, *_ in batch]}
            )
        }
        accepted = []
        for document, recipients, _, business_status, delivered in batch:
            if document.bus_id in confirmed:  # confirmed now, not before: recorded once
                confirmed.discard(document.bus_id)
                accepted.append(_accepted_entry(document, recipients, business_status, delivered))
        self._audit(conn, accepted)
        await self._events(
            conn,
            [
                keyed
                for document, recipients, links, _, _ in batch
                for keyed in (*_accepted(document, recipients), *links)
            ],
        )
        for document, _, _, business_status, _ in batch:
            if business_status is not None:
                await self._business_status(conn, document, business_status)
        return [None] * len(batch)

    async def _confirm_accept(
        self,
        conn: AsyncConnection,
        document: AcceptedDocument,
        recipients: Sequence[str],
        links: Sequence[tuple[TimelineEvent, str]],
        business_status: tuple[str, Sequence[str], str] | None,
        delivered_sha256: str | None,
    ) -> None:
        confirmed = await conn.execute(self._q_confirm, {"p_bus": document.bus_id})
        if confirmed.rowcount:
            self._audit(conn, [_accepted_entry(document, recipients, business_status, delivered_sha256)])
        await self._events(conn, [*_accepted(document, recipients), *links])
        if business_status is not None:
            await self._business_status(conn, document, business_status)

    async def _business_status(
        self,
        conn: AsyncConnection,
        document: AcceptedDocument,
        business_status: tuple[str, Sequence[str], str],
    ) -> None:
        related, codes, code = business_status
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.bus_id == related, deliveries.c.recipient.in_(list(codes)))
            .values(business_status=code, updated_at=document.accepted_at)
        )

    async def record_accepted(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]]
    ) -> bool:
        """Begin and confirm at once, in one transaction (tools and tests: nothing is published in
        between, so the acceptance is the one audit record); False, writing nothing, for a duplicate."""
        async with self._begin() as conn:
            if await self._begin_accept(conn, document, recipients, None, received=False) is not None:
                return False
            await self._confirm_accept(conn, document, [r for r, _ in recipients], (), None, None)
        return True

    async def original(self, sender: str, document_id: str) -> tuple[str, list[str]] | None:
        """The newest confirmed *document* (not status) from *sender* with *document_id*, and its
        recipients: what a status message, revocation or take-back concerns."""
        async with self._connect() as conn:
            bus_id = (
                await conn.execute(
                    select(documents.c.bus_id)
                    .where(
                        documents.c.sender == sender,
                        documents.c.document_id == document_id,
                        documents.c.kind == "document",
                        documents.c.confirmed.is_(True),
                    )
                    .order_by(documents.c.business_type, documents.c.accepted_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if bus_id is None:
                return None
            recipients = await conn.execute(
                select(deliveries.c.recipient)
                .where(deliveries.c.bus_id == bus_id)
                .order_by(deliveries.c.recipient)
            )
            return bus_id, [r for (r,) in recipients]

    async def document(self, bus_id: str) -> AcceptedDocument | None:
        async with self._connect() as conn:
            row = (await conn.execute(select(documents).where(documents.c.bus_id == bus_id))).first()
        return None if row is None else _document(row)

    async def find(self, document_id: str) -> list[AcceptedDocument]:
        """Documents whose edXML DocumentId (or bus id) is *document_id*, newest first."""
        async with self._connect() as conn:
            rows = await conn.execute(
                select(documents)
                .where((documents.c.document_id == document_id) | (documents.c.bus_id == document_id))
                .order_by(documents.c.accepted_at.desc())
            )
            return [_document(row) for row in rows]

    async def deliveries(self, bus_id: str) -> list[DeliveryRow]:
        async with self._connect() as conn:
            rows = await conn.execute(
                select(deliveries).where(deliveries.c.bus_id == bus_id).order_by(deliveries.c.recipient)
            )
            return [
                DeliveryRow(
                    r.recipient, r.route, DeliveryState(r.state), utc(r.updated_at), r.business_status
                )
                for r in rows
            ]

    async def timeline(self, bus_id: str) -> list[TimelineEvent]:
        async with self._connect() as conn:
            rows = await conn.execute(
                select(events).where(events.c.bus_id == bus_id).order_by(events.c.at, events.c.id)
            )
            return [
                TimelineEvent(r.bus_id, r.recipient, DeliveryState(r.state), utc(r.at), r.detail)
                for r in rows
            ]

    async def sent(
        self, sender: str, *, before: dt.datetime | None = None, limit: int = 50
    ) -> list[tuple[AcceptedDocument, list[DeliveryRow]]]:
        """What *sender* sent, newest first, each with its per-recipient state."""
        query = select(documents).where(documents.c.sender == sender, documents.c.confirmed.is_(True))
        if before is not None:
            query = query.where(documents.c.accepted_at < before)
        async with self._connect() as conn:
            docs = [
                _document(r)
                for r in await conn.execute(query.order_by(documents.c.accepted_at.desc()).limit(limit))
            ]
        return [(doc, await self.deliveries(doc.bus_id)) for doc in docs]

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries (one per document and recipient) by current state (``bus_deliveries``)."""
        async with self._connect() as conn:
            by_state = await conn.execute(
                select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
            )
            return {str(state): int(count) for state, count in by_state}
