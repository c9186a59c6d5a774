"""The mock axis's tables and the records read from them (:mod:`mock_axis.store` reads and writes them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "AxisAgency",
    "AxisItem",
    "NewItem",
    "agency_from_row",
    "axis_agencies",
    "axis_items",
    "item_from_row",
    "metadata",
]

metadata = MetaData()

axis_items = Table(
    "axis_items",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # creation order of the lists
    Column("doc_id", String(36), nullable=False, unique=True),
    # The DocId the sender got back from sendEdoc (that of its first recipient's item): groups the
    # per-recipient items of one sendEdoc in getSentEdocList.
    Column("sent_id", String(36), nullable=False),
    Column("from_system", String(64), nullable=False),
    Column("from_code", String(32), nullable=False),
    Column("to_code", String(32), nullable=False),
    Column("to_system", String(64), nullable=False),
    Column("message_type", String(16), nullable=False),
    Column("service_type", String(32), nullable=False),
    Column("title", Text, nullable=False, default=""),
    Column("notation", String(64), nullable=False, default=""),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_desc", Text, nullable=False, default=""),
    # Set once the duplicate_delivery fault has handed a "done" item out again; the next done sticks.
    Column("redelivered", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_axis_items_to_status", "to_system", "status", "seq"),
    Index("ix_axis_items_from", "from_system", "seq"),
)

axis_agencies = Table(
    "axis_agencies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pid", Integer, nullable=False, default=0),  # id of the parent agency, 0 for none
    Column("code", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("mail", Text, nullable=False, default=""),
    Column("mobile", String(64), nullable=False, default=""),
    Column("fax", String(64), nullable=False, default=""),
    Column("old_code", String(64), nullable=False, default=""),
    # deleteAgency keeps the row so getSynchronizeUnit can tell a partner the unit is gone.
    Column("deleted", Boolean, nullable=False, default=False),
    Column("version", Integer, nullable=False, default=1),
    Column("modified_at", DateTime(timezone=True), nullable=False),
)


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything written here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class NewItem:
    """One copy of a sent envelope for one recipient, before it is stored."""

    doc_id: str
    sent_id: str
    from_system: str
    from_code: str
    to_code: str
    to_system: str
    message_type: str
    service_type: str
    body: bytes
    title: str = ""
    notation: str = ""


@dataclass(frozen=True, slots=True)
class AxisItem:
    """One stored copy; ``body`` only when asked for (getEdoc, downloadEdoc)."""

    seq: int
    doc_id: str
    sent_id: str
    from_system: str
    from_code: str
    to_code: str
    to_system: str
    message_type: str
    service_type: str
    title: str
    notation: str
    status: str
    status_desc: str
    redelivered: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    body: bytes | None = None


def item_from_row(row: Any, *, body: bool = False) -> AxisItem:
    return AxisItem(
        seq=row.seq,
        doc_id=row.doc_id,
        sent_id=row.sent_id,
        from_system=row.from_system,
        from_code=row.from_code,
        to_code=row.to_code,
        to_system=row.to_system,
        message_type=row.message_type,
        service_type=row.service_type,
        title=row.title,
        notation=row.notation,
        status=row.status,
        status_desc=row.status_desc,
        redelivered=bool(row.redelivered),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        body=bytes(row.body) if body else None,
    )


@dataclass(frozen=True, slots=True)
class AxisAgency:
    """One agency in the axis's directory (getAgenciesList, getSynchronizeUnit)."""

    id: int
    pid: int
    code: str
    name: str
    mail: str
    mobile: str
    fax: str
    old_code: str
    deleted: bool
    version: int
    modified_at: dt.datetime


def agency_from_row(row: Any) -> AxisAgency:
    return AxisAgency(
        id=row.id,
        pid=row.pid,
        code=row.code,
        name=row.name,
        mail=row.mail,
        mobile=row.mobile,
        fax=row.fax,
        old_code=row.old_code,
        deleted=bool(row.deleted),
        version=row.version,
        modified_at=_utc(row.modified_at),
    )
