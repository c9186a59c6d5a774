"""XML signatures: sign, verify, survive hops, and catch tampering, swapped keys and wrapping."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from bus.checks import NS
from bus.dsig import SignatureConfig, TrustStore, find_signatures, sign_tree, signature_template, verify_tree
from bus.dsig.profile import DSIG_NS, FILTER2_NS
from bus.dsig.transform import signed_bytes
from bus.envelope import check_tree
from bus.errors import (
    CertificateError,
    EnvelopeInvalidError,
    SignatureError,
    SignatureMissingError,
    WeakAlgorithmError,
)
from bus.trace import append_trace
from bus.xmlparse import parse_untrusted
from tests.conftest import TODAY, Pki, q

RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


def _signed(data: bytes, pki: Pki, kind: str = "ec") -> etree._ElementTree:
    tree = parse_untrusted(data)
    signer = pki.signer(kind)
    sign_tree(tree, signer.key, signer.certificate)
    return _reparse(tree)


def _reparse(tree: etree._ElementTree) -> etree._ElementTree:
    """What a recipient gets: the serialised bytes, parsed again."""
    return parse_untrusted(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))


def _trust(pki: Pki) -> TrustStore:
    return TrustStore([pki.ca.certificate])


def _ds(path: str) -> str:
    return "/".join(f"{{{DSIG_NS}}}{step}" for step in path.split("/"))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_sign_then_verify_returns_what_was_signed(document_bytes: bytes, pki: Pki, kind: str) -> None:
    tree = _signed(document_bytes, pki, kind)
    [result] = verify_tree(tree, _trust(pki))
    assert result.signer == pki.signer(kind).certificate
    assert result.chain[-1] == pki.ca.certificate
    signed = check_tree(parse_untrusted(result.signed_xml), today=TODAY)
    assert signed.message.subject == "V/v triển khai kế hoạch chuyển đổi số năm 2027"  # type: ignore[union-attr]
    assert b"<ds:Signature" not in result.signed_xml
    assert b"TraceHeader>" not in result.signed_xml
    assert b"Bussiness" in result.signed_xml  # the business block stays signed


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_signature_survives_three_trace_headers(document_bytes: bytes, pki: Pki, kind: str) -> None:
    tree = _signed(document_bytes, pki, kind)
    for hop in ("000.00.90.H99", "000.00.00.G22", "000.00.90.H98"):
        append_trace(tree, hop, dt.datetime(2026, 11, 22, 9, 30, tzinfo=dt.UTC))
        tree = _reparse(tree)
    hops = tree.findall(q("edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader"))
    assert [h.findtext(q("OrganId")) for h in hops] == ["000.00.90.H99", "000.00.00.G22", "000.00.90.H98"]
    assert hops[0].findtext(q("Timestamp")) == "2026/11/22 16:30:00"  # local time, UTC+7
    [result] = verify_tree(tree, _trust(pki))
    assert result.covers_trace is False


def test_status_message_without_trace_list_gets_one_before_signing(status_bytes: bytes, pki: Pki) -> None:
    tree = _signed(status_bytes, pki)
    assert tree.find(q("edXMLEnvelope/edXMLHeader/TraceHeaderList")) is not None
    append_trace(tree, "000.00.90.H99")
    assert len(verify_tree(_reparse(tree), _trust(pki))) == 1


def test_bus_countersignature_keeps_the_senders_signature_valid(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki, "rsa")
    append_trace(tree, "000.00.90.H99")
    sign_tree(tree, pki.ec.key, pki.ec.certificate)
    results = verify_tree(_reparse(tree), _trust(pki))
    assert [r.signer for r in results] == [pki.rsa.certificate, pki.ec.certificate]
    assert results[0].signed_xml == results[1].signed_xml


@pytest.mark.parametrize(
    ("path", "new_text"),
    [
        pytest.param("edXMLEnvelope/edXMLHeader/MessageHeader/Subject", "V/v khác", id="subject"),
        pytest.param("edXMLEnvelope/edXMLHeader/MessageHeader/From/OrganId", "000.00.02.H99", id="sender"),
        pytest.param("edXMLEnvelope/edXMLHeader/MessageHeader/To/OrganId", "000.00.22.H99", id="recipient"),
        pytest.param(
            "edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness/BussinessDocType", "1", id="business-type"
        ),
        pytest.param("AttachmentEncoded/Attachment/ContentTransferEncoded", "UEsDBAo=", id="attachment"),
        pytest.param(
            "edXMLEnvelope/edXMLBody/edXMLManifest/Reference/AttachmentName", "x.exe", id="manifest"
        ),
    ],
)
def test_tampering_with_a_signed_field_is_detected(
    document_bytes: bytes, pki: Pki, path: str, new_text: str
) -> None:
    tree = _signed(document_bytes, pki)
    node = tree.find(q(path))
    assert node is not None
    assert node.text != new_text
    node.text = new_text
    with pytest.raises(SignatureError, match="DigestValue does not match"):
        verify_tree(_reparse(tree), _trust(pki))


def test_nfd_instead_of_nfc_is_a_change(document_bytes: bytes, pki: Pki) -> None:
    """Same words, other bytes: a signature covers bytes, so re-normalising text breaks it."""
    import unicodedata

    tree = _signed(document_bytes, pki)
    subject = tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader/Subject"))
    assert subject is not None
    assert subject.text is not None
    subject.text = unicodedata.normalize("NFD", subject.text)
    with pytest.raises(SignatureError, match="DigestValue does not match"):
        verify_tree(_reparse(tree), _trust(pki))


def test_a_forged_recipient_added_is_detected(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki)
    message = tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader"))
    assert message is not None
    extra = copy.deepcopy(message.find(q("To")))
    assert extra is not None
    message.insert(2, extra)
    with pytest.raises(SignatureError, match="DigestValue does not match"):
        verify_tree(_reparse(tree), _trust(pki))


def test_changed_signed_info_is_detected(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki)
    digest = tree.find(f".//{_ds('DigestValue')}")
    assert digest is not None
    # A digest that matches a different document: SignatureValue no longer covers SignedInfo.
    digest.text = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(SignatureError, match="does not match"):
        verify_tree(_reparse(tree), _trust(pki))


def test_swapped_certificate_is_detected(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki, "ec")
    cert = tree.find(f".//{_ds('KeyInfo/X509Data/X509Certificate')}")
    assert cert is not None
    other = pki.via_intermediate.certificate.public_bytes(serialization.Encoding.DER)
    cert.text = base64.b64encode(other).decode()
    # The other certificate's key does not check the value (or, here, does not even chain).
    with pytest.raises(SignatureError):
        verify_tree(_reparse(tree), TrustStore([pki.ca.certificate, pki.intermediate.certificate]))


def test_swapped_certificate_of_the_same_ca_fails_on_the_value(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki, "rsa")
    cert = tree.find(f".//{_ds('KeyInfo/X509Data/X509Certificate')}")
    assert cert is not None
    impostor = issue_rsa_twin(pki)
    cert.text = base64.b64encode(impostor).decode()
    with pytest.raises(SignatureError, match="SignatureValue does not match"):
        verify_tree(_reparse(tree), _trust(pki))


def issue_rsa_twin(pki: Pki) -> bytes:
    from bus.pki import issue_certificate

    twin = issue_certificate(pki.ca, "UBND tỉnh Mẫu", "000.00.00.H99", kind="rsa")
    return twin.certificate.public_bytes(serialization.Encoding.DER)


def test_untrusted_ca_is_refused(document_bytes: bytes, pki: Pki) -> None:
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.untrusted.key, pki.untrusted.certificate)
    with pytest.raises(CertificateError, match="does not chain to a trusted CA"):
        verify_tree(_reparse(tree), _trust(pki))


def test_expired_certificate_is_refused(document_bytes: bytes, pki: Pki) -> None:
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.expired.key, pki.expired.certificate)
    with pytest.raises(CertificateError, match="expired on 2020-01-31"):
        verify_tree(_reparse(tree), _trust(pki))


def test_chain_through_an_intermediate(document_bytes: bytes, pki: Pki) -> None:
    tree = parse_untrusted(document_bytes)
    leaf = pki.via_intermediate
    sign_tree(tree, leaf.key, leaf.certificate, [pki.intermediate.certificate])
    [result] = verify_tree(_reparse(tree), _trust(pki))
    assert result.chain == (leaf.certificate, pki.intermediate.certificate, pki.ca.certificate)
    alone = parse_untrusted(document_bytes)
    sign_tree(alone, leaf.key, leaf.certificate)
    with pytest.raises(CertificateError, match="does not chain"):
        verify_tree(_reparse(alone), _trust(pki))


def test_a_ca_certificate_cannot_stand_in_as_an_intermediate_without_ca_flag(
    document_bytes: bytes, pki: Pki
) -> None:
    from bus.pki import issue_certificate

    # A leaf (CA:false) used to issue another certificate must not be accepted as an issuer.
    fake_issuer = issue_certificate(pki.ca, "Không phải CA", "000.00.03.H99")
    child = issue_certificate(fake_issuer, "Con", "000.00.01.H99")
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, child.key, child.certificate, [fake_issuer.certificate])
    with pytest.raises(CertificateError, match="not a CA"):
        verify_tree(_reparse(tree), _trust(pki))


def test_unsigned_envelope_is_reported_missing(document_bytes: bytes, pki: Pki) -> None:
    with pytest.raises(SignatureMissingError, match="no ds:Signature"):
        verify_tree(parse_untrusted(document_bytes), _trust(pki))


# --- signature wrapping ----------------------------------------------------------------------------


def test_signature_moved_out_of_the_header_is_refused(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki)
    [signature] = find_signatures(tree.getroot())
    message = tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader"))
    assert message is not None
    message.append(signature)
    with pytest.raises(SignatureError, match="not a child of edXMLHeader"):
        verify_tree(_reparse(tree), _trust(pki))


def test_original_hidden_in_signature_and_forgery_in_place_is_detected(
    document_bytes: bytes, pki: Pki
) -> None:
    """Classic wrapping: keep the signed original inside ds:Object, put a forged header in its place."""
    tree = _signed(document_bytes, pki)
    [signature] = find_signatures(tree.getroot())
    header = tree.find(q("edXMLEnvelope/edXMLHeader"))
    message = tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader"))
    assert header is not None
    assert message is not None
    forged = copy.deepcopy(message)
    subject = forged.find(q("Subject"))
    assert subject is not None
    subject.text = "Lệnh chuyển tiền khẩn"
    holder = etree.SubElement(signature, f"{{{DSIG_NS}}}Object")
    holder.append(message)
    header.insert(0, forged)
    with pytest.raises(
        SignatureError,
        match=r"MessageHeader at line \d+ inside ds:Signature is refused: not allowed in Object",
    ):
        verify_tree(_reparse(tree), _trust(pki))


@pytest.mark.parametrize(
    ("extra", "subjects"),
    [
        (
            f"<ds:Object xmlns:ds='{DSIG_NS}'><edXML:MessageHeader xmlns:edXML='{NS}'>"
            "<edXML:Subject>Lệnh chuyển tiền khẩn</edXML:Subject></edXML:MessageHeader></ds:Object>",
            2,
        ),
        (f"<ds:Manifest xmlns:ds='{DSIG_NS}'/>", 1),
        (f"<edXML:Subject xmlns:edXML='{NS}'>Lệnh chuyển tiền khẩn</edXML:Subject>", 2),
    ],
)
def test_unsigned_content_inside_a_valid_signature_is_refused(
    document_bytes: bytes, pki: Pki, extra: str, subjects: int
) -> None:
    """The signature is subtracted from what it signs: content added inside it keeps the digest valid,
    and a recipient's //Subject would find it. Only the profile's own elements may stand there."""
    tree = _signed(document_bytes, pki)
    [signature] = find_signatures(tree.getroot())
    signature.append(etree.fromstring(extra))
    changed = _reparse(tree)
    assert len(changed.getroot().findall(f".//{{{NS}}}Subject")) == subjects  # what a reader would see
    with pytest.raises(SignatureError, match="inside ds:Signature is refused"):
        verify_tree(changed, _trust(pki))
    # The same signature without the addition verifies: the refusal is about the addition.
    signature.remove(signature[-1])
    verify_tree(_reparse(tree), _trust(pki))


@pytest.mark.parametrize(
    ("where", "extra"),
    [
        ("KeyInfo", f"<ds:SignedInfo xmlns:ds='{DSIG_NS}'><ds:Reference URI=''/></ds:SignedInfo>"),
        ("Signature", f"<ds:SignatureValue xmlns:ds='{DSIG_NS}'>AAAA</ds:SignatureValue>"),
        ("KeyInfo/X509Data", f"<ds:DigestValue xmlns:ds='{DSIG_NS}'>AAAA</ds:DigestValue>"),
    ],
)
def test_profile_elements_out_of_place_or_twice_are_refused(
    document_bytes: bytes, pki: Pki, where: str, extra: str
) -> None:
    """A decoy SignedInfo or DigestValue a recipient's //ds:DigestValue would find first."""
    tree = _signed(document_bytes, pki)
    [signature] = find_signatures(tree.getroot())
    path = "/".join(f"{{{DSIG_NS}}}{step}" for step in where.split("/"))
    holder = signature if where == "Signature" else signature.find(path)
    assert holder is not None
    holder.append(etree.fromstring(extra))
    with pytest.raises(SignatureError, match="inside ds:Signature is refused"):
        verify_tree(_reparse(tree), _trust(pki))


