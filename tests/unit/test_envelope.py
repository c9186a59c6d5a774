"""Schema and business checks: good envelopes read into the model, bad ones report every problem."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from lxml import etree

from bus.envelope import EnvelopeKind, read_envelope
from bus.errors import EnvelopeInvalidError, Problem
from bus.model import BussinessDocType, DocumentEnvelope, Priority, StatusCode, StatusMessage
from bus.organ_id import OrganId
from tests.conftest import TODAY, edit, q

HEADER = "edXMLEnvelope/edXMLHeader/MessageHeader"


def _problems(data: bytes, today: dt.date = TODAY) -> list[Problem]:
    with pytest.raises(EnvelopeInvalidError) as caught:
        read_envelope(data, today=today)
    return list(caught.value.problems)


def _set(path: str, text: str) -> object:
    def change(root: etree._Element) -> None:
        node = root.find(q(path))
        assert node is not None, path
        node.text = text

    return change


def test_example_document_reads_into_the_model(document_bytes: bytes) -> None:
    parsed = read_envelope(document_bytes, today=TODAY)
    assert parsed.kind is EnvelopeKind.DOCUMENT
    assert parsed.warnings == ()
    message = parsed.message
    assert isinstance(message, DocumentEnvelope)
    assert message.sender.organ_id == OrganId.parse("000.00.00.H99")
    assert [str(r.organ_id) for r in message.recipients] == ["000.00.21.H99", "000.01.21.H99"]
    assert message.code.notation == "UBND-KGVX"
    assert message.promulgation.date == dt.date(2026, 11, 20)
    assert message.other_info is not None
    assert message.other_info.priority is Priority.URGENT
    assert message.business_type is BussinessDocType.NEW
    assert message.attachments[0].content_id == message.manifest[0].content_id == "cid:ke-hoach-1"
    assert message.signer is not None
    assert message.signer.full_name == "Nguyễn Văn Ánh"


def test_example_status_reads_into_the_model(status_bytes: bytes) -> None:
    parsed = read_envelope(status_bytes, today=TODAY)
    message = parsed.message
    assert parsed.kind is EnvelopeKind.STATUS
    assert isinstance(message, StatusMessage)
    assert message.status_code is StatusCode.ACCEPTED
    assert message.status_code.label == "Đã tiếp nhận"
    assert str(message.response_for.organ_id) == "000.00.00.H99"
    assert message.timestamp.utcoffset() == dt.timedelta(hours=7)


def test_status_codes_have_vietnamese_labels() -> None:
    assert {s.value: s.label for s in StatusCode} == {
        "01": "Đã đến",
        "02": "Từ chối tiếp nhận",
        "03": "Đã tiếp nhận",
        "04": "Phân công",
        "05": "Đang xử lý",
        "06": "Hoàn thành",
        "13": "Đề nghị lấy lại văn bản",
        "15": "Đồng ý cập nhật/lấy lại",
        "16": "Từ chối cập nhật/lấy lại",
    }


def test_every_problem_is_reported_at_once_with_path_and_line(document_bytes: bytes) -> None:
    def break_many(root: etree._Element) -> None:
        message = root.find(q(HEADER))
        assert message is not None
        message.remove(message.find(q("Subject")))  # type: ignore[arg-type]
        message.find(q("PromulgationInfo/PromulgationDate")).text = "2099/01/01"  # type: ignore[union-attr]
        message.find(q("OtherInfo/Priority")).text = "7"  # type: ignore[union-attr]
        message.find(q("Code/CodeNotation")).text = "X" * 31  # type: ignore[union-attr]
        second = message.findall(q("To"))[1]
        second.find(q("OrganId")).text = "000.00.21.H99"  # type: ignore[union-attr]
        message.find(q("From/OrganId")).text = "28.22.H17x"  # type: ignore[union-attr]

    problems = _problems(edit(document_bytes, break_many))
    by_code = {p.code: p for p in problems}
    assert set(by_code) == {"missing", "date-future", "value", "too-long", "duplicate-recipient", "organ-id"}
    assert by_code["missing"].path == "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/Subject"
    assert by_code["duplicate-recipient"].path.endswith("/MessageHeader/To[2]")
    assert "already To[1]" in by_code["duplicate-recipient"].message
    assert "0 normal" in by_code["value"].message
    assert "31 characters; at most 30" in by_code["too-long"].message
    assert all(p.line for p in problems if p.code != "missing")


def test_dd_mm_yyyy_date_gets_a_hint(document_bytes: bytes) -> None:
    [problem] = _problems(
        edit(document_bytes, _set(f"{HEADER}/PromulgationInfo/PromulgationDate", "30/10/2020"))
    )
    assert problem.code == "date-format"
    assert "yyyy/MM/dd" in problem.message
    assert "write 2020/10/30" in problem.message


@pytest.mark.parametrize("value", ["2026/02/30", "2026/13/01"])
def test_impossible_dates_are_refused(document_bytes: bytes, value: str) -> None:
    [problem] = _problems(edit(document_bytes, _set(f"{HEADER}/PromulgationInfo/PromulgationDate", value)))
    assert problem.code == "date-invalid"


def test_element_order_of_real_producers_is_accepted(document_bytes: bytes) -> None:
    def reorder(root: etree._Element) -> None:
        message = root.find(q(HEADER))
        assert message is not None
        steering = message.find(q("SteeringType"))
        to_places = message.find(q("ToPlaces"))
        assert steering is not None
        assert to_places is not None
        to_places.addprevious(steering)  # SteeringType before ToPlaces
        message.append(message.find(q("From")))  # type: ignore[arg-type]
        code = message.find(q("Code"))
        assert code is not None
        code.append(code.find(q("CodeNumber")))  # type: ignore[arg-type]

    parsed = read_envelope(edit(document_bytes, reorder), today=TODAY)
    assert isinstance(parsed.message, DocumentEnvelope)
    assert parsed.message.code.number == "1234"


def test_unknown_element_is_a_schema_problem_with_its_path(document_bytes: bytes) -> None:
    def add(root: etree._Element) -> None:
        etree.SubElement(root.find(q(HEADER)), q("Unknown")).text = "?"  # type: ignore[arg-type]

    [problem] = _problems(edit(document_bytes, add))
    assert problem.code == "schema"
    assert "Unknown" in problem.message
    assert problem.path == "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/Unknown"
    assert "{" not in problem.message  # namespace URIs are noise for a clerk


def test_wrong_root_is_refused(document_bytes: bytes) -> None:
    [problem] = _problems(b'<edXML xmlns="urn:other"><x/></edXML>')
    assert problem.code == "root"
    assert "http://www.mic.gov.vn/TBT/QCVN_102_2016" in problem.message


def test_short_form_organ_id_is_normalised_with_a_warning(document_bytes: bytes) -> None:
    parsed = read_envelope(edit(document_bytes, _set(f"{HEADER}/To/OrganId", "28.22.H17")), today=TODAY)
    assert isinstance(parsed.message, DocumentEnvelope)
    assert str(parsed.message.recipients[0].organ_id) == "000.28.22.H17"
    [warning] = parsed.warnings
    assert warning.code == "organ-id-short"
    assert warning.path.endswith("To[1]/OrganId")


def test_no_recipient_is_a_problem(document_bytes: bytes) -> None:
    def drop(root: etree._Element) -> None:
        message = root.find(q(HEADER))
        for to in message.findall(q("To")):  # type: ignore[union-attr]
            message.remove(to)  # type: ignore[union-attr]

    [problem] = _problems(edit(document_bytes, drop))
    assert problem.code == "missing"
    assert "at least one recipient" in problem.message


def test_repeated_single_element_is_a_problem(document_bytes: bytes) -> None:
    def repeat(root: etree._Element) -> None:
        message = root.find(q(HEADER))
        message.append(copy.deepcopy(message.find(q("Subject"))))  # type: ignore[union-attr, arg-type]

    [problem] = _problems(edit(document_bytes, repeat))
    assert problem.code == "repeated"
    assert "Subject appears 2 times" in problem.message


def test_manifest_entry_without_attachment_is_a_problem(document_bytes: bytes) -> None:
    [problem] = _problems(edit(document_bytes, _set("AttachmentEncoded/Attachment/ContentId", "cid:khac")))
    assert problem.code == "attachment-missing"
    assert "cid:ke-hoach-1" in problem.message


@pytest.mark.parametrize(
    ("reference", "attachment"),
    [
        ("cid:1", "1"),  # RFC 2392 URL in the manifest, bare Content-ID on the attachment (the SDK)
        ("1", "cid:1"),  # ... and the other way round
        ("CID:ke%20hoach", "ke hoach"),  # the scheme is case-insensitive, the rest %-encoded
        ("cid:1", "<1>"),  # a MIME header's angle brackets are not part of the id
    ],
)
def test_manifest_reference_by_cid_url_names_the_attachment(
    document_bytes: bytes, reference: str, attachment: str
) -> None:
    data = edit(document_bytes, _set("edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId", reference))
    data = edit(data, _set("AttachmentEncoded/Attachment/ContentId", attachment))
    parsed = read_envelope(data, today=TODAY)
    assert parsed.warnings == ()  # neither "missing" nor "unlisted"
    assert isinstance(parsed.message, DocumentEnvelope)
    assert parsed.message.attachments[0].content_id == attachment  # kept as written


@pytest.mark.parametrize(
    ("reference", "attachment"), [("cid:1", "2"), ("cid:1", "cid:11"), ("1", "cid:%31x")]
)
def test_manifest_reference_by_cid_url_still_refuses_a_real_mismatch(
    document_bytes: bytes, reference: str, attachment: str
) -> None:
    data = edit(document_bytes, _set("edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId", reference))
    [problem] = _problems(edit(data, _set("AttachmentEncoded/Attachment/ContentId", attachment)))
    assert problem.code == "attachment-missing"
    assert repr(reference) in problem.message


def test_two_spellings_of_one_content_id_are_ambiguous(document_bytes: bytes) -> None:
    """Attachments '1' and '<1>' both answer a reference to 'cid:1': which file is meant?"""

    def second_attachment(root: etree._Element) -> None:
        attachment = root.find(q("AttachmentEncoded/Attachment"))
        assert attachment is not None
        twin = copy.deepcopy(attachment)
        twin.find(q("ContentId")).text = "<1>"  # type: ignore[union-attr]
        attachment.find(q("ContentId")).text = "1"  # type: ignore[union-attr]
        attachment.addnext(twin)

    data = edit(document_bytes, _set("edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId", "cid:1"))
    problems = _problems(edit(data, second_attachment))
    assert [p.code for p in problems] == ["attachment-ambiguous"]
    assert "'1' and '<1>'" in problems[0].message


@pytest.mark.parametrize("value", ["*!*", "abc", "QUJD=", "QU=D", " "])
def test_corrupt_attachment_base64_is_refused(document_bytes: bytes, value: str) -> None:
    path = "AttachmentEncoded/Attachment/ContentTransferEncoded"
    [problem] = _problems(edit(document_bytes, _set(path, value)))
    assert problem.code == "attachment-base64"
    assert problem.path.endswith("/Attachment/ContentTransferEncoded")


def test_revocation_must_name_its_document(document_bytes: bytes) -> None:
    path = "edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness/BussinessDocType"
    [problem] = _problems(edit(document_bytes, _set(path, "1")))
    assert "must name the document it concerns" in problem.message


def test_revocation_naming_its_document_is_accepted(document_bytes: bytes) -> None:
    def revoke(root: etree._Element) -> None:
        _set("edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness/BussinessDocType", "1")(root)  # type: ignore[operator]
        bussiness = root.find(q("edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness"))
        etree.SubElement(bussiness, q("DocumentId")).text = "000.00.00.H99,2026/11/20,1234/UBND-KGVX"  # type: ignore[arg-type]

    parsed = read_envelope(edit(document_bytes, revoke), today=TODAY)
    assert isinstance(parsed.message, DocumentEnvelope)
    assert parsed.message.business_type is BussinessDocType.REVOCATION


def test_unknown_status_code_lists_the_allowed_ones(status_bytes: bytes) -> None:
    [problem] = _problems(edit(status_bytes, _set(f"{HEADER}/StatusCode", "07")))
    assert "'07' is not allowed" in problem.message
    assert "13 (Đề nghị lấy lại văn bản)" in problem.message


def test_refusal_needs_a_reason(status_bytes: bytes) -> None:
    def refuse(root: etree._Element) -> None:
        message = root.find(q(HEADER))
        message.find(q("StatusCode")).text = "02"  # type: ignore[union-attr]
        message.remove(message.find(q("Description")))  # type: ignore[union-attr, arg-type]

    [problem] = _problems(edit(status_bytes, refuse))
    assert problem.path.endswith("/Description")
    assert problem.code == "missing"


def test_status_timestamp_format(status_bytes: bytes) -> None:
    [problem] = _problems(edit(status_bytes, _set(f"{HEADER}/Timestamp", "2026-11-21T08:15:00")))
    assert problem.code == "timestamp-format"
    assert "yyyy/MM/dd HH:mm:ss" in problem.message
