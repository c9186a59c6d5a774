"""Reading and writing document timelines. Every write is idempotent, so that the order "write the
status, then acknowledge the message" survives a crash between the two without loss or duplicates."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Insert, bindparam, delete, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.store.tables import (
    axis_sends,
    dead_letters,
    deliveries,
    documents,
    events,
    inbox,
    metadata,
    nonces,
)
from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.errors import ConfigError

__all__ = ["AxisSend", "DeadLetter", "DeliveryRow", "InboxItem", "StatusStore"]

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
    # Set only by :meth:`StatusStore.mark_replayed` (the one step back); what follows a replay
    # (queued, sent to the axis, fetched) moves the delivery on again.
    DeliveryState.REPLAYED: 1,
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


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message of the dead-letter queue as the store keeps it. ``id`` is 0 until stored; ``body`` is
    None in listings; ``headers`` are what a replay puts back on the message."""

    dead_key: str
    message_id: str
    source_queue: str
    reason: str
    dead_at: dt.datetime
    bus_id: str | None = None
    recipient: str | None = None
    sender: str | None = None
    document_id: str | None = None
    kind: str | None = None
    headers: dict[str, str | int | bool] = field(default_factory=dict)
    body: bytes | None = None
    id: int = 0
    replayed_at: dt.datetime | None = None
    replay_count: int = 0


@dataclass(frozen=True, slots=True)
class AxisSend:
    """One envelope the national axis answered OK for, not yet seen in its sent list."""

    id: int
    bus_id: str
    recipient: str
    axis_doc_id: str
    message_id: str
    kind: str
    headers: dict[str, str | int | bool]
    body: bytes | None
    sent_at: dt.datetime


def _dead_letter(row: Any, *, body: bool = False) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        dead_key=row.dead_key,
        message_id=row.message_id,
        source_queue=row.source_queue,
        reason=row.reason,
        dead_at=_utc(row.dead_at),
        bus_id=row.bus_id,
        recipient=row.recipient,
        sender=row.sender,
        document_id=row.document_id,
        kind=row.kind,
        headers=json.loads(row.headers),
        body=bytes(row.body) if body else None,
        replayed_at=_utc(row.replayed_at) if row.replayed_at else None,
        replay_count=row.replay_count,
    )


