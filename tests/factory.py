"""Envelopes made to order for tests, demos and benchmarks (our own fixtures, not real traffic)."""

from __future__ import annotations

import base64
from xml.sax.saxutils import escape

__all__ = ["make_document", "make_status"]

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"


def _organ(tag: str, organ_id: str, name: str) -> str:
    return (
        f"<edXML:{tag}><edXML:OrganId>{organ_id}</edXML:OrganId>"
        f"<edXML:OrganName>{escape(name)}</edXML:OrganName></edXML:{tag}>"
    )


def make_document(
    sender: str,
    recipients: list[str],
    number: int,
    *,
    notation: str = "UBND-VP",
    subject: str = "V/v báo cáo tình hình chuyển đổi số",
    date: str = "2026/11/20",
    padding: int = 0,
    business_type: int = 0,
    concerns: str | None = None,
) -> bytes:
    """A document from *sender* to *recipients*; ``DocumentId`` is ``sender,date,number/notation``.

    *padding* attaches a file of about that many bytes (base64 in the envelope: size-bound tests);
    *business_type* 1-3 with *concerns* (a DocumentId) makes a revocation, update or replacement.
    """
    document_id = f"{sender},{date},{number}/{notation}"
    content = "Đề nghị các cơ quan, đơn vị báo cáo đúng hạn."
    attachment = ""
    if padding:
        data = base64.b64encode(bytes(i % 251 for i in range(padding * 3 // 4))).decode("ascii")
        attachment = (
            '<edXML:edXMLBody><edXML:edXMLManifest version="1.0"><edXML:Reference>'
            "<edXML:ContentId>cid:1</edXML:ContentId><edXML:ContentType>application/pdf</edXML:ContentType>"
            "<edXML:AttachmentName>bao-cao.pdf</edXML:AttachmentName></edXML:Reference></edXML:edXMLManifest>"
            "</edXML:edXMLBody></edXML:edXMLEnvelope><edXML:AttachmentEncoded><edXML:Attachment>"
            "<edXML:ContentId>cid:1</edXML:ContentId><edXML:AttachmentName>bao-cao.pdf</edXML:AttachmentName>"
            "<edXML:ContentType>application/pdf</edXML:ContentType>"
            f"<edXML:ContentTransferEncoded>{data}</edXML:ContentTransferEncoded>"
            "</edXML:Attachment></edXML:AttachmentEncoded>"
        )
    bussiness = ""
    if business_type:
        target = f"<edXML:DocumentId>{concerns}</edXML:DocumentId>" if concerns else ""
        replaced = (
            f"<edXML:ReplacementInfoList><edXML:ReplacementInfo><edXML:DocumentId>{concerns}"
            "</edXML:DocumentId></edXML:ReplacementInfo></edXML:ReplacementInfoList>"
            if business_type == 3
            else ""
        )
        bussiness = (
            f"<edXML:TraceHeaderList><edXML:Bussiness>{target}"
            f"<edXML:BussinessDocType>{business_type}</edXML:BussinessDocType>"
            "<edXML:BussinessDocReason>Điều chỉnh theo ý kiến chỉ đạo</edXML:BussinessDocReason>"
            f"{replaced}</edXML:Bussiness></edXML:TraceHeaderList>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<edXML:edXML xmlns:edXML="{NS}"><edXML:edXMLEnvelope><edXML:edXMLHeader><edXML:MessageHeader>'
        + _organ("From", sender, f"Cơ quan {sender}")
        + "".join(_organ("To", r, f"Cơ quan {r}") for r in recipients)
        + f"<edXML:DocumentId>{document_id}</edXML:DocumentId>"
        f"<edXML:Code><edXML:CodeNumber>{number}</edXML:CodeNumber>"
        f"<edXML:CodeNotation>{notation}</edXML:CodeNotation></edXML:Code>"
        f"<edXML:PromulgationInfo><edXML:Place>Tỉnh Mẫu</edXML:Place>"
        f"<edXML:PromulgationDate>{date}</edXML:PromulgationDate></edXML:PromulgationInfo>"
        "<edXML:DocumentType><edXML:Type>1</edXML:Type><edXML:TypeName>Công văn</edXML:TypeName>"
        "</edXML:DocumentType>"
        f"<edXML:Subject>{escape(subject)}</edXML:Subject>"
        f"<edXML:Content>{escape(content)}</edXML:Content>"
        f"</edXML:MessageHeader>{bussiness}</edXML:edXMLHeader>"
        + (attachment or "</edXML:edXMLEnvelope>")
        + "</edXML:edXML>"
    ).encode("utf-8")


def make_status(
    sender: str,
    document_sender: str,
    document_id: str,
    code: str,
    *,
    description: str = "Đã tiếp nhận văn bản",
    timestamp: str = "2026/11/21 08:15:00",
) -> bytes:
    """A status message from *sender* about *document_id*, which *document_sender* sent."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<edXML:edXML xmlns:edXML="{NS}"><edXML:edXMLEnvelope><edXML:edXMLHeader><edXML:MessageHeader>'
        + _organ("From", sender, f"Cơ quan {sender}")
        + f"<edXML:ResponseFor><edXML:OrganId>{document_sender}</edXML:OrganId>"
        f"<edXML:DocumentId>{document_id}</edXML:DocumentId></edXML:ResponseFor>"
        f"<edXML:StatusCode>{code}</edXML:StatusCode>"
        f"<edXML:Description>{escape(description)}</edXML:Description>"
        f"<edXML:Timestamp>{timestamp}</edXML:Timestamp>"
        "</edXML:MessageHeader></edXML:edXMLHeader></edXML:edXMLEnvelope></edXML:edXML>"
    ).encode("utf-8")
