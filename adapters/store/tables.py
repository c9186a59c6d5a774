"""Tables of the status store. Queries an operator runs often have an index (issue 5 lists 100,000
documents). Envelopes live once each in the body store (``bodies``, ``body_chunks``: content-addressed,
in chunks), named by the inbox, the dead letters and what the national axis took, and garbage-collected
when every delivery of theirs is final and the retention period has passed (docs/data-path.md)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "INBOX_PENDING",
    "audit_archives",
    "audit_chains",
    "audit_checkpoints",
    "audit_records",
    "axis_inbound",
    "axis_sends",
    "bodies",
    "body_chunks",
    "body_refs",
    "dead_letters",
    "deliveries",
    "documents",
    "events",
    "inbox",
    "login_failures",
    "metadata",
    "nonces",
]

metadata = MetaData()

# Not yet acknowledged done or fail by the recipient.
INBOX_PENDING = "ack_state IS NULL OR ack_state = 'processing'"

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
    # False between the intake's first write and the broker's confirms: a client retrying after a
    # crash in between is published again, not told "duplicate" for something never delivered.
    Column("confirmed", Boolean, nullable=False, default=False),
    # The document a status message, revocation, update or replacement concerns.
    Column("related_bus_id", String(36)),
    Index("ix_documents_document_id", "document_id"),
    Index("ix_documents_sender_accepted", "sender", "accepted_at"),
    # The operators' dashboard (adapters/store/dashboard_queries.py): newest first with a keyset on
    # (accepted_at, bus_id) and date ranges; the search by code and notation ("1234/UBND-KGVX").
    Index("ix_documents_accepted", "accepted_at", "bus_id"),
    Index("ix_documents_code", "code"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("bus_id", String(36), ForeignKey("documents.bus_id", ondelete="CASCADE"), primary_key=True),
    Column("recipient", String(32), primary_key=True),
    Column("route", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The last business status (01-06, 13, 15, 16) this recipient sent back about the document.
    Column("business_status", String(2)),
    Index("ix_deliveries_recipient_state", "recipient", "state"),
    # The dashboard's search by delivery state: the rare states (failed, dead-lettered) are the ones
    # operators look for, and this finds them without reading every delivery.
    Index("ix_deliveries_state", "state", "bus_id"),
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

# An agency's received envelopes, written by the inbox worker before it acknowledges the message.
# ``message_id`` (``bus_id|recipient``) makes a redelivered message land once.
inbox = Table(
    "inbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("message_id", String(100), nullable=False),
    Column("agency", String(32), nullable=False),  # the receiving agency's current code
    Column("addressed_to", String(32), nullable=False),  # as written in the envelope (maybe a former code)
    Column("bus_id", String(36), nullable=False),
    Column("sender", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("document_id", String(256), nullable=False),
    # Empty since issue 12: the envelope is the body store's ``body_sha256`` (rows written before it
    # still carry theirs here, and are fetched from here).
    Column("body", LargeBinary, nullable=False),
    Column("body_sha256", String(64)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("fetched_at", DateTime(timezone=True)),
    Column("ack_state", String(16)),  # processing / done / fail, as the recipient acknowledged
    Column("acked_at", DateTime(timezone=True)),
    UniqueConstraint("message_id", name="uq_inbox_message_id"),
    Index("ix_inbox_agency_id", "agency", "id"),
    Index("ix_inbox_agency_ack", "agency", "ack_state", "id"),
    # Only the envelopes still waiting (the dashboard's inbox depths and oldest unfetched envelope):
    # small however long the table grows. The predicate is written out as the query writes it, so
    # that the planner can prove the query implies it (no bound parameter in either).
    Index(
        "ix_inbox_pending",
        "agency",
        "received_at",
        postgresql_where=text(INBOX_PENDING),
        sqlite_where=text(INBOX_PENDING),
    ),
    Index("ix_inbox_body_sha256", "body_sha256"),  # the body store's garbage collection
)

# Nonces of signed API requests seen inside the timestamp window: a replayed request is refused by
# every gateway process, since they share this table.
nonces = Table(
    "request_nonces",
    metadata,
    Column("agency", String(32), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Index("ix_request_nonces_seen_at", "seen_at"),
)

# Messages of the dead-letter queue, kept for operators to read and replay (``bus deadletters``,
# ``bus replay``). ``dead_key`` names one dead-lettering: the worker writes it before acknowledging, so
# a redelivery after a crash lands once. No foreign key to ``documents``: a dead letter may be a message
# no bus ever accepted (published by hand, or by another system).
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("dead_key", String(128), nullable=False),
    Column("message_id", String(256), nullable=False),
    Column("bus_id", String(36)),
    Column("recipient", String(32)),
    Column("sender", String(32)),
    Column("document_id", String(256)),
    Column("kind", String(16)),
    Column("source_queue", String(256), nullable=False),  # "" when nothing says where it came from
    Column("reason", Text, nullable=False),
    Column("headers", Text, nullable=False),  # JSON: the headers a replay puts back on the message
    Column("body", LargeBinary, nullable=False),
    Column("dead_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True)),
    Column("replay_count", Integer, nullable=False, default=0),
    UniqueConstraint("dead_key", name="uq_dead_letters_dead_key"),
    Index("ix_dead_letters_dead_at", "dead_at"),
    Index("ix_dead_letters_replayed_at", "replayed_at", "id"),
    Index("ix_dead_letters_message_id", "message_id"),
    Index("ix_dead_letters_bus_id", "bus_id", "replayed_at"),  # the body store's garbage collection
)


# What the relay handed to the national axis, kept until the axis shows it has it (getSentEdocList):
# an axis that answers OK and then loses an envelope is caught by the reconciler, which sends the kept
# body again. The body is dropped once the axis confirms.
axis_sends = Table(
    "axis_sends",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("bus_id", String(36), nullable=False),
    Column("recipient", String(32), nullable=False),
    Column("axis_doc_id", String(128), nullable=False),
    Column("message_id", String(256), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("headers", Text, nullable=False),  # JSON: what a resend puts back on the message
    Column("body", LargeBinary),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("checked_at", DateTime(timezone=True)),
    Column("outcome", String(16)),  # NULL while unchecked; "confirmed" or "lost"
    UniqueConstraint("axis_doc_id", "recipient", name="uq_axis_sends_doc"),
    Index("ix_axis_sends_open", "outcome", "sent_at"),
    Index("ix_axis_sends_bus_id", "bus_id", "outcome"),  # the body store's garbage collection
)

# The body store (issue 12): each envelope delivered, stored once, named by the SHA-256 of its bytes,
# shared by every gateway of the province. Its bytes are rows of at most 1 MiB (``body_chunks``), so that
# a 100 MB envelope is written and read a chunk at a time, never whole in memory; the ``bodies`` row is
# written last, in the same transaction: a body is there whole or not at all.
bodies = Table(
    "bodies",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Index("ix_bodies_stored_at", "stored_at"),
)

body_chunks = Table(
    "body_chunks",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Which documents a body belongs to: its deliveries say when it may go (the intake's retry after a crash
# seals the same document again, with another signature: two bodies, one document).
body_refs = Table(
    "body_refs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("bus_id", String(36), primary_key=True),
    Index("ix_body_refs_bus_id", "bus_id"),
)

# Failed dashboard logins (adapters/dashboard/throttle.py), by client address (``kind`` "client") and by
# username digest ("name"), counted here so that every gateway behind one address sees the same counts
# (issue 14, item 4). Each change is one statement (INSERT … ON CONFLICT DO UPDATE … RETURNING), atomic
# across processes; a counter whose last failure is older than the throttle's forget_s counts as zero,
# and its row is deleted later.
login_failures = Table(
    "login_failures",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", DateTime(timezone=True), nullable=False),
    Index("ix_login_failures_last_failure_at", "last_failure_at"),
)

# What relay in decided for an envelope the national axis listed (``outcome``: done or fail; NULL when
# the refusal was found in the dead letters, not decided here) and what it last told the axis
# (``told``), shared so that the gateway that takes over polling after another died neither takes an
# envelope again nor tells the axis twice (issue 14, item 4). Rows not touched for days are deleted.
axis_inbound = Table(
    "axis_inbound",
    metadata,
    Column("doc_id", String(256), primary_key=True),
    Column("outcome", String(8)),
    Column("told", String(8)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_axis_inbound_updated_at", "updated_at"),
)

# The audit log (issue 15; adapters/store/audit.py, docs/audit.md). Each writing process appends to a
# chain of its own; ``audit_chains`` holds each chain's head, moved in the transaction that appends.
audit_chains = Table(
    "audit_chains",
    metadata,
    Column("chain_id", String(96), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A record's bytes (``record``: the JSON that was hashed) with what it is searched by beside them; the
# verifier checks that those columns say what the bytes say.
audit_records = Table(
    "audit_records",
    metadata,
    Column("chain_id", String(96), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("bus_id", String(36)),
    Column("sha256", String(64), nullable=False),
    Column("record", Text, nullable=False),
    Index("ix_audit_records_bus_id", "bus_id"),  # a document's receipts and evidence
    Index("ix_audit_records_at", "at"),  # exports by date
)

# Signed checkpoints: the heads of every chain, each linked to the previous checkpoint by its hash.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("jws", Text, nullable=False),
    Column("timestamp", LargeBinary),  # the RFC 3161 token over the payload's SHA-256, when one was got
    Index("ix_audit_checkpoints_at", "at"),
)

# Archives retention wrote before removing old records: each names the one before it by its SHA-256.
audit_archives = Table(
    "audit_archives",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("last_checkpoint", BigInteger, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
)