@pytest.mark.parametrize(
    "properties",
    [
        f"<ds:Object xmlns:ds='{DSIG_NS}'><ds:SignatureProperties><ds:SignatureProperty Target='#s'>"
        "<t:SigningTime xmlns:t='urn:example:time'>2026-11-20T08:00:00Z</t:SigningTime>"
        "</ds:SignatureProperty></ds:SignatureProperties></ds:Object>",
        f"<ds:Object xmlns:ds='{DSIG_NS}'><x:QualifyingProperties xmlns:x='http://uri.etsi.org/01903/v1.3.2#'>"
        "<x:SignedProperties><x:SignedSignatureProperties><x:SigningTime>2026-11-20T08:00:00Z"
        "</x:SigningTime></x:SignedSignatureProperties></x:SignedProperties></x:QualifyingProperties>"
        "</ds:Object>",
    ],
    ids=["SignatureProperties", "XAdES"],
)
def test_signing_properties_in_a_ds_object_are_expected_content(
    document_bytes: bytes, pki: Pki, properties: str
) -> None:
    """Signing tools put the signing time there; only edXML content inside would be a second reading."""
    tree = _signed(document_bytes, pki)
    [signature] = find_signatures(tree.getroot())
    signature.append(etree.fromstring(properties))
    verify_tree(_reparse(tree), _trust(pki))
    leaf = next(e for e in signature.iter() if etree.QName(e).localname == "SigningTime")
    leaf.append(etree.fromstring(f"<edXML:Subject xmlns:edXML='{NS}'>Lệnh chuyển tiền khẩn</edXML:Subject>"))
    with pytest.raises(SignatureError, match="edXML content in signing properties"):
        verify_tree(_reparse(tree), _trust(pki))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("<!-- trước -->\n".encode(), b""),
        (b"", b"\n<?xml-stylesheet type='text/xsl' href='https://evil.example/x.xsl'?>"),
        (b"<?xml-stylesheet type='text/xsl' href='https://evil.example/x.xsl'?>\n", b""),
    ],
    ids=["comment-before-root", "pi-after-root", "stylesheet-before-root"],
)
def test_markup_around_the_root_is_refused_by_every_verifier(
    document_bytes: bytes, pki: Pki, before: bytes, after: bytes
) -> None:
    """The bus's c14n covers the root element only; a <?xml-stylesheet?> beside it runs in a browser and
    breaks a verifier that covers the whole document (xmlsec1, URI="")."""
    signed = etree.tostring(_signed(document_bytes, pki), encoding="UTF-8")
    with pytest.raises(EnvelopeInvalidError) as caught:
        verify_tree(parse_untrusted(before + signed + after), _trust(pki))
    assert [(p.code, p.path) for p in caught.value.problems] == [("unsigned-markup", "/")]
    verify_tree(parse_untrusted(signed), _trust(pki))


