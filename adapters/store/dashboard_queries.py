"""Read-only queries of the operators' dashboard (adapters/dashboard), run by the store's methods of
:mod:`adapters.store.dashboard` (``store.search_documents(...)``, …), which translate their errors.

Every search reads an index and stops after one page (issue 5: 100,000 documents and more). Pages are
keyset pages, newest first, on ``(accepted_at, bus_id)``: the next page starts below the last row of
this one, never with an OFFSET that reads and throws away every row before it. The indexes are in
:mod:`adapters.store.tables`; tests/integration/test_dashboard.py checks the PostgreSQL plans.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    bindparam,
    case,
    func,
    literal_column,
    select,
    text,
    tuple_,
    union,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.dead_letters import dead_letter_from_row
from adapters.store.tables import INBOX_PENDING, dead_letters, deliveries, documents, inbox, metadata
from bus.delivery import DeadLetter, DeliveryRow, DeliveryState

__all__ = [
    "DASHBOARD_INDEXES",
    "Cursor",
    "DocumentDetail",
    "DocumentHit",
    "DocumentSearch",
    "InboxDepth",
    "SearchPage",
    "create_dashboard_indexes",
    "dead_letters_by_id",
    "document_detail",
    "inbox_depth_query",
    "inbox_depths",
    "search_documents",
    "search_query",
]

# Indexes added for the dashboard: ``create_all`` makes them with new tables only, so a database made
# before them gets them from :func:`create_dashboard_indexes`.
DASHBOARD_INDEXES = ("ix_documents_accepted", "ix_documents_code", "ix_deliveries_state", "ix_inbox_pending")


@dataclass(frozen=True, slots=True)
class DocumentSearch:
    """What the operator asked for; every field given narrows the search (AND)."""

    document_id: str | None = None  # the edXML DocumentId, or a bus id
    code: str | None = None  # code and notation as sent, e.g. "1234/UBND-KGVX"
    agency: str | None = None  # the sender, or one of the recipients
    since: dt.datetime | None = None  # accepted at or after
    until: dt.datetime | None = None  # accepted before
    # A delivery in this state; with *agency*, that agency's own delivery when it is a recipient.
    state: DeliveryState | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: below this row in (accepted_at, bus_id) order."""

    accepted_at: dt.datetime
    bus_id: str

    def encode(self) -> str:
        return f"{self.accepted_at.astimezone(dt.UTC).isoformat()}|{self.bus_id}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """:class:`ValueError` for anything :meth:`encode` did not make."""
        at, sep, bus_id = value.rpartition("|")
        moment = dt.datetime.fromisoformat(at) if sep else None
        if moment is None or moment.tzinfo is None or not bus_id or len(bus_id) > 36 or "\x00" in bus_id:
            raise ValueError(f"not a page cursor: {value[:80]!r}")
        try:
            moment = moment.astimezone(dt.UTC)  # 0001-01-01T00:00+05:00 is before year 1 in UTC
        except OverflowError as exc:
            raise ValueError(f"not a page cursor: {value[:80]!r}") from exc
        return cls(moment, bus_id)


@dataclass(frozen=True, slots=True)
class DocumentHit:
    bus_id: str
    kind: str
    sender: str
    document_id: str
    code: str | None
    subject: str | None
    accepted_at: dt.datetime
    confirmed: bool
    deliveries: tuple[DeliveryRow, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: list[DocumentHit]
    next: Cursor | None  # None on the last page


@dataclass(frozen=True, slots=True)
class DocumentDetail:
    hit: DocumentHit
    business_type: int
    envelope_sha256: str
    related_bus_id: str | None


@dataclass(frozen=True, slots=True)
class InboxDepth:
    agency: str
    pending: int  # not yet acknowledged done or fail
    unfetched: int
    oldest_unfetched_at: dt.datetime | None


_HIT_COLUMNS = (
    documents.c.bus_id,
    documents.c.kind,
    documents.c.sender,
    documents.c.document_id,
    documents.c.code,
    documents.c.subject,
    documents.c.accepted_at,
    documents.c.confirmed,
)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite keeps naive datetimes (what the store writes is UTC) and compares them as text: every
    # bound goes in as UTC too.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _narrowed(
    query: Select[tuple[object, ...]], search: DocumentSearch, after: Cursor | None
) -> Select[tuple[object, ...]]:
    if search.document_id:
        query = query.where(
            (documents.c.document_id == search.document_id) | (documents.c.bus_id == search.document_id)
        )
    if search.code:
        query = query.where(documents.c.code == search.code)
    if search.since is not None:
        query = query.where(documents.c.accepted_at >= _utc(search.since))
    if search.until is not None:
        query = query.where(documents.c.accepted_at < _utc(search.until))
    if after is not None:
        query = query.where(
            tuple_(documents.c.accepted_at, documents.c.bus_id)
            < tuple_(_utc(after.accepted_at), after.bus_id)
        )
    return query


def _newest(query: Select[tuple[object, ...]], limit: int) -> Select[tuple[object, ...]]:
    return query.order_by(documents.c.accepted_at.desc(), documents.c.bus_id.desc()).limit(limit)


def _state_is(state: DeliveryState) -> ColumnElement[bool]:
    # The state goes into the SQL text, not a parameter: a prepared statement's generic plan (what
    # PostgreSQL switches to after five runs) would plan for an average state, and walk every
    # document looking for a rare one (dead-lettered) that the index finds at once. A closed set of
    # values: a handful of statements, nothing an operator can inject.
    return deliveries.c.state == bindparam("state", state.value, literal_execute=True)


def _with_state(state: DeliveryState) -> Select[tuple[object, ...]]:
    return select(deliveries.c.bus_id).where(_state_is(state))


# States a delivery ends in when something went wrong: few rows, and the ones operators search for.
_RARE_STATES = frozenset(
    {
        DeliveryState.FAIL,
        DeliveryState.FAILED,
        DeliveryState.DEAD_LETTERED,
        DeliveryState.RETRYING,
        DeliveryState.REPLAYED,
    }
)


def _search_query(search: DocumentSearch, after: Cursor | None, limit: int) -> Select[tuple[object, ...]]:
    if not search.agency:
        query = _narrowed(select(*_HIT_COLUMNS), search, after)
        if search.state in _RARE_STATES:
            # Those deliveries first (ix_deliveries_state), then their documents: the cost follows the
            # matches. Left to itself PostgreSQL may walk all documents newest first, probing each for
            # the state, in the hope of meeting 50 matches early (measured: bench/bench_dashboard.py).
            rare = _with_state(search.state).distinct().cte("in_state").prefix_with("MATERIALIZED")
            query = query.join(rare, rare.c.bus_id == documents.c.bus_id)
        elif search.state is not None:
            query = query.where(documents.c.bus_id.in_(_with_state(search.state)))
        return _newest(query, limit)
    # Sender or recipient: an OR across two tables defeats every index (PostgreSQL reads the whole
    # documents table and probes the other side per row), so each side is its own newest-first page
    # through its own index, and the union of the two pages gives the page.
    sent = _narrowed(select(*_HIT_COLUMNS), search, after).where(documents.c.sender == search.agency)
    received = (
        _narrowed(select(*_HIT_COLUMNS), search, after)
        .join(deliveries, deliveries.c.bus_id == documents.c.bus_id)
        .where(deliveries.c.recipient == search.agency)
    )
    if search.state is not None:
        sent = sent.where(documents.c.bus_id.in_(_with_state(search.state)))
        received = received.where(_state_is(search.state))
    pages = union(
        select(_newest(sent, limit).subquery()),
        select(_newest(received, limit).subquery()),
    ).subquery()
    return select(*pages.c).order_by(pages.c.accepted_at.desc(), pages.c.bus_id.desc()).limit(limit)


def search_query(
    search: DocumentSearch, *, after: Cursor | None = None, limit: int = 50
) -> Select[tuple[object, ...]]:
    """The statement :func:`search_documents` runs (tests EXPLAIN it)."""
    return _search_query(search, after, limit + 1)


async def search_documents(
    engine: AsyncEngine, search: DocumentSearch, *, after: Cursor | None = None, limit: int = 50
) -> SearchPage:
    """One page of documents, newest first, each with its deliveries."""
    async with engine.connect() as conn:
        rows = (await conn.execute(search_query(search, after=after, limit=limit))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        found = await _deliveries_of(conn, [r.bus_id for r in rows])
    hits = [
        DocumentHit(
            bus_id=r.bus_id,
            kind=r.kind,
            sender=r.sender,
            document_id=r.document_id,
            code=r.code,
            subject=r.subject,
            accepted_at=_utc(r.accepted_at),
            confirmed=bool(r.confirmed),
            deliveries=tuple(found.get(r.bus_id, ())),
        )
        for r in rows
    ]
    last = hits[-1] if more and hits else None
    return SearchPage(hits, Cursor(last.accepted_at, last.bus_id) if last else None)


async def _deliveries_of(conn: AsyncConnection, bus_ids: Sequence[str]) -> dict[str, list[DeliveryRow]]:
    if not bus_ids:
        return {}
    rows = await conn.execute(
        select(deliveries)
        .where(deliveries.c.bus_id.in_(list(bus_ids)))
        .order_by(deliveries.c.bus_id, deliveries.c.recipient)
    )
    found: dict[str, list[DeliveryRow]] = {}
    for r in rows:
        found.setdefault(r.bus_id, []).append(
            DeliveryRow(r.recipient, r.route, DeliveryState(r.state), _utc(r.updated_at), r.business_status)
        )
    return found


async def document_detail(engine: AsyncEngine, bus_id: str) -> DocumentDetail | None:
    """The document's header with its deliveries (the timeline is :meth:`StatusStore.timeline`)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    *_HIT_COLUMNS,
                    documents.c.business_type,
                    documents.c.envelope_sha256,
                    documents.c.related_bus_id,
                ).where(documents.c.bus_id == bus_id)
            )
        ).first()
        if row is None:
            return None
        found = await _deliveries_of(conn, [bus_id])
    hit = DocumentHit(
        bus_id=row.bus_id,
        kind=row.kind,
        sender=row.sender,
        document_id=row.document_id,
        code=row.code,
        subject=row.subject,
        accepted_at=_utc(row.accepted_at),
        confirmed=bool(row.confirmed),
        deliveries=tuple(found.get(bus_id, ())),
    )
    return DocumentDetail(hit, row.business_type, row.envelope_sha256, row.related_bus_id)


