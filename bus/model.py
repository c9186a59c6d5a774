"""Typed edXML messages (QCVN 102:2016): the document envelope and the status message.

These models are built only from XML that passed the schema and the business checks
(:mod:`bus.envelope`), so their fields are already normalised: OrganIds canonical, dates parsed.
Attachments are described, not held: their bytes stay in the XML tree until someone asks for them.
"""

from __future__ import annotations

import datetime as dt
import enum

from pydantic import BaseModel, ConfigDict

from bus.organ_id import OrganId

__all__ = [
    "Attachment",
    "Bussiness",
    "BussinessDocType",
    "Code",
    "DocumentEnvelope",
    "DocumentTypeInfo",
    "ManifestReference",
    "Organization",
    "OtherInfo",
    "Priority",
    "PromulgationInfo",
    "Receiver",
    "ReplacementInfo",
    "ResponseFor",
    "SignerInfo",
    "StaffInfo",
    "StatusCode",
    "StatusMessage",
    "SteeringType",
    "TraceHeader",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StatusCode(enum.StrEnum):
    """Status codes of a status message; :attr:`label` is what a Vietnamese clerk reads."""

    RECEIVED = "01"
    REFUSED = "02"
    ACCEPTED = "03"
    ASSIGNED = "04"
    PROCESSING = "05"
    COMPLETED = "06"
    TAKE_BACK_REQUESTED = "13"
    CHANGE_AGREED = "15"
    CHANGE_REFUSED = "16"

    @property
    def label(self) -> str:
        return _STATUS_LABELS[self]


_STATUS_LABELS = {
    StatusCode.RECEIVED: "Đã đến",
    StatusCode.REFUSED: "Từ chối tiếp nhận",
    StatusCode.ACCEPTED: "Đã tiếp nhận",
    StatusCode.ASSIGNED: "Phân công",
    StatusCode.PROCESSING: "Đang xử lý",
    StatusCode.COMPLETED: "Hoàn thành",
    StatusCode.TAKE_BACK_REQUESTED: "Đề nghị lấy lại văn bản",
    StatusCode.CHANGE_AGREED: "Đồng ý cập nhật/lấy lại",
    StatusCode.CHANGE_REFUSED: "Từ chối cập nhật/lấy lại",
}


class BussinessDocType(enum.IntEnum):
    """``Bussiness/BussinessDocType``: what this envelope does to a document."""

    NEW = 0  # Văn bản điện tử mới
    REVOCATION = 1  # Thu hồi
    UPDATE = 2  # Cập nhật
    REPLACEMENT = 3  # Thay thế


class Priority(enum.IntEnum):
    """``OtherInfo/Priority`` (độ khẩn)."""

    NORMAL = 0  # Thường
    URGENT = 1  # Khẩn
    VERY_URGENT = 2  # Thượng khẩn
    EXPRESS = 3  # Hỏa tốc
    EXPRESS_TIMED = 4  # Hỏa tốc hẹn giờ


class SteeringType(enum.IntEnum):
    NONE = 0
    DIRECTIVE = 1  # Văn bản chỉ đạo
    REPORT = 2  # Báo cáo thực hiện chỉ đạo


class Organization(_Frozen):
    organ_id: OrganId
    organization_in_charge: str | None = None
    organ_name: str | None = None
    organ_add: str | None = None
    email: str | None = None
    telephone: str | None = None
    fax: str | None = None
    website: str | None = None


class Code(_Frozen):
    number: str
    notation: str


class PromulgationInfo(_Frozen):
    place: str | None = None
    date: dt.date


class DocumentTypeInfo(_Frozen):
    type: str
    type_detail: str | None = None
    type_name: str | None = None


class SignerInfo(_Frozen):
    competence: str | None = None
    position: str | None = None
    full_name: str | None = None


class OtherInfo(_Frozen):
    priority: Priority = Priority.NORMAL
    sphere_of_promulgation: str | None = None
    typer_notation: str | None = None
    promulgation_amount: int | None = None
    page_amount: int | None = None
    direction: bool | None = None
    appendixes: tuple[str, ...] = ()


class ResponseFor(_Frozen):
    organ_id: OrganId
    code: str | None = None
    promulgation_date: dt.date | None = None
    document_id: str


class StaffInfo(_Frozen):
    department: str | None = None
    staff: str | None = None
    email: str | None = None
    mobile: str | None = None


class TraceHeader(_Frozen):
    """One hop. ``organ_id`` stays text: axes write node codes (``001.00.20.TT2``) that are no OrganId."""

    organ_id: str
    timestamp: dt.datetime


class Receiver(_Frozen):
    organ_id: OrganId
    receiver_type: str | None = None


class ReplacementInfo(_Frozen):
    document_id: str
    organ_ids: tuple[OrganId, ...] = ()


class Bussiness(_Frozen):
    document_id: str | None = None
    doc_type: BussinessDocType = BussinessDocType.NEW
    reason: str | None = None
    paper: str | None = None
    document_info: str | None = None
    document_receiver: str | None = None
    receivers: tuple[Receiver, ...] = ()
    replacements: tuple[ReplacementInfo, ...] = ()
    staff: StaffInfo | None = None


class ManifestReference(_Frozen):
    content_id: str
    content_type: str | None = None
    description: str | None = None
    attachment_name: str | None = None


class Attachment(_Frozen):
    """An attachment's description; ``encoded_size`` is the length of its base64 text."""

    content_id: str
    attachment_name: str | None = None
    description: str | None = None
    content_type: str | None = None
    encoded_size: int


class DocumentEnvelope(_Frozen):
    """A document envelope (gói tin văn bản)."""

    sender: Organization
    recipients: tuple[Organization, ...]
    document_id: str
    code: Code
    promulgation: PromulgationInfo
    document_type: DocumentTypeInfo
    subject: str
    content: str | None = None
    signer: SignerInfo | None = None
    due_date: dt.date | None = None
    to_places: tuple[str, ...] = ()
    other_info: OtherInfo | None = None
    response_for: tuple[ResponseFor, ...] = ()
    steering_type: SteeringType | None = None
    trace: tuple[TraceHeader, ...] = ()
    bussiness: Bussiness | None = None
    manifest: tuple[ManifestReference, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    @property
    def business_type(self) -> BussinessDocType:
        return self.bussiness.doc_type if self.bussiness else BussinessDocType.NEW


class StatusMessage(_Frozen):
    """A status message (gói tin trạng thái); it goes back to ``response_for.organ_id``."""

    sender: Organization
    response_for: ResponseFor
    staff: StaffInfo | None = None
    status_code: StatusCode
    description: str | None = None
    timestamp: dt.datetime
    trace: tuple[TraceHeader, ...] = ()
