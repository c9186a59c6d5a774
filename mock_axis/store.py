"""The mock national axis's own state, in a real database (SQLite or PostgreSQL through SQLAlchemy's
async core), so that a test can restart the mock, or run two of them, and still see what was sent.

Tables are prefixed ``axis_`` and live in their own ``MetaData``: the mock may share a database with a
bus node without touching the node's tables. One item is one (sent envelope, recipient system): the
axis keeps a copy per recipient, each with its own DocId and transport status, which is what
``getReceivedEdocList`` lists and ``updateStatus`` moves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Table,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from bus.errors import ConfigError
from mock_axis.listing import ReceivedFilter
from mock_axis.tables import (
    AxisAgency,
    AxisItem,
    NewItem,
    agency_from_row,
    axis_agencies,
    axis_items,
    item_from_row,
    metadata,
)

__all__ = ["AxisAgency", "AxisItem", "MockAxisStore", "NewItem", "metadata"]


_LIST_COLUMNS = [c for c in axis_items.c if c.name != "body"]
_SCHEMA_LOCK = 4242018  # PostgreSQL advisory lock id; the status store uses 4242017


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MockAxisStore:
    """Items and agencies of the mock axis. ``url`` is a SQLAlchemy async URL:
    ``sqlite+aiosqlite:///path/mock-axis.db`` or ``postgresql+asyncpg://user@host/db``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    def connect(cls, url: str) -> MockAxisStore:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"mock axis database {url!r} is not a SQLAlchemy URL: {exc}") from exc
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"mock axis database {parsed.render_as_string()}: use sqlite+aiosqlite:///path "
                "or postgresql+asyncpg://user@host/db"
            )
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            # A demo runs from a clean checkout: create demo-out/ rather than fail on a missing folder.
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return cls(create_async_engine(url))

    async def create_schema(self) -> None:
        """Create missing ``axis_`` tables (idempotent, and safe when several processes start at once)."""
        async with self._engine.begin() as conn:
            if self._engine.dialect.name == "postgresql":
                # CREATE TABLE IF NOT EXISTS races between processes on PostgreSQL; serialise them.
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})"))
            # IF NOT EXISTS rather than create_all's look-then-create, which two processes starting
            # at once on one SQLite file both pass ("table axis_items already exists").
            for table in metadata.sorted_tables:
                await conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda i: str(i.name)):
                    await conn.execute(CreateIndex(index, if_not_exists=True))

    async def close(self) -> None:
        await self._engine.dispose()

    def _insert_new(self, table: Table) -> Any:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    # -- items --------------------------------------------------------------------------------------

    async def add_items(self, items: Sequence[NewItem]) -> None:
        """Store every recipient's copy of one sendEdoc in one transaction: all or none."""
        now = _now()
        rows = [
            {
                "doc_id": i.doc_id,
                "sent_id": i.sent_id,
                "from_system": i.from_system,
                "from_code": i.from_code,
                "to_code": i.to_code,
                "to_system": i.to_system,
                "message_type": i.message_type,
                "service_type": i.service_type,
                "title": i.title,
                "notation": i.notation,
                "body": i.body,
                "status": "pending",
                "status_desc": "",
                "redelivered": False,
                "created_at": now,
                "updated_at": now,
            }
            for i in items
        ]
        async with self._engine.begin() as conn:
            await conn.execute(insert(axis_items), rows)

    async def received(
        self,
        system: str,
        *,
        message_type: str | None = None,
        service_type: str | None = None,
        wanted: ReceivedFilter | None = None,
        newest_first: bool = False,
    ) -> list[AxisItem]:
        """Items addressed to *system*, oldest first (*newest_first*: the reorder fault), cut by
        *wanted*: without a status, what is not done yet; created within its dates; one page."""
        wanted = wanted or ReceivedFilter()
        status = axis_items.c.status
        query = select(*_LIST_COLUMNS).where(
            axis_items.c.to_system == system, status == wanted.status if wanted.status else status != "done"
        )
        if message_type:
            query = query.where(axis_items.c.message_type == message_type)
        if service_type:
            query = query.where(axis_items.c.service_type == service_type)
        # Both bounds in UTC: SQLite keeps the naive UTC text _now() wrote, and compares text.
        if wanted.created_from is not None:
            query = query.where(axis_items.c.created_at >= wanted.created_from.astimezone(dt.UTC))
        if wanted.created_before is not None:
            query = query.where(axis_items.c.created_at < wanted.created_before.astimezone(dt.UTC))
        query = query.order_by(axis_items.c.seq.desc() if newest_first else axis_items.c.seq)
        if wanted.limit is not None:
            query = query.limit(wanted.limit).offset(wanted.offset)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [item_from_row(r) for r in rows]

    async def count_received(self, system: str, message_type: str, service_type: str | None = None) -> int:
        query = (
            select(func.count())
            .select_from(axis_items)
            .where(
                axis_items.c.to_system == system,
                axis_items.c.status != "done",
                axis_items.c.message_type == message_type,
            )
        )
        if service_type:
            query = query.where(axis_items.c.service_type == service_type)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def item_for(self, system: str, doc_id: str) -> AxisItem | None:
        """The item *doc_id*, with its body, if it is addressed to *system* (else None)."""
        query = select(axis_items).where(axis_items.c.doc_id == doc_id, axis_items.c.to_system == system)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else item_from_row(row, body=True)

    async def set_status(
        self, system: str, doc_id: str, status: str, description: str, *, redeliver_once: bool = False
    ) -> AxisItem | None:
        """Record *system*'s transport status of its item *doc_id*; None if it has no such item.
        ``done`` is final: a later status is answered but changes nothing.

        *redeliver_once* (the duplicate_delivery fault): the first ``done`` of an item is answered as
        usual but the item goes back to ``pending``, as if the axis lost the acknowledgement, so the
        recipient is handed it once more; its next ``done`` sticks."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(*_LIST_COLUMNS)
                    .where(axis_items.c.doc_id == doc_id, axis_items.c.to_system == system)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            if row.status == "done":  # final: a repeated or late acknowledgement changes nothing
                return item_from_row(row)
            values: dict[str, Any] = {"status": status, "status_desc": description, "updated_at": _now()}
            if status == "done" and redeliver_once and not row.redelivered:
                values.update(status="pending", redelivered=True)
            await conn.execute(update(axis_items).where(axis_items.c.seq == row.seq).values(**values))
            row = (await conn.execute(select(*_LIST_COLUMNS).where(axis_items.c.seq == row.seq))).one()
        return item_from_row(row)

    async def sent(
        self,
        system: str,
        *,
        message_type: str | None = None,
        service_type: str | None = None,
        doc_id: str | None = None,
    ) -> list[AxisItem]:
        """The sender's view (getSentEdocList): each recipient's copy of what *system* sent, oldest
        first; *doc_id* matches the DocId sendEdoc returned or a recipient's own DocId."""
        query = select(*_LIST_COLUMNS).where(axis_items.c.from_system == system)
        if message_type:
            query = query.where(axis_items.c.message_type == message_type)
        if service_type:
            query = query.where(axis_items.c.service_type == service_type)
        if doc_id:
            query = query.where((axis_items.c.sent_id == doc_id) | (axis_items.c.doc_id == doc_id))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(axis_items.c.seq))).all()
        return [item_from_row(r) for r in rows]

    # -- agencies -----------------------------------------------------------------------------------

    async def agencies(self, *, include_deleted: bool = False) -> list[AxisAgency]:
        query = select(axis_agencies).order_by(axis_agencies.c.id)
        if not include_deleted:
            query = query.where(axis_agencies.c.deleted.is_(False))
        async with self._engine.connect() as conn:
            return [agency_from_row(r) for r in (await conn.execute(query)).all()]

    async def register_agency(
        self,
        code: str,
        name: str,
        *,
        parent_code: str = "",
        mail: str = "",
        mobile: str = "",
        fax: str = "",
        old_code: str = "",
        only_if_new: bool = False,
    ) -> AxisAgency:
        """Add the agency *code*, or update it (a new version, undeleted). *only_if_new* leaves an
        existing one as it is: seeding from the configuration must not undo a later deleteAgency."""
        async with self._engine.begin() as conn:
            pid = 0
            if parent_code:
                parent = (
                    await conn.execute(select(axis_agencies.c.id).where(axis_agencies.c.code == parent_code))
                ).first()
                pid = parent.id if parent is not None else 0
            fields = {"pid": pid, "name": name, "mail": mail, "mobile": mobile, "fax": fax}
            fields |= {"old_code": old_code, "deleted": False, "modified_at": _now()}
            same_code = select(axis_agencies).where(axis_agencies.c.code == code)
            found = (await conn.execute(same_code.with_for_update())).first()
            if found is None:
                # Two mocks seeding one database at once: the loser's insert is a no-op, not an error.
                await conn.execute(self._insert_new(axis_agencies).values(code=code, version=1, **fields))
            elif not only_if_new:
                await conn.execute(
                    update(axis_agencies)
                    .where(axis_agencies.c.id == found.id)
                    .values(version=axis_agencies.c.version + 1, **fields)
                )
            row = (await conn.execute(select(axis_agencies).where(axis_agencies.c.code == code))).one()
        return agency_from_row(row)

    async def delete_agency(self, code: str) -> bool:
        """Mark *code* deleted; False if there is no such (undeleted) agency."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(axis_agencies)
                .where(axis_agencies.c.code == code, axis_agencies.c.deleted.is_(False))
                .values(deleted=True, version=axis_agencies.c.version + 1, modified_at=_now())
            )
        return bool(result.rowcount)