def test_a_signature_that_subtracts_more_than_the_profile_is_refused(document_bytes: bytes, pki: Pki) -> None:
    """A signer-chosen XPath could leave the message header unsigned; only the profile's is accepted."""
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.ec.key, pki.ec.certificate)
    xpath = tree.find(f".//{{{FILTER2_NS}}}XPath")
    assert xpath is not None
    xpath.text = "/edXML:edXML/edXML:edXMLEnvelope/edXML:edXMLHeader/edXML:MessageHeader"
    with pytest.raises(SignatureError, match="not the bus profile's"):
        verify_tree(_reparse(tree), _trust(pki))


@pytest.mark.parametrize("uri", ["#MessageHeader", "http://127.0.0.1:9/x.xml"])
def test_reference_other_than_the_whole_document_is_refused(
    document_bytes: bytes, pki: Pki, uri: str
) -> None:
    tree = _signed(document_bytes, pki)
    reference = tree.find(f".//{_ds('SignedInfo/Reference')}")
    assert reference is not None
    reference.set("URI", uri)
    with pytest.raises(SignatureError, match="only URI"):
        verify_tree(_reparse(tree), _trust(pki))


def test_second_reference_is_refused(document_bytes: bytes, pki: Pki) -> None:
    tree = _signed(document_bytes, pki)
    signed_info = tree.find(f".//{_ds('SignedInfo')}")
    reference = tree.find(f".//{_ds('SignedInfo/Reference')}")
    assert signed_info is not None
    assert reference is not None
    signed_info.append(copy.deepcopy(reference))
    with pytest.raises(SignatureError, match="exactly one ds:Reference"):
        verify_tree(_reparse(tree), _trust(pki))


