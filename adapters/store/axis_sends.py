"""What the national axis took: the envelopes it answered OK for, kept until its sent list shows them
(the relay's reconciler sends again what the axis lost)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select, update

from adapters.store.base import utc
from adapters.store.tables import axis_sends
from adapters.store.timelines import TimelineWriter
from bus.audit import Entry
from bus.delivery import AxisSend, TimelineEvent

__all__ = ["AxisSends"]


class AxisSends(TimelineWriter):
    async def record_axis_send(self, send: AxisSend, event: TimelineEvent, *, key: str) -> None:
        """The ``sent-to-axis`` event and the kept copy, in one transaction (the relay then acks)."""
        async with self._begin() as conn:
            await self._events(conn, [(event, key)])
            fields = {
                "bus_id": send.bus_id,
                "recipient": send.recipient,
                "axis_doc_id": send.axis_doc_id,
                "message_id": send.message_id,
            }
            kept = await conn.execute(
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
            if kept.rowcount:  # not for the same send written again (a redelivered message)
                self._audit(conn, [Entry("axis.sent", send.sent_at, fields)])

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
        async with self._connect() as conn:
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
                sent_at=utc(r.sent_at),
            )
            for r in rows
        ]

    async def axis_send_body(self, send_id: int) -> bytes | None:
        async with self._connect() as conn:
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
        async with self._begin() as conn:
            settled = (
                await conn.execute(
                    update(axis_sends)
                    .where(axis_sends.c.id == send_id)
                    .values(**values)
                    .returning(axis_sends.c.bus_id, axis_sends.c.recipient, axis_sends.c.axis_doc_id)
                )
            ).first()
            if outcome is not None and settled is not None:
                fields = {
                    "bus_id": settled.bus_id,
                    "recipient": settled.recipient,
                    "axis_doc_id": settled.axis_doc_id,
                    "outcome": outcome,
                }
                self._audit(conn, [Entry("axis.settled", at, fields)])
            if event is not None:
                await self._events(conn, [event])