_DEAD_LIST = [c for c in dead_letters.c if c.name != "body"]


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
        # Hot-path statements are built once: SQLAlchemy then reuses their compiled form without
        # rebuilding the statement and its cache key on every call (a large share of the CPU a
        # request costs, measured with bench/bench_e2e.py).
        ins = self._insert_ignoring_duplicates
        self._ins_documents, self._ins_deliveries = ins(documents), ins(deliveries)
        self._ins_events, self._ins_inbox, self._ins_nonces = ins(events), ins(inbox), ins(nonces)
        self._ins_dead_letters = ins(dead_letters)
        self._q_dedupe = select(documents.c.bus_id, documents.c.confirmed, documents.c.envelope_sha256).where(
            documents.c.dedupe_key == bindparam("p_key")
        )
        self._q_confirm = (
            update(documents).where(documents.c.bus_id == bindparam("p_bus")).values(confirmed=True)
        )
        self._q_advance = (
            update(deliveries)
            .where(
                deliveries.c.bus_id == bindparam("p_bus"),
                deliveries.c.recipient == bindparam("p_recipient"),
                deliveries.c.state.in_(bindparam("p_states", expanding=True)),
            )
            .values(state=bindparam("p_state"), updated_at=bindparam("p_at"))
        )
        self._q_event_keys = select(events.c.event_key).where(
            events.c.event_key.in_(bindparam("p_keys", expanding=True))
        )
        self._q_inbox_ids = select(inbox.c.message_id).where(
            inbox.c.message_id.in_(bindparam("p_ids", expanding=True))
        )
        self._q_known = select(documents.c.bus_id).where(
            documents.c.bus_id.in_(bindparam("p_ids", expanding=True))
        )
        mine = (inbox.c.agency == bindparam("p_agency"), inbox.c.id == bindparam("p_id"))
        self._q_first_fetch = (
            update(inbox)
            .where(*mine, inbox.c.fetched_at.is_(None))
            .values(fetched_at=bindparam("p_at"))
            .returning(*inbox.c)
        )
        self._q_item = select(inbox).where(*mine)
        self._q_ack = (
            update(inbox)
            .where(
                *mine,
                # done and fail are final: a later "processing" must not reopen the envelope
                inbox.c.ack_state.is_(None)
                | (inbox.c.ack_state == DeliveryState.PROCESSING.value)
                | (inbox.c.ack_state == bindparam("p_state")),
            )
            .values(ack_state=bindparam("p_state"), acked_at=bindparam("p_at"))
            .returning(*_INBOX_LIST)
        )
        listing = select(*_INBOX_LIST).where(
            inbox.c.agency == bindparam("p_agency"), inbox.c.id > bindparam("p_after")
        )
        self._q_inbox_all = listing.order_by(inbox.c.id).limit(bindparam("p_limit"))
        self._q_inbox_pending = (
            listing.where(inbox.c.ack_state.is_(None) | (inbox.c.ack_state == DeliveryState.PROCESSING.value))
            .order_by(inbox.c.id)
            .limit(bindparam("p_limit"))
        )

    @classmethod
    def connect(cls, url: str, *, pool_size: int | None = None, **engine_options: Any) -> StatusStore:
        """*pool_size*: connections kept open (PostgreSQL; SQLite keeps its own pool)."""
        if pool_size is not None and not url.startswith("sqlite"):
            engine_options.setdefault("pool_size", pool_size)
            engine_options.setdefault("max_overflow", pool_size // 2)
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

    @property
    def engine(self) -> AsyncEngine:
        """For read-only query modules beside this one (the operators' dashboard)."""
        return self._engine

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
        the intake should go on (a new document, or an earlier attempt with the same bytes that never
        got its confirms: the bus id is deterministic, so it is the same document), or the bus id of the
        earlier document with the same (sender, DocumentId, business type) when it is confirmed or had
        other bytes: the caller refuses the envelope (duplicate or conflicting retry).
        """
        async with self._engine.begin() as conn:
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
        async with self._engine.begin() as conn:
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
            self._q_advance,
            {
                "p_bus": event.bus_id,
                "p_recipient": event.recipient,
                "p_states": _not_after(event.state),
                "p_state": event.state.value,
                "p_at": event.at,
            },
        )

    async def _events(self, conn: AsyncConnection, keyed: Sequence[tuple[TimelineEvent, str]]) -> None:
        """Write events (idempotent by key) and move their deliveries forward, few statements for many."""
        if not keyed:
            return
        if len(keyed) == 1:
            event, key = keyed[0]
            added = await self._event(conn, event, key=key)
            # Deliveries are created in the accepted state: only later states move them.
            if added and event.recipient is not None and event.state is not DeliveryState.ACCEPTED:
                await self._advance(conn, event)
            return
        keys = [key for _, key in keyed]
        already = {k for (k,) in await conn.execute(self._q_event_keys, {"p_keys": keys})}
        new = [(e, k) for e, k in keyed if k not in already]
        if not new:
            return
        await conn.execute(
            self._ins_events,
            [
                {
                    "bus_id": e.bus_id,
                    "recipient": e.recipient,
                    "state": e.state.value,
                    "at": e.at,
                    "detail": e.detail,
                    "event_key": k,
                }
                for e, k in new
            ],
        )
        groups: dict[tuple[DeliveryState, dt.datetime], list[tuple[str, str]]] = {}
        for event, _ in new:
            if event.recipient is not None and event.state is not DeliveryState.ACCEPTED:
                groups.setdefault((event.state, event.at), []).append((event.bus_id, event.recipient))
        for (state, at), pairs in groups.items():
            await conn.execute(
                update(deliveries)
                .where(
                    tuple_(deliveries.c.bus_id, deliveries.c.recipient).in_(pairs),
                    deliveries.c.state.in_(_not_after(state)),
                )
                .values(state=state.value, updated_at=at)
            )

    async def _event(self, conn: AsyncConnection, event: TimelineEvent, *, key: str) -> bool:
        result = await conn.execute(
            self._ins_events,
            {
                "bus_id": event.bus_id,
                "recipient": event.recipient,
                "state": event.state.value,
                "at": event.at,
                "detail": event.detail,
                "event_key": key,
            },
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

    async def store_inbox_many(self, items: Sequence[InboxItem]) -> list[bool]:
        """Keep envelopes delivered to agencies, each with its ``queued`` event, in one transaction.

        The inbox worker calls this *before* acknowledging the messages; a redelivery after a crash
        writes nothing new (``message_id`` is unique). Returns, per item, False for such a repeat.
        """
        if not items:
            return []
        async with self._engine.begin() as conn:
            existing = {
                m for (m,) in await conn.execute(self._q_inbox_ids, {"p_ids": [i.message_id for i in items]})
            }
            fresh: dict[str, InboxItem] = {}
            for item in items:
                if item.message_id not in existing:
                    fresh.setdefault(item.message_id, item)
            if fresh:
                await conn.execute(
                    self._ins_inbox,
                    [
                        {
                            "message_id": i.message_id,
                            "agency": i.agency,
                            "addressed_to": i.addressed_to,
                            "bus_id": i.bus_id,
                            "sender": i.sender,
                            "kind": i.kind,
                            "document_id": i.document_id,
                            "body": i.body,
                            "received_at": i.received_at,
                        }
                        for i in fresh.values()
                    ],
                )
                # A message whose document this store never recorded (a database restored from an
                # older backup, say) still reaches the recipient; it has no timeline to write on.
                known = {
                    b
                    for (b,) in await conn.execute(
                        self._q_known, {"p_ids": sorted({i.bus_id for i in fresh.values()})}
                    )
                }
                queued = [
                    TimelineEvent(i.bus_id, i.addressed_to, DeliveryState.QUEUED, i.received_at)
                    for i in fresh.values()
                    if i.bus_id in known
                ]
                await self._events(conn, [(e, f"{e.bus_id}|{e.recipient}|queued") for e in queued])
        return [i.message_id not in existing and fresh.get(i.message_id) is i for i in items]

    async def inbox(
        self, agency: str, *, pending_only: bool = False, after: int = 0, limit: int = 100
    ) -> list[InboxItem]:
        """An agency's envelopes, oldest first, after id *after*; *pending_only*: not yet acknowledged
        as done or fail."""
        query = self._q_inbox_pending if pending_only else self._q_inbox_all
        async with self._engine.connect() as conn:
            rows = await conn.execute(query, {"p_agency": agency, "p_after": after, "p_limit": limit})
            return [_inbox_item(r) for r in rows]

    async def fetch(self, agency: str, item_id: int, at: dt.datetime) -> InboxItem | None:
        """One envelope of *agency*'s inbox with its body; the first fetch is a ``fetched`` event."""
        async with self._engine.begin() as conn:
            first = (
                await conn.execute(self._q_first_fetch, {"p_agency": agency, "p_id": item_id, "p_at": at})
            ).first()
            if first is not None:
                event = TimelineEvent(first.bus_id, first.addressed_to, DeliveryState.FETCHED, at)
                await self._events(conn, [(event, f"{first.message_id}|fetched")])
                return _inbox_item(first, body=True)
            row = (await conn.execute(self._q_item, {"p_agency": agency, "p_id": item_id})).first()
            return None if row is None else _inbox_item(row, body=True)

    async def acknowledge(
        self, agency: str, item_id: int, state: DeliveryState, at: dt.datetime, reason: str | None = None
    ) -> InboxItem | None:
        """The recipient's transport acknowledgement (processing, done or fail, with a reason)."""
        if state not in (DeliveryState.PROCESSING, DeliveryState.DONE, DeliveryState.FAIL):
            raise ValueError(f"not an acknowledgement: {state}")
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    self._q_ack, {"p_agency": agency, "p_id": item_id, "p_state": state.value, "p_at": at}
                )
            ).first()
            if row is None:  # not this agency's, or already final: the caller tells which
                current = (await conn.execute(self._q_item, {"p_agency": agency, "p_id": item_id})).first()
                return None if current is None else _inbox_item(current)
            event = TimelineEvent(row.bus_id, row.addressed_to, state, at, reason)
            await self._events(conn, [(event, f"{row.message_id}|ack|{state.value}")])
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

    # -- dead letters --------------------------------------------------------------------------------

    async def store_dead_letter(self, item: DeadLetter) -> bool:
        """Keep a message of the dead-letter queue; the dead-letter worker calls this *before*
        acknowledging it. False for a repeat (the same ``dead_key``: a redelivery after a crash).

        When it was a delivery this store knows, the same transaction writes a ``dead-lettered`` event
        with the reason on the document's timeline, and the delivery moves to that state.
        """
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
                self._ins_dead_letters,
                {
                    "dead_key": item.dead_key,
                    "message_id": item.message_id,
                    "bus_id": item.bus_id,
                    "recipient": item.recipient,
                    "sender": item.sender,
                    "document_id": item.document_id,
                    "kind": item.kind,
                    "source_queue": item.source_queue,
                    "reason": item.reason,
                    "headers": json.dumps(item.headers, ensure_ascii=False, sort_keys=True),
                    "body": b"" if item.body is None else item.body,
                    "dead_at": item.dead_at,
                    "replay_count": 0,
                },
            )
            if not inserted.rowcount:
                return False
            if item.bus_id and item.recipient and await self._has_delivery(conn, item.bus_id, item.recipient):
                event = TimelineEvent(
                    item.bus_id, item.recipient, DeliveryState.DEAD_LETTERED, item.dead_at, item.reason
                )
                await self._events(conn, [(event, f"{item.bus_id}|{item.recipient}|dead|{item.dead_key}")])
        return True

    async def _has_delivery(self, conn: AsyncConnection, bus_id: str, recipient: str) -> bool:
        # Events reference documents: a dead letter of a document this store never recorded (or not a
        # bus message at all) is kept without a timeline event rather than failing its write forever.
        query = select(deliveries.c.state).where(
            deliveries.c.bus_id == bus_id, deliveries.c.recipient == recipient
        )
        return (await conn.execute(query)).first() is not None

    async def dead_letters(
        self, *, include_replayed: bool = False, limit: int = 100, before_id: int | None = None
    ) -> list[DeadLetter]:
        """Dead letters, newest first, without bodies; *include_replayed*: also those an operator
        replayed; *before_id*: the next page after the smallest id of the previous one."""
        query = select(*_DEAD_LIST)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        if before_id is not None:
            query = query.where(dead_letters.c.id < before_id)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(dead_letters.c.id.desc()).limit(limit))
            return [_dead_letter(r) for r in rows]

    async def has_dead_letter(self, message_id: str) -> bool:
        """Whether a message with this id was ever dead-lettered (the relay-in asks before taking an
        envelope the national axis offers again after a refusal)."""
        query = select(dead_letters.c.id).where(dead_letters.c.message_id == message_id).limit(1)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        """One dead letter with its body."""
        async with self._engine.connect() as conn:
            query = select(dead_letters).where(dead_letters.c.id == dead_letter_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _dead_letter(row, body=True)

    async def mark_replayed(self, dead_letter_id: int, at: dt.datetime) -> DeadLetter | None:
        """Record that the dead letter went back to its queue (after the broker confirmed it): its
        ``replayed_at`` and ``replay_count``, a ``replayed`` event on the delivery's timeline, and the
        delivery taken from ``dead-lettered`` back to ``replayed``. None for an unknown id."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    update(dead_letters)
                    .where(dead_letters.c.id == dead_letter_id)
                    .values(replayed_at=at, replay_count=dead_letters.c.replay_count + 1)
                    .returning(*_DEAD_LIST)
                )
            ).first()
            if row is None:
                return None
            item = _dead_letter(row)
            bus_id, recipient = item.bus_id, item.recipient
            if bus_id and recipient and await self._has_delivery(conn, bus_id, recipient):
                detail = f"dead letter {item.id} replayed to {item.source_queue}"
                event = TimelineEvent(bus_id, recipient, DeliveryState.REPLAYED, at, detail)
                key = f"{bus_id}|{recipient}|replay|{item.id}|{item.replay_count}"
                await self._events(conn, [(event, key)])
                # The one step back the forward-only rule allows: dead-lettered (rank 5) -> replayed.
                await conn.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.bus_id == bus_id,
                        deliveries.c.recipient == recipient,
                        deliveries.c.state == DeliveryState.DEAD_LETTERED.value,
                    )
                    .values(state=DeliveryState.REPLAYED.value, updated_at=at)
                )
            return item

    # -- what the national axis took ------------------------------------------------------------------

    async def record_axis_send(self, send: AxisSend, event: TimelineEvent, *, key: str) -> None:
        """The ``sent-to-axis`` event and the kept copy, in one transaction (the relay then acks)."""
        async with self._engine.begin() as conn:
            await self._events(conn, [(event, key)])
            await conn.execute(
                self._insert_ignoring_duplicates(axis_sends),
                {
                    "bus_id": send.bus_id,
                    "recipient": send.recipient,
                    "axis_doc_id": send.axis_doc_id,
                    "message_id": send.message_id,
                    "kind": send.kind,
                    "headers": json.dumps(send.headers, ensure_ascii=False, sort_keys=True),
                    "body": send.body,
                    "sent_at": send.sent_at,
                },
            )

    async def unconfirmed_axis_sends(self, sent_before: dt.datetime, *, limit: int = 100) -> list[AxisSend]:
        """Sends not yet confirmed by the axis, sent (and last checked) before *sent_before*; without
        their bodies (:meth:`axis_send_body` reads one when it must be sent again)."""
        columns = [c for c in axis_sends.c if c.name != "body"]
        query = (
            select(*columns)
            .where(
                axis_sends.c.outcome.is_(None),
                axis_sends.c.sent_at < sent_before,
                (axis_sends.c.checked_at.is_(None)) | (axis_sends.c.checked_at < sent_before),
            )
            .order_by(axis_sends.c.sent_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AxisSend(
                id=r.id,
                bus_id=r.bus_id,
                recipient=r.recipient,
                axis_doc_id=r.axis_doc_id,
                message_id=r.message_id,
                kind=r.kind,
                headers=json.loads(r.headers),
                body=None,
                sent_at=_utc(r.sent_at),
            )
            for r in rows
        ]

    async def axis_send_body(self, send_id: int) -> bytes | None:
        async with self._engine.connect() as conn:
            query = select(axis_sends.c.body).where(axis_sends.c.id == send_id)
            row = (await conn.execute(query)).first()
        return None if row is None else row.body

    async def settle_axis_send(
        self,
        send_id: int,
        outcome: str | None,
        at: dt.datetime,
        event: tuple[TimelineEvent, str] | None = None,
    ) -> None:
        """*outcome* ``confirmed`` (the body is dropped) or ``lost`` (sent again); None: checked, not
        settled. *event* goes on the timeline in the same transaction."""
        values: dict[str, Any] = {"checked_at": at, "outcome": outcome}
        if outcome is not None:
            values["body"] = None
        async with self._engine.begin() as conn:
            await conn.execute(update(axis_sends).where(axis_sends.c.id == send_id).values(**values))
            if event is not None:
                await self._events(conn, [event])

    # -- request nonces ------------------------------------------------------------------------------

    async def revoke_session(self, token: str, until: dt.datetime) -> None:
        """An operator logged out: the dashboard session *token* is refused by every process until
        *until* (its expiry), after which the row is cleaned up with the old request nonces."""
        async with self._engine.begin() as conn:
            await conn.execute(
                self._ins_nonces, {"agency": "dashboard-logout", "nonce": token, "seen_at": until}
            )

    async def session_revoked(self, token: str) -> bool:
        query = select(nonces.c.nonce).where(nonces.c.agency == "dashboard-logout", nonces.c.nonce == token)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def remember_nonce(self, agency: str, nonce: str, at: dt.datetime, *, keep: dt.timedelta) -> bool:
        """True the first time *agency* uses *nonce*; False for a replay. Forgets nonces older than
        *keep* (their timestamps are outside the window, so the signature check refuses them anyway)."""
        async with self._engine.begin() as conn:
            inserted = await conn.execute(self._ins_nonces, {"agency": agency, "nonce": nonce, "seen_at": at})
            if inserted.rowcount and secrets.randbelow(100) == 0:
                await conn.execute(delete(nonces).where(nonces.c.seen_at < at - keep))
            return bool(inserted.rowcount)
