"""Tables of the status store. Queries an operator runs often have an index (issue 5 lists 100,000
documents); bodies are never stored here."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["deliveries", "documents", "events", "metadata"]

metadata = MetaData()

documents = Table(
    "documents",
    metadata,
    Column("bus_id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("sender", String(32), nullable=False),
    Column("document_id", String(256), nullable=False),
    Column("business_type", Integer, nullable=False),
    Column("code", String(64)),
    Column("subject", Text),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
    Column("envelope_sha256", String(64), nullable=False),
    Column("dedupe_key", String(400), nullable=False, unique=True),
    Index("ix_documents_document_id", "document_id"),
    Index("ix_documents_sender_accepted", "sender", "accepted_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("bus_id", String(36), ForeignKey("documents.bus_id", ondelete="CASCADE"), primary_key=True),
    Column("recipient", String(32), primary_key=True),
    Column("route", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_deliveries_recipient_state", "recipient", "state"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("bus_id", String(36), ForeignKey("documents.bus_id", ondelete="CASCADE"), nullable=False),
    Column("recipient", String(32)),
    Column("state", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("detail", Text),
    # Idempotency: the same step written twice (a redelivered message) is stored once.
    Column("event_key", String(300), nullable=False),
    UniqueConstraint("event_key", name="uq_events_event_key"),
    Index("ix_events_bus_id", "bus_id", "id"),
)
