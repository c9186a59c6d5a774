"""Build the typed model from an edXML tree while collecting every business problem.

Each ``_read_*`` function reads one part of the envelope through a :class:`~bus.checks.Collector`:
when a field is wrong it records a problem and returns ``None``, and reading goes on, so that one
call reports all problems at once. The model is built only when no problem was found.
"""

from __future__ import annotations

from lxml import etree

from bus.attachments import read_attachments, read_manifest
from bus.checks import NS, Collector
from bus.checks import element_path as _path
from bus.errors import EnvelopeInvalidError, Problem
from bus.model import (
    Bussiness,
    BussinessDocType,
    Code,
    DocumentEnvelope,
    DocumentTypeInfo,
    Organization,
    OtherInfo,
    Priority,
    PromulgationInfo,
    Receiver,
    ReplacementInfo,
    ResponseFor,
    SignerInfo,
    StaffInfo,
    StatusCode,
    StatusMessage,
    SteeringType,
    TraceHeader,
)

__all__ = ["read_document", "read_status"]

_LIMITS = {
    "Subject": 500,
    "Content": 500,
    "CodeNumber": 11,
    "CodeNotation": 30,
    "OrganName": 200,
    "OrganAdd": 500,
    "Place": 50,
    "TypeName": 100,
    "AttachmentName": 500,
    "Description": 500,
}
# Contact fields: the hub's indicative limits, which real accepted traffic exceeds (a 27-character
# Website in an envelope the national axis delivered): over the limit is a warning, not a rejection.
_SOFT_LIMITS = {"Email": 100, "Telephone": 20, "Fax": 20, "Website": 20}


def _header(root: etree._Element) -> tuple[etree._Element, etree._Element]:
    """``(edXMLHeader, MessageHeader)``; the schema has already required both."""
    header = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader")
    message = None if header is None else header.find(f"{{{NS}}}MessageHeader")
    if header is None or message is None:
        path = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
        raise EnvelopeInvalidError([Problem("missing", path, "MessageHeader is required")])
    return header, message


def _read_organization(c: Collector, element: etree._Element, *, role: str) -> Organization | None:
    organ_id = c.organ_id(element)
    name = c.text(element, "OrganName", required=role == "From", max_len=_LIMITS["OrganName"])
    fields = {
        "organization_in_charge": c.text(element, "OrganizationInCharge", max_len=_LIMITS["OrganName"]),
        "organ_add": c.text(element, "OrganAdd", max_len=_LIMITS["OrganAdd"]),
        **{key.lower(): c.text(element, key, max_len=n, soft_max=True) for key, n in _SOFT_LIMITS.items()},
    }
    if organ_id is None:
        return None
    return Organization(organ_id=organ_id, organ_name=name, **fields)


def _read_response_for(c: Collector, element: etree._Element, *, required: bool) -> ResponseFor | None:
    if not required and not any(child.text and child.text.strip() for child in element):
        return None  # the axis sends an empty <ResponseFor/> on new documents
    organ_id = c.organ_id(element)
    document_id = c.text(element, "DocumentId", required=True, max_len=200)
    code = c.text(element, "Code")
    date = c.date(element, "PromulgationDate", required=False, not_future=True)
    if organ_id is None or document_id is None:
        return None
    return ResponseFor(organ_id=organ_id, code=code, promulgation_date=date, document_id=document_id)


def _read_staff(c: Collector, element: etree._Element | None) -> StaffInfo | None:
    if element is None:
        return None
    return StaffInfo(
        department=c.text(element, "Department"),
        staff=c.text(element, "Staff"),
        email=c.text(element, "Email"),
        mobile=c.text(element, "Mobile"),
    )


def _read_trace(c: Collector, header: etree._Element) -> tuple[list[TraceHeader], etree._Element | None]:
    trace_list = c.one(header, "TraceHeaderList", required=False)
    if trace_list is None:
        return [], None
    hops: list[TraceHeader] = []
    for element in c.children(trace_list, "TraceHeader"):
        organ = c.text(element, "OrganId", required=True)
        stamp = c.timestamp(element, required=True)
        if organ is not None and stamp is not None:
            hops.append(TraceHeader(organ_id=organ, timestamp=stamp))
    return hops, c.one(trace_list, "Bussiness", required=False)