# --- SHA-1 ----------------------------------------------------------------------------------------


def _sign_sha1(data: bytes, pki: Pki) -> etree._ElementTree:
    """A correct rsa-sha1 signature of the bus profile, as a legacy sender would make it."""
    tree = parse_untrusted(data)
    root = tree.getroot()
    header = tree.find(q("edXMLEnvelope/edXMLHeader"))
    assert header is not None
    signature = signature_template(RSA_SHA1, SHA1)
    cert = signature.find(_ds("KeyInfo/X509Data"))
    assert cert is not None
    etree.SubElement(cert, f"{{{DSIG_NS}}}X509Certificate").text = base64.b64encode(
        pki.rsa.certificate.public_bytes(serialization.Encoding.DER)
    ).decode()
    header.append(signature)
    digest = hashlib.sha1(signed_bytes(root, signature, subtract=True, exclusive=True)).digest()  # noqa: S324
    signature.find(f".//{_ds('DigestValue')}").text = base64.b64encode(digest).decode()  # type: ignore[union-attr]
    signed_info = signature.find(_ds("SignedInfo"))
    canonical = etree.tostring(signed_info, method="c14n", exclusive=True)
    key = pki.rsa.key
    assert isinstance(key, rsa.RSAPrivateKey)
    value = key.sign(canonical, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    signature.find(_ds("SignatureValue")).text = base64.b64encode(value).decode()  # type: ignore[union-attr]
    return _reparse(tree)


def test_sha1_is_refused_by_default(document_bytes: bytes, pki: Pki) -> None:
    with pytest.raises(WeakAlgorithmError, match=r"SHA-1 signature from 000\.00\.00\.H99 refused"):
        verify_tree(_sign_sha1(document_bytes, pki), _trust(pki))


def test_sha1_is_accepted_only_for_the_named_legacy_sender(document_bytes: bytes, pki: Pki) -> None:
    tree = _sign_sha1(document_bytes, pki)
    with pytest.raises(WeakAlgorithmError):
        verify_tree(tree, _trust(pki), SignatureConfig(sha1_senders=frozenset({"000.00.02.H99"})))
    [result] = verify_tree(tree, _trust(pki), SignatureConfig(sha1_senders=frozenset({"000.00.00.H99"})))
    assert result.signature_method == RSA_SHA1
