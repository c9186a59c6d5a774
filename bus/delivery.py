"""Delivery tracking in the domain: the states one recipient's copy of a document goes through.

Every change is an event on the document's timeline, with its time and, for failures, the reason.
Events carry a key that makes writing them idempotent: a worker writes the event, then acknowledges
its message; if it dies in between, the redelivered message writes the same key again and nothing is
duplicated (issue 3, "a status write and the message acknowledgement are ordered").

A delivery only moves forward (:func:`may_replace`): a late or redelivered event never takes it back.
The records the store keeps (deliveries, inbox items, dead letters, what the national axis took) are
defined here, so that adapters share one meaning of them; the store (adapters/store) only maps rows.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

__all__ = [
    "AcceptedDocument",
    "AxisSend",
    "DeadLetter",
    "DeliveryRow",
    "DeliveryState",
    "InboxItem",
    "TimelineEvent",
    "may_replace",
    "replaceable_by",
]


class DeliveryState(enum.StrEnum):
    ACCEPTED = "accepted"  # the bus answered "accepted": the envelope is durable in RabbitMQ
    QUEUED = "queued"  # in the recipient's inbox (or the outbound queue)
    FETCHED = "fetched"  # the recipient's system took it
    PROCESSING = "processing"  # transport acknowledgement from the recipient
    DONE = "done"
    FAIL = "fail"
    STATUS = "status"  # a business status (01-06, 13, 15, 16) came back; the code is in ``detail``
    SENT_TO_AXIS = "sent-to-axis"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"
    REPLAYED = "replayed"  # an operator sent a dead letter back to its queue (``bus replay``)
    RELATED = "related"  # a revocation, update, replacement or take-back concerns this document

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def rank(self) -> int:
        """How far along a delivery in this state is; see :func:`may_replace`."""
        return _RANK[self]


_LABELS = {
    DeliveryState.ACCEPTED: "Trục đã nhận",
    DeliveryState.QUEUED: "Đã vào hộp thư đến",
    DeliveryState.FETCHED: "Đơn vị nhận đã tải về",
    DeliveryState.PROCESSING: "Đơn vị nhận đang xử lý",
    DeliveryState.DONE: "Đơn vị nhận đã nhận xong",
    DeliveryState.FAIL: "Đơn vị nhận báo lỗi",
    DeliveryState.STATUS: "Trạng thái nghiệp vụ",
    DeliveryState.SENT_TO_AXIS: "Đã gửi lên trục quốc gia",
    DeliveryState.RETRYING: "Đang thử gửi lại",
    DeliveryState.FAILED: "Gửi thất bại",
    DeliveryState.DEAD_LETTERED: "Chuyển vào hàng lỗi",
    DeliveryState.REPLAYED: "Cán bộ vận hành cho gửi lại",
    DeliveryState.RELATED: "Có văn bản liên quan",
}

# A delivery only moves forward: a late or redelivered event never takes it back (queued after
# fetched, say). States of equal rank replace each other (processing -> done).
_RANK = {
    DeliveryState.ACCEPTED: 0,
    DeliveryState.RETRYING: 1,
    DeliveryState.QUEUED: 2,
    # Further than queued: the relay may write "sent" before the intake's confirm writes "queued" (the
    # intake publishes, then confirms; with group commit the confirm can come after the relay's send).
    DeliveryState.SENT_TO_AXIS: 3,
    DeliveryState.FETCHED: 3,
    DeliveryState.STATUS: 3,
    DeliveryState.PROCESSING: 4,
    DeliveryState.DONE: 5,
    DeliveryState.FAIL: 5,
    DeliveryState.FAILED: 5,
    DeliveryState.DEAD_LETTERED: 5,
    # Set only by a replay (the store's ``mark_replayed``: the one step back, dead-lettered ->
    # replayed); what follows a replay (queued, sent to the axis, fetched) moves the delivery on again.
    DeliveryState.REPLAYED: 1,
    DeliveryState.RELATED: 0,
}


def may_replace(current: DeliveryState, new: DeliveryState) -> bool:
    """Whether an event in state *new* moves a delivery that is in state *current* (forward only)."""
    return current.rank <= new.rank


def replaceable_by(new: DeliveryState) -> list[DeliveryState]:
    """The states a delivery may be in for an event in state *new* to move it (the store's condition)."""
    return [state for state in _RANK if may_replace(state, new)]


@dataclass(frozen=True, slots=True)
class AcceptedDocument:
    """What the store keeps of an accepted envelope (never the body: that travels in RabbitMQ)."""

    bus_id: str
    kind: str  # "document" or "status"
    sender: str
    document_id: str
    business_type: int
    code: str | None
    subject: str | None
    accepted_at: dt.datetime
    envelope_sha256: str
    # For a status message: the OrganId of the document's sender (ResponseFor/OrganId), so that two
    # statuses about equal DocumentIds of different agencies are not taken for one.
    concerns: str | None = None

    @property
    def dedupe_key(self) -> str:
        """(sender, DocumentId, business type): the same document sent twice is one document."""
        key = f"{self.kind}|{self.sender}|{self.business_type}|{self.document_id}"
        return key if self.concerns is None else f"{key}|{self.concerns}"


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    bus_id: str
    recipient: str | None
    state: DeliveryState
    at: dt.datetime
    detail: str | None = None
    # The SHA-256 of the bytes put in the recipient's inbox (``queued``): its audit record keeps it, and
    # its delivery receipt names it (a retried intake seals the envelope again: other bytes).
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One recipient's delivery of a document: its route and where it is now."""

    recipient: str
    route: str
    state: DeliveryState
    updated_at: dt.datetime
    business_status: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One envelope in an agency's inbox. ``body_sha256`` names its envelope in the body store;
    ``body`` carries it in memory instead: a small one on its way in (the inbox worker keeps it in the
    body store), or one kept in the inbox row itself (written before the body store, issue 12)."""

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
    body_sha256: str | None = None


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