def _read_bussiness(c: Collector, element: etree._Element | None) -> Bussiness | None:
    if element is None:
        return None
    doc_type = c.choice(
        element,
        "BussinessDocType",
        lambda v: BussinessDocType(int(v)),
        "0 new, 1 revocation, 2 update, 3 replacement",
    )
    receivers: list[Receiver] = []
    info = c.one(element, "BussinessDocumentInfo", required=False)
    receiver_list = c.one(info, "ReceiverList", required=False) if info is not None else None
    for receiver in c.children(receiver_list, "Receiver") if receiver_list is not None else []:
        if (organ := c.organ_id(receiver)) is not None:
            receivers.append(Receiver(organ_id=organ, receiver_type=c.text(receiver, "ReceiverType")))
    replacements: list[ReplacementInfo] = []
    replacement_list = c.one(element, "ReplacementInfoList", required=False)
    for item in c.children(replacement_list, "ReplacementInfo") if replacement_list is not None else []:
        document_id = c.text(item, "DocumentId", required=True, max_len=200)
        organ_list = c.one(item, "OrganIdList", required=False)
        organs = [] if organ_list is None else [c.organ_id_of(e) for e in c.children(organ_list, "OrganId")]
        if document_id is not None:
            replacements.append(
                ReplacementInfo(document_id=document_id, organ_ids=tuple(o for o in organs if o))
            )
    if doc_type == BussinessDocType.REPLACEMENT and not replacements:
        c.error(
            "missing",
            element,
            "a replacement (BussinessDocType 3) must name the replaced documents "
            "in ReplacementInfoList/ReplacementInfo",
        )
    return Bussiness(
        document_id=c.text(element, "DocumentId", max_len=200),
        doc_type=doc_type if doc_type is not None else BussinessDocType.NEW,
        reason=c.text(element, "BussinessDocReason"),
        paper=c.text(element, "Paper"),
        document_info=c.text(info, "DocumentInfo") if info is not None else None,
        document_receiver=c.text(info, "DocumentReceiver") if info is not None else None,
        receivers=tuple(receivers),
        replacements=tuple(replacements),
        staff=_read_staff(c, c.one(element, "StaffInfo", required=False)),
    )


def _read_recipients(c: Collector, message: etree._Element) -> list[Organization]:
    elements = c.children(message, "To")
    if not elements:
        c.error("missing", f"{_path(message)}/To", "at least one recipient (To) is required")
    recipients: list[Organization] = []
    seen: dict[str, int] = {}
    for index, element in enumerate(elements, start=1):
        organization = _read_organization(c, element, role="To")
        if organization is None:
            continue
        key = str(organization.organ_id)
        if key in seen:
            c.error("duplicate-recipient", element, f"recipient {key} is already To[{seen[key]}]")
            continue
        seen[key] = index
        recipients.append(organization)
    return recipients


def _read_other_info(c: Collector, element: etree._Element | None) -> OtherInfo | None:
    if element is None:
        return None
    priority = c.choice(
        element,
        "Priority",
        lambda v: Priority(int(v)),
        "0 normal, 1 urgent, 2 very urgent, 3 express, 4 timed express",
    )
    direction = c.choice(element, "Direction", _boolean, "true or false")
    appendixes = c.one(element, "Appendixes", required=False)
    texts = [] if appendixes is None else [(a.text or "").strip() for a in c.children(appendixes, "Appendix")]
    return OtherInfo(
        priority=priority if priority is not None else Priority.NORMAL,
        sphere_of_promulgation=c.text(element, "SphereOfPromulgation"),
        typer_notation=c.text(element, "TyperNotation"),
        promulgation_amount=c.integer(element, "PromulgationAmount"),
        page_amount=c.integer(element, "PageAmount"),
        direction=direction,
        appendixes=tuple(t for t in texts if t),
    )


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(text)


