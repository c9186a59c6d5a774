"""Agencies' inboxes: envelopes kept for their recipients, fetched and acknowledged, each step written on
the document's timeline in the same transaction. An inbox entry names its envelope in the body store
(issue 12); the envelope a copy carried is kept there in the same transaction, once for all of its
recipients."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.base import utc
from adapters.store.bodies import Bodies
from adapters.store.group_commit import BatchCommit
from adapters.store.tables import documents, inbox
from adapters.store.timelines import TimelineWriter
from bus.delivery import DeliveryState, InboxItem, TimelineEvent

__all__ = ["Inboxes"]


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
        received_at=utc(row.received_at),
        fetched_at=utc(row.fetched_at) if row.fetched_at else None,
        ack_state=row.ack_state,
        acked_at=utc(row.acked_at) if row.acked_at else None,
        # An entry written before the body store keeps its envelope in the row.
        body=bytes(row.body) if body and row.body_sha256 is None else None,
        body_sha256=row.body_sha256,
    )


_INBOX_LIST = [c for c in inbox.c if c.name != "body"]


def _sha256_of(item: InboxItem) -> str:
    """The body store's name of *item*'s envelope: its reference, or the digest of the one it carries."""
    if item.body_sha256 is not None:
        return item.body_sha256
    if item.body is None:
        raise ValueError(f"inbox item {item.message_id} has neither a body nor a body reference")
    return hashlib.sha256(item.body).hexdigest()


class Inboxes(Bodies, TimelineWriter):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._ins_inbox = self._insert_ignoring_duplicates(inbox)
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
        self._fetches: BatchCommit[tuple[str, int, dt.datetime], InboxItem | None] = BatchCommit(
            self._lane, self._fetch_many
        )
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

    async def store_inbox_many(self, items: Sequence[InboxItem]) -> list[bool]:
        """Keep envelopes delivered to agencies, each with its ``queued`` event, in one transaction.

        The inbox worker calls this *before* acknowledging the messages; a redelivery after a crash
        writes nothing new (``message_id`` is unique). Returns, per item, False for such a repeat.
        """
        if not items:
            return []
        shas = {i.message_id: _sha256_of(i) for i in items}
        async with self._begin() as conn:
            existing = {
                m for (m,) in await conn.execute(self._q_inbox_ids, {"p_ids": [i.message_id for i in items]})
            }
            fresh: dict[str, InboxItem] = {}
            for item in items:
                if item.message_id not in existing:
                    fresh.setdefault(item.message_id, item)
            if fresh:
                carried = [
                    (shas[i.message_id], i.body, i.bus_id) for i in fresh.values() if i.body is not None
                ]
                await self._keep_small(conn, carried, max(i.received_at for i in fresh.values()))
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
                            "body": b"",
                            "body_sha256": shas[i.message_id],
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
                    TimelineEvent(
                        i.bus_id,
                        i.addressed_to,
                        DeliveryState.QUEUED,
                        i.received_at,
                        sha256=shas[i.message_id],
                    )
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
        async with self._connect() as conn:
            rows = await conn.execute(query, {"p_agency": agency, "p_after": after, "p_limit": limit})
            return [_inbox_item(r) for r in rows]

    async def fetch(self, agency: str, item_id: int, at: dt.datetime) -> InboxItem | None:
        """One envelope of *agency*'s inbox with its body; the first fetch is a ``fetched`` event.
        Concurrent fetches share a transaction (adapters/store/group_commit.py)."""
        return await self._fetches.run((agency, item_id, at))

    async def _fetch_many(
        self, conn: AsyncConnection, batch: list[tuple[str, int, dt.datetime]]
    ) -> list[InboxItem | None]:
        results: list[InboxItem | None] = []
        fetched: list[tuple[TimelineEvent, str]] = []
        for agency, item_id, at in batch:
            first = (
                await conn.execute(self._q_first_fetch, {"p_agency": agency, "p_id": item_id, "p_at": at})
            ).first()
            if first is not None:
                event = TimelineEvent(first.bus_id, first.addressed_to, DeliveryState.FETCHED, at)
                fetched.append((event, f"{first.message_id}|fetched"))
                results.append(_inbox_item(first, body=True))
                continue
            row = (await conn.execute(self._q_item, {"p_agency": agency, "p_id": item_id})).first()
            results.append(None if row is None else _inbox_item(row, body=True))
        await self._events(conn, fetched)
        return results

    async def acknowledge(
        self, agency: str, item_id: int, state: DeliveryState, at: dt.datetime, reason: str | None = None
    ) -> InboxItem | None:
        """The recipient's transport acknowledgement (processing, done or fail, with a reason)."""
        if state not in (DeliveryState.PROCESSING, DeliveryState.DONE, DeliveryState.FAIL):
            raise ValueError(f"not an acknowledgement: {state}")
        async with self._begin() as conn:
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

    async def acknowledge_many(
        self, agency: str, acks: Sequence[tuple[int, DeliveryState, str | None]], at: dt.datetime
    ) -> list[InboxItem | None]:
        """Several acknowledgements of *agency* in one transaction (issue 12: an agency that pulled a
        batch acknowledges it with one request and one commit). One result per ack, in order, as
        :meth:`acknowledge` gives it: the item, or None when it is not this agency's."""
        for _, state, _ in acks:
            if state not in (DeliveryState.PROCESSING, DeliveryState.DONE, DeliveryState.FAIL):
                raise ValueError(f"not an acknowledgement: {state}")
        results: list[InboxItem | None] = []
        events: list[tuple[TimelineEvent, str]] = []
        async with self._begin() as conn:
            for item_id, state, reason in acks:
                params = {"p_agency": agency, "p_id": item_id, "p_state": state.value, "p_at": at}
                row = (await conn.execute(self._q_ack, params)).first()
                if row is None:
                    current = (
                        await conn.execute(self._q_item, {"p_agency": agency, "p_id": item_id})
                    ).first()
                    results.append(None if current is None else _inbox_item(current))
                    continue
                events.append(
                    (
                        TimelineEvent(row.bus_id, row.addressed_to, state, at, reason),
                        f"{row.message_id}|ack|{state.value}",
                    )
                )
                results.append(_inbox_item(row))
            await self._events(conn, events)
        return results

    async def inbox_counts(self) -> dict[str, int]:
        """Envelopes per agency not yet acknowledged done or fail (operators' inbox depth)."""
        async with self._connect() as conn:
            rows = await conn.execute(
                select(inbox.c.agency, func.count())
                .where(inbox.c.ack_state.is_(None) | (inbox.c.ack_state == DeliveryState.PROCESSING.value))
                .group_by(inbox.c.agency)
            )
            return {agency: count for agency, count in rows}

    async def oldest_pending(self) -> dict[str, dt.datetime]:
        """Per agency, when its oldest envelope not yet acknowledged done or fail arrived (the inbox's
        primary key finds it: the first pending id of each agency)."""
        pending = inbox.c.ack_state.is_(None) | (inbox.c.ack_state == DeliveryState.PROCESSING.value)
        first = select(func.min(inbox.c.id)).where(pending).group_by(inbox.c.agency)
        async with self._connect() as conn:
            oldest = await conn.execute(
                select(inbox.c.agency, inbox.c.received_at).where(inbox.c.id.in_(first))
            )
            return {str(agency): utc(at) for agency, at in oldest}