def inbox_depth_query() -> Select[tuple[object, ...]]:
    """Pending envelopes per agency, through the partial index ``ix_inbox_pending``."""
    unfetched = inbox.c.fetched_at.is_(None)
    return (
        select(
            inbox.c.agency,
            func.count().label("pending"),
            func.count(case((unfetched, literal_column("1")))).label("unfetched"),
            func.min(case((unfetched, inbox.c.received_at))).label("oldest_unfetched_at"),
        )
        # The index's own predicate, as text: a bound parameter would hide from PostgreSQL's planner
        # that this query only wants rows the partial index holds.
        .where(text(f"({INBOX_PENDING.replace('ack_state', 'inbox.ack_state')})"))
        .group_by(inbox.c.agency)
    )


async def inbox_depths(engine: AsyncEngine) -> dict[str, InboxDepth]:
    """Per agency with anything pending (an agency not listed has an empty inbox)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(inbox_depth_query())).all()
    return {
        r.agency: InboxDepth(
            r.agency,
            int(r.pending),
            int(r.unfetched),
            _utc(r.oldest_unfetched_at) if r.oldest_unfetched_at is not None else None,
        )
        for r in rows
    }


async def dead_letters_by_id(engine: AsyncEngine, ids: Sequence[int]) -> dict[int, DeadLetter]:
    """The dead letters an operator picked for a replay, without their bodies (the confirmation page)."""
    if not ids:
        return {}
    columns = [c for c in dead_letters.c if c.name != "body"]
    async with engine.connect() as conn:
        rows = await conn.execute(select(*columns).where(dead_letters.c.id.in_(list(ids))))
        return {r.id: dead_letter_from_row(r) for r in rows}


async def create_dashboard_indexes(engine: AsyncEngine) -> None:
    """Make the dashboard's indexes on a database whose tables existed before them (idempotent)."""
    wanted = [
        ix for table in metadata.tables.values() for ix in table.indexes if ix.name in DASHBOARD_INDEXES
    ]

    def create(sync: Connection) -> None:
        for index in wanted:
            index.create(sync, checkfirst=True)

    async with engine.begin() as conn:
        await conn.run_sync(create)
