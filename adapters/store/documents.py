"""Documents, their deliveries and their timelines: accepting an envelope (begin, confirm), the
events that move each recipient's delivery forward, and what the API and the CLI read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.base import utc
from adapters.store.group_commit import GroupCommit
from adapters.store.tables import deliveries, documents, events
from adapters.store.timelines import TimelineWriter
from bus.delivery import AcceptedDocument, DeliveryRow, DeliveryState, TimelineEvent

__all__ = ["Documents"]


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


class Documents(TimelineWriter):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        ins = self._insert_ignoring_duplicates
        self._ins_documents, self._ins_deliveries = ins(documents), ins(deliveries)
        self._q_dedupe = select(documents.c.bus_id, documents.c.confirmed, documents.c.envelope_sha256).where(
            documents.c.dedupe_key == bindparam("p_key")
        )
        self._q_confirm = (
            update(documents).where(documents.c.bus_id == bindparam("p_bus")).values(confirmed=True)
        )
        # Concurrent intakes share transactions (adapters/store/group_commit.py).
        self._intakes = GroupCommit(self._begin)

    async def close(self) -> None:
        await self._intakes.idle()  # a shared transaction under way finishes before the engine goes
        await super().close()

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

        async def write(conn: AsyncConnection) -> str | None:
            return await self._begin_accept(conn, document, recipients, related)

        return await self._intakes.run(write)

    async def _begin_accept(
        self,
        conn: AsyncConnection,
        document: AcceptedDocument,
        recipients: Sequence[tuple[str, str]],
        related: str | None,
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
        if not inserted.rowcount:  # an earlier attempt or an earlier document: which one?
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
    ) -> None:
        """The broker confirmed every delivery: the document is accepted (idempotent).

        *links* are ``(event, key)`` pairs written on the timelines of related documents (a status
        that came back, a revocation); *business_status* is ``(related bus id, recipient codes,
        code)``: the recipient's delivery of the related document shows the code.
        """

        async def write(conn: AsyncConnection) -> None:
            await self._confirm_accept(conn, document, recipients, links, business_status)

        await self._intakes.run(write)

    async def _confirm_accept(
        self,
        conn: AsyncConnection,
        document: AcceptedDocument,
        recipients: Sequence[str],
        links: Sequence[tuple[TimelineEvent, str]],
        business_status: tuple[str, Sequence[str], str] | None,
    ) -> None:
        await conn.execute(self._q_confirm, {"p_bus": document.bus_id})
        accepted = [
            (
                TimelineEvent(document.bus_id, recipient, DeliveryState.ACCEPTED, document.accepted_at),
                f"{document.bus_id}|{recipient}|accepted",
            )
            for recipient in recipients
        ]
        await self._events(conn, [*accepted, *links])
        if business_status is not None:
            related, codes, code = business_status
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.bus_id == related, deliveries.c.recipient.in_(list(codes)))
                .values(business_status=code, updated_at=document.accepted_at)
            )

    async def record_accepted(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]]
    ) -> bool:
        """Begin and confirm at once (for tests and relays); False, writing nothing, for a duplicate."""
        if await self.begin_accept(document, recipients) is not None:
            return False
        await self.confirm_accept(document, [recipient for recipient, _ in recipients])
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

    async def record(self, event: TimelineEvent, *, key: str) -> bool:
        """Add *event* (idempotent by *key*) and move the delivery to its state; False if already there."""
        async with self._begin() as conn:
            added = await self._event(conn, event, key=key)
            if added and event.recipient is not None:
                await self._advance(conn, event)
            return added

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
