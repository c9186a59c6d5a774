"""Dead letters: messages the dead-letter worker kept (with their reason) before acknowledging them,
listed for operators and replayed by them; each leaves its mark on the document's timeline."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.store.audit import entry_fields
from adapters.store.base import utc
from adapters.store.tables import dead_letters, deliveries
from adapters.store.timelines import TimelineWriter
from bus.audit import Entry
from bus.delivery import DeadLetter, DeliveryState, TimelineEvent

__all__ = ["DeadLetters"]


def dead_letter_from_row(row: Any, *, body: bool = False) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        dead_key=row.dead_key,
        message_id=row.message_id,
        source_queue=row.source_queue,
        reason=row.reason,
        dead_at=utc(row.dead_at),
        bus_id=row.bus_id,
        recipient=row.recipient,
        sender=row.sender,
        document_id=row.document_id,
        kind=row.kind,
        headers=json.loads(row.headers),
        body=bytes(row.body) if body else None,
        replayed_at=utc(row.replayed_at) if row.replayed_at else None,
        replay_count=row.replay_count,
    )


_DEAD_LIST = [c for c in dead_letters.c if c.name != "body"]


class DeadLetters(TimelineWriter):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._ins_dead_letters = self._insert_ignoring_duplicates(dead_letters)

    async def store_dead_letter(self, item: DeadLetter) -> bool:
        """Keep a message of the dead-letter queue; the dead-letter worker calls this *before*
        acknowledging it. False for a repeat (the same ``dead_key``: a redelivery after a crash).

        When it was a delivery this store knows, the same transaction writes a ``dead-lettered`` event
        with the reason on the document's timeline, and the delivery moves to that state.
        """
        async with self._begin() as conn:
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
            fields = entry_fields(
                dead_key=item.dead_key,
                message_id=item.message_id,
                bus_id=item.bus_id,
                recipient=item.recipient,
                sender=item.sender,
                document_id=item.document_id,
                source_queue=item.source_queue,
                reason=item.reason,
            )
            self._audit(conn, [Entry("deadletter.kept", item.dead_at, fields)])
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
        async with self._connect() as conn:
            rows = await conn.execute(query.order_by(dead_letters.c.id.desc()).limit(limit))
            return [dead_letter_from_row(r) for r in rows]

    async def has_dead_letter(self, message_id: str) -> bool:
        """Whether a message with this id was ever dead-lettered (the relay-in asks before taking an
        envelope the national axis offers again after a refusal)."""
        query = select(dead_letters.c.id).where(dead_letters.c.message_id == message_id).limit(1)
        async with self._connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        """One dead letter with its body."""
        async with self._connect() as conn:
            query = select(dead_letters).where(dead_letters.c.id == dead_letter_id)
            row = (await conn.execute(query)).first()
        return None if row is None else dead_letter_from_row(row, body=True)

    async def mark_replayed(self, dead_letter_id: int, at: dt.datetime) -> DeadLetter | None:
        """Record that the dead letter went back to its queue (after the broker confirmed it): its
        ``replayed_at`` and ``replay_count``, a ``replayed`` event on the delivery's timeline, and the
        delivery taken from ``dead-lettered`` back to ``replayed``. None for an unknown id."""
        async with self._begin() as conn:
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
            item = dead_letter_from_row(row)
            fields = entry_fields(
                dead_letter=item.id,
                message_id=item.message_id,
                bus_id=item.bus_id,
                recipient=item.recipient,
                queue=item.source_queue,
                replay_count=item.replay_count,
            )
            self._audit(conn, [Entry("deadletter.replayed", at, fields)])
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
