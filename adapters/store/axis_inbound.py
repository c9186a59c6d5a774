"""What relay in decided for the envelopes the national axis listed, and what it told the axis (issue 14,
item 4): kept here, not in one process's memory, so that the gateway that takes over polling after
another died (or one that handled an operator's replay) neither takes an envelope again nor tells the
axis twice. Each write is one ``INSERT … ON CONFLICT DO UPDATE``; rows nobody touched for days are
deleted by :meth:`AxisInbound.forget_axis_inbound` (an envelope still listed then is decided again:
the dead letters keep its refusal, the intake's duplicate check its acceptance)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from adapters.store.audit import AuditLog
from adapters.store.tables import axis_inbound
from bus.audit import Entry

__all__ = ["AxisInbound"]


class AxisInbound(AuditLog):
    async def axis_inbound(self, doc_id: str) -> tuple[str | None, str | None]:
        """(what was decided, what the axis was last told) for the axis's *doc_id*; None for either
        when nothing is known."""
        query = select(axis_inbound.c.outcome, axis_inbound.c.told).where(axis_inbound.c.doc_id == doc_id)
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        return (None, None) if row is None else (row.outcome, row.told)

    async def decide_axis_inbound(self, doc_id: str, outcome: str, at: dt.datetime) -> None:
        """*outcome* ("done" or "fail") is what the axis is owed for *doc_id*; what it was told stays."""
        await self._note(doc_id, at, outcome=outcome)

    async def told_axis_inbound(self, doc_id: str, told: str, at: dt.datetime) -> None:
        """The axis was told *told* for *doc_id*; what was decided stays."""
        await self._note(doc_id, at, told=told)

    async def forget_axis_inbound(self, before: dt.datetime) -> int:
        """Delete what nobody wrote since *before*; how many rows went."""
        async with self._begin() as conn:
            result = await conn.execute(delete(axis_inbound).where(axis_inbound.c.updated_at < before))
        return int(result.rowcount)

    async def _note(self, doc_id: str, at: dt.datetime, **values: str) -> None:
        insert: Any = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert(axis_inbound).values(doc_id=doc_id, updated_at=at, **values)
        statement = statement.on_conflict_do_update(
            index_elements=[axis_inbound.c.doc_id], set_={"updated_at": at, **values}
        )
        async with self._begin() as conn:
            await conn.execute(statement)
            self._audit(conn, [Entry("axis.inbound", at, {"axis_doc_id": doc_id, **values})])
