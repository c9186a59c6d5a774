"""Delivery tracking in the domain: the states one recipient's copy of a document goes through.

Every change is an event on the document's timeline, with its time and, for failures, the reason.
Events carry a key that makes writing them idempotent: a worker writes the event, then acknowledges
its message; if it dies in between, the redelivered message writes the same key again and nothing is
duplicated (issue 3, "a status write and the message acknowledgement are ordered").
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

__all__ = ["AcceptedDocument", "DeliveryState", "TimelineEvent"]


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
