"""Reading and writing document timelines. Every write is idempotent, so that the order "write the
status, then acknowledge the message" survives a crash between the two without loss or duplicates."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.store.tables import deliveries, documents, events, inbox, metadata, nonces
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.errors import ConfigError

__all__ = ["DeliveryRow", "InboxItem", "StatusStore"]

# A delivery only moves forward: a late or redelivered event never takes it back (queued after
# fetched, say). States of equal rank replace each other (processing -> done).
_RANK = {
    DeliveryState.ACCEPTED: 0,
    DeliveryState.RETRYING: 1,
    DeliveryState.QUEUED: 2,
    DeliveryState.SENT_TO_AXIS: 2,
    DeliveryState.FETCHED: 3,
    DeliveryState.STATUS: 3,
    DeliveryState.PROCESSING: 4,
    DeliveryState.DONE: 5,
    DeliveryState.FAIL: 5,
    DeliveryState.FAILED: 5,
    DeliveryState.DEAD_LETTERED: 5,
    DeliveryState.RELATED: 0,
}


def _not_after(state: DeliveryState) -> list[str]:
    return [s.value for s, rank in _RANK.items() if rank <= _RANK[state]]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    recipient: str
    route: str
    state: DeliveryState
    updated_at: dt.datetime
    business_status: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One envelope in an agency's inbox; ``body`` only when fetched."""

    id: int
    message_id: str
    agency: str
    addressed_to: str
    bus_id: str
    sender: str
    kind: str
    document_id: str
    received_at: dt.datetime
    fetched_at: dt.datetime | None = None
    ack_state: str | None = None
    acked_at: dt.datetime | None = None
    body: bytes | None = None


def _inbox_item(row: Any, *, body: bool = False) -> InboxItem:
    return InboxItem(
        id=row.id,
        message_id=row.message_id,
        agency=row.agency,
        addressed_to=row.addressed_to,
        bus_id=row.bus_id,
        sender=row.sender,
        kind=row.kind,
        document_id=row.document_id,
        received_at=_utc(row.received_at),
        fetched_at=_utc(row.fetched_at) if row.fetched_at else None,
        ack_state=row.ack_state,
        acked_at=_utc(row.acked_at) if row.acked_at else None,
        body=bytes(row.body) if body else None,
    )


_INBOX_LIST = [c for c in inbox.c if c.name != "body"]


