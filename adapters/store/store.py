"""Reading and writing document timelines. Every write is idempotent, so that the order "write the
status, then acknowledge the message" survives a crash between the two without loss or duplicates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.store.tables import deliveries, documents, events, metadata
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.errors import ConfigError

__all__ = ["DeliveryRow", "StatusStore"]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    recipient: str
    route: str
    state: DeliveryState
    updated_at: dt.datetime


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
        """Create missing tables (idempotent)."""
        async with self._engine.begin() as conn:
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

    async def record_accepted(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]]
    ) -> bool:
        """Store a newly accepted document and one delivery per ``(recipient, route)``.

        Returns False, writing nothing, when the same (sender, DocumentId, business type) is already
        stored: the caller answers "duplicate".
        """
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
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
                )
            )
            if inserted.rowcount == 0:
                return False
            for recipient, route in recipients:
                await conn.execute(
                    deliveries.insert().values(
                        bus_id=document.bus_id,
                        recipient=recipient,
                        route=route,
                        state=DeliveryState.ACCEPTED.value,
                        updated_at=document.accepted_at,
                    )
                )
                await self._event(
                    conn,
                    TimelineEvent(document.bus_id, recipient, DeliveryState.ACCEPTED, document.accepted_at),
                    key=f"{document.bus_id}|{recipient}|accepted",
                )
        return True

    async def find_duplicate(self, document: AcceptedDocument) -> str | None:
        """The bus id already stored for this (sender, DocumentId, business type), if any."""
        async with self._engine.connect() as conn:
            row = await conn.execute(
                select(documents.c.bus_id).where(documents.c.dedupe_key == document.dedupe_key)
            )
            return row.scalar_one_or_none()

    async def record(self, event: TimelineEvent, *, key: str) -> bool:
        """Add *event* (idempotent by *key*) and move the delivery to its state; False if already there."""
        async with self._engine.begin() as conn:
            added = await self._event(conn, event, key=key)
            if added and event.recipient is not None:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.bus_id == event.bus_id, deliveries.c.recipient == event.recipient)
                    .values(state=event.state.value, updated_at=event.at)
                )
            return added

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
                DeliveryRow(r.recipient, r.route, DeliveryState(r.state), _utc(r.updated_at)) for r in rows
            ]

    async def timeline(self, bus_id: str) -> list[TimelineEvent]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(events).where(events.c.bus_id == bus_id).order_by(events.c.id))
            return [
                TimelineEvent(r.bus_id, r.recipient, DeliveryState(r.state), _utc(r.at), r.detail)
                for r in rows
            ]