def read_document(root: etree._Element, c: Collector) -> DocumentEnvelope | None:
    """Read a document envelope; ``None`` (with problems in *c*) when anything is wrong."""
    header, message = _header(root)
    sender_el = c.one(message, "From", required=True)
    sender = _read_organization(c, sender_el, role="From") if sender_el is not None else None
    recipients = _read_recipients(c, message)
    document_id = c.text(message, "DocumentId", required=True, max_len=200)
    code_el = c.one(message, "Code", required=True)
    number = notation = None
    if code_el is not None:
        number = c.text(code_el, "CodeNumber", required=True, max_len=_LIMITS["CodeNumber"])
        notation = c.text(code_el, "CodeNotation", required=True, max_len=_LIMITS["CodeNotation"])
    promulgation_el = c.one(message, "PromulgationInfo", required=True)
    place = date = None
    if promulgation_el is not None:
        place = c.text(promulgation_el, "Place", max_len=_LIMITS["Place"])
        date = c.date(promulgation_el, "PromulgationDate", required=True, not_future=True)
    type_el = c.one(message, "DocumentType", required=True)
    doc_type = None
    if type_el is not None:
        kind = c.text(type_el, "Type", required=True)
        if kind is not None:
            doc_type = DocumentTypeInfo(
                type=kind,
                type_detail=c.text(type_el, "TypeDetail"),
                type_name=c.text(type_el, "TypeName", max_len=_LIMITS["TypeName"]),
            )
    subject = c.text(message, "Subject", required=True, max_len=_LIMITS["Subject"])
    content = c.text(message, "Content", max_len=_LIMITS["Content"])
    signer_el = c.one(message, "SignerInfo", required=False)
    signer = (
        None
        if signer_el is None
        else SignerInfo(
            competence=c.text(signer_el, "Competence"),
            position=c.text(signer_el, "Position"),
            full_name=c.text(signer_el, "FullName"),
        )
    )
    due_date = c.date(message, "DueDate", required=False, not_future=False)
    places_el = c.one(message, "ToPlaces", required=False)
    places = (
        []
        if places_el is None
        else [
            p for p in (c.text_of(e, max_len=_LIMITS["Place"]) for e in c.children(places_el, "Place")) if p
        ]
    )
    other_info = _read_other_info(c, c.one(message, "OtherInfo", required=False))
    response_for = [
        r for e in c.children(message, "ResponseFor") if (r := _read_response_for(c, e, required=False))
    ]
    steering = c.choice(
        message,
        "SteeringType",
        lambda v: SteeringType(int(v)),
        "0 none, 1 directive, 2 report on a directive",
    )
    trace, bussiness_el = _read_trace(c, header)
    bussiness = _read_bussiness(c, bussiness_el)
    changes = (BussinessDocType.REVOCATION, BussinessDocType.UPDATE)
    if (
        bussiness is not None
        and bussiness.doc_type in changes
        and not (response_for or bussiness.document_id)
    ):
        c.error(
            "missing",
            bussiness_el if bussiness_el is not None else message,
            "a revocation or update must name the document it concerns "
            "(ResponseFor/DocumentId or Bussiness/DocumentId)",
        )
    manifest = read_manifest(c, root)
    attachments = read_attachments(c, root, manifest)
    if (
        c.problems or sender is None or document_id is None or number is None or notation is None
        or date is None or doc_type is None or subject is None
    ):  # fmt: skip
        return None
    return DocumentEnvelope(
        sender=sender,
        recipients=tuple(recipients),
        document_id=document_id,
        code=Code(number=number, notation=notation),
        promulgation=PromulgationInfo(place=place, date=date),
        document_type=doc_type,
        subject=subject,
        content=content,
        signer=signer,
        due_date=due_date,
        to_places=tuple(places),
        other_info=other_info,
        response_for=tuple(response_for),
        steering_type=steering,
        trace=tuple(trace),
        bussiness=bussiness,
        manifest=tuple(manifest),
        attachments=tuple(attachments),
    )


def read_status(root: etree._Element, c: Collector) -> StatusMessage | None:
    """Read a status message; ``None`` (with problems in *c*) when anything is wrong."""
    header, message = _header(root)
    sender_el = c.one(message, "From", required=True)
    sender = _read_organization(c, sender_el, role="From") if sender_el is not None else None
    response_el = c.one(message, "ResponseFor", required=True)
    response_for = _read_response_for(c, response_el, required=True) if response_el is not None else None
    status_code = c.choice(
        message,
        "StatusCode",
        _status_code,
        "one of " + ", ".join(f"{s.value} ({s.label})" for s in StatusCode),
    )
    if status_code is None and not c.children(message, "StatusCode"):
        c.error("missing", f"{_path(message)}/StatusCode", "StatusCode is required")
    reason_needed = status_code in (StatusCode.REFUSED, StatusCode.TAKE_BACK_REQUESTED)
    description = c.text(message, "Description", required=reason_needed, max_len=_LIMITS["Description"])
    timestamp = c.timestamp(message, required=True)
    staff = _read_staff(c, c.one(message, "StaffInfo", required=False))
    trace, _ = _read_trace(c, header)
    if c.problems or sender is None or response_for is None or status_code is None or timestamp is None:
        return None
    return StatusMessage(
        sender=sender,
        response_for=response_for,
        staff=staff,
        status_code=status_code,
        description=description,
        timestamp=timestamp,
        trace=tuple(trace),
    )


def _status_code(text: str) -> StatusCode:
    return StatusCode(text)