def _document(row: Any) -> AcceptedDocument:
    return AcceptedDocument(
        bus_id=row.bus_id,
        kind=row.kind,
        sender=row.sender,
        document_id=row.document_id,
        business_type=row.business_type,
        code=row.code,
        subject=row.subject,
        accepted_at=_utc(row.accepted_at),
        envelope_sha256=row.envelope_sha256,
    )


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything the store writes is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class StatusStore:
    """Timelines per document and recipient. ``url`` is a SQLAlchemy async URL:
    ``sqlite+aiosqlite:///path/bus.db`` (default) or ``postgresql+asyncpg://user@host/db``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    def connect(cls, url: str, **engine_options: Any) -> StatusStore:
        return cls(create_async_engine(url, **engine_options))

    async def create_schema(self) -> None:
        """Create missing tables (idempotent, and safe when several processes start at once)."""
        async with self._engine.begin() as conn:
            if self._engine.dialect.name == "postgresql":
                # CREATE TABLE IF NOT EXISTS races between processes on PostgreSQL; serialise them.
                await conn.execute(text("SELECT pg_advisory_xact_lock(4242017)"))
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self._engine.dispose()

    def _insert_ignoring_duplicates(self, table: Any) -> Insert:
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise ConfigError(f"the status store supports SQLite and PostgreSQL, not {dialect}")

    async def begin_accept(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]], *, related: str | None = None
    ) -> str | None:
        """First write of an intake, before anything is published.

        Stores the document, unconfirmed, with one delivery per ``(recipient, route)``. Returns None when
        the intake should go on (a new document, or an earlier attempt that never got its confirms: the
        bus id is deterministic, so it is the same document), or the bus id of the already *confirmed*
        document with the same (sender, DocumentId, business type): the caller answers "duplicate".
        """
        async with self._engine.begin() as conn:
            await conn.execute(
                self._insert_ignoring_duplicates(documents).values(
                    bus_id=document.bus_id,
                    kind=document.kind,
                    sender=document.sender,
                    document_id=document.document_id,
                    business_type=document.business_type,
                    code=document.code,
                    subject=document.subject,
                    accepted_at=document.accepted_at,
                    envelope_sha256=document.envelope_sha256,
                    dedupe_key=document.dedupe_key,
                    confirmed=False,
                    related_bus_id=related,
                )
            )
            row = (
                await conn.execute(
                    select(documents.c.bus_id, documents.c.confirmed).where(
                        documents.c.dedupe_key == document.dedupe_key
                    )
                )
            ).one()
            if row.confirmed:
                return str(row.bus_id)
            for recipient, route in recipients:
                await conn.execute(
                    self._insert_ignoring_duplicates(deliveries).values(
                        bus_id=row.bus_id,
                        recipient=recipient,
                        route=route,
                        state=DeliveryState.ACCEPTED.value,
                        updated_at=document.accepted_at,
                    )
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
        async with self._engine.begin() as conn:
            await conn.execute(
                update(documents).where(documents.c.bus_id == document.bus_id).values(confirmed=True)
            )
            for recipient in recipients:
                await self._event(
                    conn,
                    TimelineEvent(document.bus_id, recipient, DeliveryState.ACCEPTED, document.accepted_at),
                    key=f"{document.bus_id}|{recipient}|accepted",
                )
            for event, key in links:
                if await self._event(conn, event, key=key) and event.recipient is not None:
                    await self._advance(conn, event)
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

    async def find_duplicate(self, document: AcceptedDocument) -> str | None:
        """The bus id of the confirmed document with this (sender, DocumentId, business type), if any."""
        async with self._engine.connect() as conn:
            row = await conn.execute(
                select(documents.c.bus_id).where(
                    documents.c.dedupe_key == document.dedupe_key, documents.c.confirmed.is_(True)
                )
            )
            return row.scalar_one_or_none()

    async def original(self, sender: str, document_id: str) -> tuple[str, list[str]] | None:
        """The newest confirmed *document* (not status) from *sender* with *document_id*, and its
        recipients: what a status message, revocation or take-back concerns."""
        async with self._engine.connect() as conn:
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
        async with self._engine.begin() as conn:
            added = await self._event(conn, event, key=key)
            if added and event.recipient is not None:
                await self._advance(conn, event)
            return added

    async def _advance(self, conn: AsyncConnection, event: TimelineEvent) -> None:
        await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.bus_id == event.bus_id,
                deliveries.c.recipient == event.recipient,
                deliveries.c.state.in_(_not_after(event.state)),
            )
            .values(state=event.state.value, updated_at=event.at)
        )

    async def _event(self, conn: AsyncConnection, event: TimelineEvent, *, key: str) -> bool:
        result = await conn.execute(
            self._insert_ignoring_duplicates(events).values(
                bus_id=event.bus_id,
                recipient=event.recipient,
                state=event.state.value,
                at=event.at,
                detail=event.detail,
                event_key=key,
            )
        )
        return bool(result.rowcount)

    async def document(self, bus_id: str) -> AcceptedDocument | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(documents).where(documents.c.bus_id == bus_id))).first()
        return None if row is None else _document(row)

    async def find(self, document_id: str) -> list[AcceptedDocument]:
        """Documents whose edXML DocumentId (or bus id) is *document_id*, newest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(documents)
                .where((documents.c.document_id == document_id) | (documents.c.bus_id == document_id))
                .order_by(documents.c.accepted_at.desc())
            )
            return [_document(row) for row in rows]

    async def deliveries(self, bus_id: str) -> list[DeliveryRow]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(deliveries).where(deliveries.c.bus_id == bus_id).order_by(deliveries.c.recipient)
            )
            return [
                DeliveryRow(
                    r.recipient, r.route, DeliveryState(r.state), _utc(r.updated_at), r.business_status
                )
                for r in rows
            ]

    async def timeline(self, bus_id: str) -> list[TimelineEvent]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(events).where(events.c.bus_id == bus_id).order_by(events.c.at, events.c.id)
            )
            return [
                TimelineEvent(r.bus_id, r.recipient, DeliveryState(r.state), _utc(r.at), r.detail)
                for r in rows
            ]

    # -- inboxes -------------------------------------------------------------------------------------

    async def store_inbox(self, item: InboxItem) -> bool:
        """Keep an envelope delivered to an agency, with its ``queued`` event, in one transaction.

        The inbox worker calls this *before* acknowledging the message; a redelivery after a crash
        writes nothing new (``message_id`` is unique). Returns False for such a repeat.
        """
        assert item.body is not None  # noqa: S101 - a programming error, not input
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
                self._insert_ignoring_duplicates(inbox).values(
                    message_id=item.message_id,
                    agency=item.agency,
                    addressed_to=item.addressed_to,
                    bus_id=item.bus_id,
                    sender=item.sender,
                    kind=item.kind,
                    document_id=item.document_id,
                    body=item.body,
                    received_at=item.received_at,
                )
            )
            if not inserted.rowcount:
                return False
            known = await conn.execute(select(documents.c.bus_id).where(documents.c.bus_id == item.bus_id))
            if known.first() is None:
                # A message whose document this store never recorded (a database restored from an
                # older backup, say): the recipient still gets it; there is no timeline to write on.
                return True
            event = TimelineEvent(item.bus_id, item.addressed_to, DeliveryState.QUEUED, item.received_at)
            if await self._event(conn, event, key=f"{item.message_id}|queued"):
                await self._advance(conn, event)
        return True

    async def inbox(
        self, agency: str, *, pending_only: bool = False, after: int = 0, limit: int = 100
    ) -> list[InboxItem]:
        """An agency's envelopes, oldest first, after id *after*; *pending_only*: not yet acknowledged
        as done or fail."""
        query = select(*_INBOX_LIST).where(inbox.c.agency == agency, inbox.c.id > after)
        if pending_only:
            query = query.where(
                inbox.c.ack_state.is_(None) | (inbox.c.ack_state == DeliveryState.PROCESSING.value)
            )
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(inbox.c.id).limit(limit))
            return [_inbox_item(r) for r in rows]

    async def fetch(self, agency: str, item_id: int, at: dt.datetime) -> InboxItem | None:
        """One envelope of *agency*'s inbox with its body; the first fetch is a ``fetched`` event."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(select(inbox).where(inbox.c.agency == agency, inbox.c.id == item_id))
            ).first()
            if row is None:
                return None
            if row.fetched_at is None:
                await conn.execute(update(inbox).where(inbox.c.id == item_id).values(fetched_at=at))
                event = TimelineEvent(row.bus_id, row.addressed_to, DeliveryState.FETCHED, at)
                if await self._event(conn, event, key=f"{row.message_id}|fetched"):
                    await self._advance(conn, event)
                row = (await conn.execute(select(inbox).where(inbox.c.id == item_id))).one()
            return _inbox_item(row, body=True)

    async def acknowledge(
        self, agency: str, item_id: int, state: DeliveryState, at: dt.datetime, reason: str | None = None
    ) -> InboxItem | None:
        """The recipient's transport acknowledgement (processing, done or fail, with a reason)."""
        if state not in (DeliveryState.PROCESSING, DeliveryState.DONE, DeliveryState.FAIL):
            raise ValueError(f"not an acknowledgement: {state}")
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(*_INBOX_LIST).where(inbox.c.agency == agency, inbox.c.id == item_id)
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                update(inbox).where(inbox.c.id == item_id).values(ack_state=state.value, acked_at=at)
            )
            event = TimelineEvent(row.bus_id, row.addressed_to, state, at, reason)
            if await self._event(conn, event, key=f"{row.message_id}|ack|{state.value}"):
                await self._advance(conn, event)
            row = (await conn.execute(select(*_INBOX_LIST).where(inbox.c.id == item_id))).one()
            return _inbox_item(row)

    async def sent(
        self, sender: str, *, before: dt.datetime | None = None, limit: int = 50
    ) -> list[tuple[AcceptedDocument, list[DeliveryRow]]]:
        """What *sender* sent, newest first, each with its per-recipient state."""
        query = select(documents).where(documents.c.sender == sender, documents.c.confirmed.is_(True))
        if before is not None:
            query = query.where(documents.c.accepted_at < before)
        async with self._engine.connect() as conn:
            docs = [
                _document(r)
                for r in await conn.execute(query.order_by(documents.c.accepted_at.desc()).limit(limit))
            ]
        return [(doc, await self.deliveries(doc.bus_id)) for doc in docs]

    async def inbox_counts(self) -> dict[str, int]:
        """Envelopes per agency not yet acknowledged done or fail (operators' inbox depth)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(inbox.c.agency, func.count())
                .where(inbox.c.ack_state.is_(None) | (inbox.c.ack_state == DeliveryState.PROCESSING.value))
                .group_by(inbox.c.agency)
            )
            return {agency: count for agency, count in rows}

    # -- request nonces ------------------------------------------------------------------------------

    async def remember_nonce(self, agency: str, nonce: str, at: dt.datetime, *, keep: dt.timedelta) -> bool:
        """True the first time *agency* uses *nonce*; False for a replay. Forgets nonces older than
        *keep* (their timestamps are outside the window, so the signature check refuses them anyway)."""
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
                self._insert_ignoring_duplicates(nonces).values(agency=agency, nonce=nonce, seen_at=at)
            )
            if inserted.rowcount and secrets.randbelow(100) == 0:
                await conn.execute(delete(nonces).where(nonces.c.seen_at < at - keep))
            return bool(inserted.rowcount)
