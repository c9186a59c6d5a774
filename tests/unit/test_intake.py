"""The intake pipeline's decisions, on in-memory fakes of the broker and the store (core unit tests;
tests/integration/test_intake_live.py runs the same path on the real RabbitMQ and database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes
from lxml import etree

from bus.delivery import AcceptedDocument, DeliveryState, TimelineEvent
from bus.dsig import TrustStore, find_signatures, sign_tree, verify_signature, verify_tree
from bus.errors import (
    BrokerError,
    CertificateError,
    DuplicateEnvelopeError,
    EnvelopeInvalidError,
    ForgedSenderError,
    SignatureError,
    SignatureMissingError,
    UnknownDocumentError,
)
from bus.headers import BusHeaders
from bus.intake import Intake, IntakePolicy, NodeIdentity
from bus.organ_id import OrganId
from bus.pki import issue_certificate
from bus.routing import DestinationKind
from bus.settings import load_topology
from bus.topology import Topology
from bus.xmlparse import parse_untrusted
from tests.conftest import ROOT, Pki, q
from tests.factory import make_document, make_status

PROVINCE = OrganId.parse("000.00.00.H99")
NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.asyncio


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, str, BusHeaders]] = []
        self.fail = fail

    async def deliver(self, routing_key: str, body: bytes, *, message_id: str, headers: BusHeaders) -> None:
        if self.fail:
            raise BrokerError("broker did not confirm")
        self.sent.append((routing_key, body, message_id, headers))


class FakeStore:
    """The store port in memory: documents are pending until confirmed, like the real one."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[AcceptedDocument, list[tuple[str, str]], str | None]] = {}
        self.accepted: dict[str, tuple[AcceptedDocument, list[tuple[str, str]]]] = {}
        self.links: list[tuple[TimelineEvent, str]] = []
        self.business_status: list[tuple[str, Sequence[str], str]] = []
        self.delivered_sha256: dict[str, str | None] = {}

    async def begin_accept(
        self, document: AcceptedDocument, recipients: Sequence[tuple[str, str]], *, related: str | None = None
    ) -> str | None:
        for bus_id, (earlier, _) in self.accepted.items():
            if earlier.dedupe_key == document.dedupe_key:
                return bus_id
        self.pending.setdefault(document.bus_id, (document, list(recipients), related))
        return None

    async def confirm_accept(
        self,
        document: AcceptedDocument,
        recipients: Sequence[str],
        links: Sequence[tuple[TimelineEvent, str]] = (),
        *,
        business_status: tuple[str, Sequence[str], str] | None = None,
        delivered_sha256: str | None = None,
    ) -> None:
        stored, routes, _ = self.pending.pop(document.bus_id)
        self.accepted[document.bus_id] = (stored, routes)
        self.delivered_sha256[document.bus_id] = delivered_sha256
        self.links += links
        if business_status is not None:
            self.business_status.append(business_status)

    async def original(self, sender: str, document_id: str) -> tuple[str, list[str]] | None:
        for bus_id, (doc, routes) in self.accepted.items():
            if doc.kind == "document" and doc.sender == sender and doc.document_id == document_id:
                return bus_id, [recipient for recipient, _ in routes]
        return None


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "config" / "example-province.toml")


def _intake(
    topology: Topology, pki: Pki, publisher: FakePublisher, store: FakeStore, **policy: object
) -> Intake:
    node = NodeIdentity(OrganId.parse("000.00.90.H99"), pki.ec.key, pki.ec.certificate)
    return Intake(topology, node, publisher, store, IntakePolicy(**policy), clock=lambda: NOW)  # type: ignore[arg-type]


async def test_document_is_traced_signed_and_delivered_to_each_recipient(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    accepted = await _intake(topology, pki, publisher, store).accept(document_bytes, sender=PROVINCE)
    assert [d.routing_key for d in accepted.destinations] == ["org.H99.21.00.000", "org.H99.21.01.000"]
    assert [m[2] for m in publisher.sent] == [
        f"{accepted.bus_id}|000.00.21.H99",
        f"{accepted.bus_id}|000.01.21.H99",
    ]
    out = parse_untrusted(publisher.sent[0][1])
    [hop] = out.findall(q("edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader"))
    assert hop.findtext(q("OrganId")) == "000.00.90.H99"
    assert hop.findtext(q("Timestamp")) == "2026/11/23 09:00:00"
    [bus_signature] = verify_tree(out, TrustStore([pki.ca.certificate]))
    assert bus_signature.signer == pki.ec.certificate
    record, recipients = store.accepted[accepted.bus_id]
    assert recipients == [("000.00.21.H99", "local"), ("000.01.21.H99", "local")]
    assert record.code == "1234/UBND-KGVX"


async def test_each_copy_carries_who_sent_it_to_whom_and_what(
    topology: Topology, pki: Pki, document_bytes: bytes, status_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(topology, pki, publisher, store)
    document = await intake.accept(document_bytes, sender=PROVINCE)
    district = OrganId.parse("000.00.21.H99")
    status = await intake.accept(status_bytes, sender=district)
    assert [headers for _, _, _, headers in publisher.sent] == [
        BusHeaders(document.bus_id, str(PROVINCE), "000.00.21.H99", "document", document.document_id),
        BusHeaders(document.bus_id, str(PROVINCE), "000.01.21.H99", "document", document.document_id),
        # A status names the document it answers: the inbox lists it under that DocumentId.
        BusHeaders(status.bus_id, str(district), str(PROVINCE), "status", document.document_id),
    ]


async def test_forged_sender_is_refused_and_nothing_moves(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    with pytest.raises(ForgedSenderError, match=r"authenticated as 000\.00\.02\.H99"):
        await _intake(topology, pki, publisher, store).accept(
            document_bytes, sender=OrganId.parse("000.00.02.H99")
        )
    assert publisher.sent == []
    assert store.accepted == {}


async def test_invalid_envelope_is_refused_and_nothing_moves(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    publisher, store = FakePublisher(), FakeStore()
    with pytest.raises(EnvelopeInvalidError):
        await _intake(topology, pki, publisher, store).accept(
            document_bytes.replace(b"Subject>", b"Subjct>"), sender=PROVINCE
        )
    assert publisher.sent == []


async def test_duplicate_gets_the_first_bus_id(topology: Topology, pki: Pki, document_bytes: bytes) -> None:
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(topology, pki, publisher, store)
    first = await intake.accept(document_bytes, sender=PROVINCE)
    with pytest.raises(DuplicateEnvelopeError) as caught:
        await intake.accept(document_bytes, sender=PROVINCE)
    assert caught.value.bus_id == first.bus_id
    assert len(publisher.sent) == 2  # the second attempt published nothing


async def test_retry_after_a_broker_failure_reuses_the_bus_id(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    failing, store = FakePublisher(fail=True), FakeStore()
    with pytest.raises(BrokerError):
        await _intake(topology, pki, failing, store).accept(document_bytes, sender=PROVINCE)
    assert store.accepted == {}  # not accepted: the client must retry
    assert len(store.pending) == 1  # ... and its retry is published again, not called a duplicate
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, store).accept(document_bytes, sender=PROVINCE)
    again = await _intake(topology, pki, FakePublisher(), FakeStore()).accept(document_bytes, sender=PROVINCE)
    assert accepted.bus_id == again.bus_id  # derived from (sender, DocumentId, business type)


async def test_status_goes_back_to_the_documents_sender(
    topology: Topology, pki: Pki, status_bytes: bytes
) -> None:
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, FakeStore()).accept(
        status_bytes, sender=OrganId.parse("000.00.21.H99")
    )
    [destination] = accepted.destinations
    assert str(destination.addressed_to) == "000.00.00.H99"
    assert publisher.sent[0][0] == "org.H99.00.00.000"


async def test_recipient_outside_the_province_goes_outbound(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    data = document_bytes.replace(b"<edXML:OrganId>000.01.21.H99<", b"<edXML:OrganId>000.00.00.G22<")
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, FakeStore()).accept(data, sender=PROVINCE)
    assert [d.kind for d in accepted.destinations] == [DestinationKind.LOCAL, DestinationKind.OUTBOUND]
    assert publisher.sent[1][0] == "outbound"


async def test_signature_required_by_policy(topology: Topology, pki: Pki, document_bytes: bytes) -> None:
    trust = TrustStore([pki.ca.certificate])
    publisher = FakePublisher()
    intake = _intake(
        topology, pki, publisher, FakeStore(), trust=trust, signed_senders=frozenset({str(PROVINCE)})
    )
    with pytest.raises(SignatureMissingError):
        await intake.accept(document_bytes, sender=PROVINCE)
    tree = parse_untrusted(document_bytes)
    sign_tree(tree, pki.rsa.key, pki.rsa.certificate)
    signed = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    await intake.accept(signed, sender=PROVINCE)
    # The sender's signature and the bus's both verify on what the recipient receives.
    results = verify_tree(parse_untrusted(publisher.sent[0][1]), trust)
    assert [r.signer for r in results] == [pki.rsa.certificate, pki.ec.certificate]


DOCUMENT_ID = "000.00.00.H99,2026/11/20,1234/UBND-KGVX"


async def test_status_lands_on_the_documents_timeline_for_that_recipient(
    topology: Topology, pki: Pki, document_bytes: bytes, status_bytes: bytes
) -> None:
    store = FakeStore()
    document = await _intake(topology, pki, FakePublisher(), store).accept(document_bytes, sender=PROVINCE)
    status = await _intake(topology, pki, FakePublisher(), store).accept(
        status_bytes, sender=OrganId.parse("000.00.21.H99")
    )
    [(event, key)] = store.links
    assert event.bus_id == document.bus_id
    assert event.recipient == "000.00.21.H99"
    assert event.state is DeliveryState.STATUS
    assert event.detail is not None
    assert event.detail.startswith("03 ")
    assert key == f"{status.bus_id}|link"
    assert store.business_status == [(document.bus_id, ["000.00.21.H99"], "03")]
    assert store.accepted[status.bus_id][0].kind == "status"


def _status_from_sender(status_bytes: bytes, code: str) -> bytes:
    """The example status turned into one the document's own sender sends (13: take back)."""
    data = status_bytes.replace(b"<edXML:StatusCode>03<", f"<edXML:StatusCode>{code}<".encode())
    tree = parse_untrusted(data)
    tree.find(q("edXMLEnvelope/edXMLHeader/MessageHeader/From/OrganId")).text = str(PROVINCE)  # type: ignore[union-attr]
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


async def test_take_back_request_goes_to_the_documents_recipients(
    topology: Topology, pki: Pki, document_bytes: bytes, status_bytes: bytes
) -> None:
    take_back = _status_from_sender(status_bytes, "13")
    store, publisher = FakeStore(), FakePublisher()
    intake = _intake(topology, pki, publisher, store)
    with pytest.raises(UnknownDocumentError, match="never carried"):
        await intake.accept(take_back, sender=PROVINCE)  # before the document: nobody to send it to
    assert publisher.sent == []
    document = await intake.accept(document_bytes, sender=PROVINCE)
    request = await intake.accept(take_back, sender=PROVINCE)
    assert [str(d.addressed_to) for d in request.destinations] == ["000.00.21.H99", "000.01.21.H99"]
    [(event, _)] = store.links
    assert (event.bus_id, event.state) == (document.bus_id, DeliveryState.RELATED)
    assert event.detail is not None
    assert event.detail.startswith("13 ")


async def test_revocation_is_linked_to_the_document_it_revokes(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    store = FakeStore()
    intake = _intake(topology, pki, FakePublisher(), store)
    original = await intake.accept(document_bytes, sender=PROVINCE)
    revoke = f"<edXML:DocumentId>{DOCUMENT_ID}</edXML:DocumentId><edXML:BussinessDocType>1<"
    data = document_bytes.replace(b"<edXML:BussinessDocType>0<", revoke.encode()).replace(
        "Văn bản điện tử mới".encode(), "Thu hồi do ban hành nhầm".encode()
    )
    assert data != document_bytes
    revocation = await intake.accept(data, sender=PROVINCE)
    assert revocation.bus_id != original.bus_id  # same DocumentId, other business type: not a duplicate
    [(event, _)] = store.links
    assert (event.bus_id, event.state) == (original.bus_id, DeliveryState.RELATED)
    assert event.detail is not None
    assert event.detail.startswith("Thu hồi")


async def test_signature_by_another_agencys_certificate_is_forged(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    tree = parse_untrusted(document_bytes)
    finance = issue_certificate(pki.ca, "Sở Tài chính", "000.00.02.H99")  # same CA, another agency
    sign_tree(tree, finance.key, finance.certificate)
    signed = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    publisher = FakePublisher()
    intake = _intake(
        topology,
        pki,
        publisher,
        FakeStore(),
        trust=TrustStore([pki.ca.certificate]),
        signed_senders=frozenset({str(PROVINCE)}),
    )
    with pytest.raises(ForgedSenderError, match=r"signed by 000\.00\.02\.H99"):
        await intake.accept(signed, sender=PROVINCE)
    assert publisher.sent == []


async def test_an_agency_named_by_current_and_former_code_gets_one_copy(topology: Topology, pki: Pki) -> None:
    home = OrganId.parse("000.00.01.H99")
    data = make_document(str(home), ["000.03.21.H99", "000.04.21.H99", "000.00.21.H99"], 9)
    publisher = FakePublisher()
    accepted = await _intake(topology, pki, publisher, FakeStore()).accept(data, sender=home)
    assert [str(d.addressed_to) for d in accepted.destinations] == ["000.03.21.H99", "000.00.21.H99"]
    assert len(publisher.sent) == 2


async def test_status_from_an_agency_that_never_received_the_document_writes_no_timeline(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    store = FakeStore()
    intake = _intake(topology, pki, FakePublisher(), store)
    await intake.accept(document_bytes, sender=PROVINCE)
    outsider = "000.00.22.H99"  # Sơn Hòa was not addressed
    status = make_status(outsider, str(PROVINCE), DOCUMENT_ID, "06")
    accepted = await intake.accept(status, sender=OrganId.parse(outsider))
    assert [str(d.addressed_to) for d in accepted.destinations] == [str(PROVINCE)]  # still delivered
    assert store.links == []
    assert store.business_status == []


async def test_statuses_about_equal_document_ids_of_two_agencies_are_two_statuses(
    topology: Topology, pki: Pki
) -> None:
    store, publisher = FakeStore(), FakePublisher()
    district = OrganId.parse("000.00.21.H99")
    intake = _intake(topology, pki, publisher, store)
    first = await intake.accept(make_status(str(district), "000.00.01.H99", "123", "03"), sender=district)
    second = await intake.accept(make_status(str(district), "000.00.02.H99", "123", "03"), sender=district)
    assert first.bus_id != second.bus_id
    assert [m[0] for m in publisher.sent] == ["org.H99.01.00.000", "org.H99.02.00.000"]


# -- envelopes arriving from the national axis (relay in) ---------------------------------------------


def _signed_by(pki: Pki, body: bytes, uid: str) -> bytes:
    tree = parse_untrusted(body)
    signer = issue_certificate(pki.ca, f"Signer {uid or 'without UID'}", uid)
    sign_tree(tree, signer.key, signer.certificate)
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


def _from_axis(topology: Topology, pki: Pki, publisher: FakePublisher) -> Intake:
    return _intake(
        topology,
        pki,
        publisher,
        FakeStore(),
        axis_trust=TrustStore([pki.ca.certificate]),
        trusted_axes=frozenset({"000.00.90.H98"}),
    )


@pytest.mark.parametrize(
    ("sender", "signer"),
    [
        ("000.00.00.G12", "000.00.00.G12"),  # a ministry signs its own envelope
        ("000.00.01.H98", "000.00.90.H98"),  # another province's axis vouches for its agency
    ],
)
async def test_arrival_signed_by_its_sender_or_a_trusted_axis_is_delivered_locally(
    topology: Topology, pki: Pki, sender: str, signer: str
) -> None:
    body = _signed_by(pki, make_document(sender, ["000.00.21.H99", "000.00.00.G77"], 61), signer)
    publisher = FakePublisher()
    accepted = await _from_axis(topology, pki, publisher).accept_from_axis(body)
    assert [str(d.addressed_to) for d in accepted.destinations] == ["000.00.21.H99"]  # not G77: not ours
    assert [key for key, *_ in publisher.sent] == [accepted.destinations[0].routing_key]


@pytest.mark.parametrize(
    ("sender", "signer", "reason"),
    [
        ("000.00.00.G12", "000.00.90.H98", "neither the sender"),  # a peer axis outside its own body
        ("000.00.00.H98", "000.00.21.H98", "neither the sender"),  # a district signing as its province
        ("000.00.00.G12", "", "no UID"),  # a certificate that names nobody
        ("000.00.01.H99", "000.00.01.H99", "a unit of this province"),  # a local agency, from outside
        ("000.00.55.H99", "000.00.55.H99", "a unit of this province"),  # unlisted, but ours
        ("000.00.90.H99", "000.00.90.H99", "a unit of this province"),  # this very node
    ],
)
async def test_forged_arrival_is_refused_and_nothing_moves(
    topology: Topology, pki: Pki, sender: str, signer: str, reason: str
) -> None:
    body = _signed_by(pki, make_document(sender, ["000.00.21.H99"], 62), signer)
    publisher = FakePublisher()
    with pytest.raises(ForgedSenderError, match=reason):
        await _from_axis(topology, pki, publisher).accept_from_axis(body)
    assert publisher.sent == []


async def test_unsigned_arrival_is_refused_when_signatures_are_required(topology: Topology, pki: Pki) -> None:
    publisher = FakePublisher()
    with pytest.raises(SignatureMissingError):
        await _from_axis(topology, pki, publisher).accept_from_axis(
            make_document("000.00.00.G12", ["000.00.21.H99"], 63)
        )
    assert publisher.sent == []


# -- hardening (issue 10) --------------------------------------------------------------------------


def _must_sign(topology: Topology, pki: Pki, publisher: FakePublisher, **policy: object) -> Intake:
    return _intake(
        topology,
        pki,
        publisher,
        FakeStore(),
        trust=TrustStore([pki.ca.certificate]),
        signed_senders=frozenset({str(PROVINCE)}),
        **policy,
    )


async def test_must_sign_refuses_a_certificate_that_names_no_uid(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    """A trusted CA's certificate without a UID proves nothing about who signed."""
    publisher = FakePublisher()
    with pytest.raises(ForgedSenderError, match=r"names no UID"):
        await _must_sign(topology, pki, publisher).accept(
            _signed_by(pki, document_bytes, ""), sender=PROVINCE
        )
    assert publisher.sent == []


async def test_a_persons_certificate_is_accepted_where_no_signature_is_required(
    topology: Topology, pki: Pki
) -> None:
    """Vietnamese CAs put CMND/CCCD/MST in the UID of a person's certificate: that names no agency, so
    it is not a forgery; it cannot meet a "must sign" policy either."""
    finance = OrganId.parse("000.00.02.H99")
    policy = {"trust": TrustStore([pki.ca.certificate])}
    publisher = FakePublisher()
    body = _signed_by(pki, make_document(str(finance), ["000.00.21.H99"], 81), "CMND:012345678")
    await _intake(topology, pki, publisher, FakeStore(), **policy).accept(body, sender=finance)
    assert len(publisher.sent) == 1
    must = {**policy, "signed_senders": frozenset({str(finance)})}
    with pytest.raises(ForgedSenderError, match=r"names UID CMND:012345678, no OrganId"):
        await _intake(topology, pki, FakePublisher(), FakeStore(), **must).accept(body, sender=finance)


async def test_must_sign_accepts_the_pinned_certificate_even_without_a_uid(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    tree = parse_untrusted(document_bytes)
    nameless = issue_certificate(pki.ca, "Chữ ký số UBND tỉnh", "")
    sign_tree(tree, nameless.key, nameless.certificate)
    signed = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    publisher = FakePublisher()
    pinned = {str(PROVINCE): nameless.certificate.fingerprint(hashes.SHA256())}
    await _must_sign(topology, pki, publisher, pinned=pinned).accept(signed, sender=PROVINCE)
    assert len(publisher.sent) == 2
    with pytest.raises(ForgedSenderError, match=r"not 000\.00\.00\.H99's"):  # the pin, not any UID, decides
        await _must_sign(topology, pki, FakePublisher(), pinned=pinned).accept(
            _signed_by(pki, make_document(str(PROVINCE), ["000.00.21.H99"], 71), str(PROVINCE)),
            sender=PROVINCE,
        )


async def test_a_uid_naming_a_former_code_of_the_sender_is_the_sender(topology: Topology, pki: Pki) -> None:
    merged = OrganId.parse("000.03.21.H99")  # formerly 000.04.21.H99 (config/example-province.toml)
    body = _signed_by(pki, make_document(str(merged), ["000.00.21.H99"], 72), "000.04.21.H99")
    publisher = FakePublisher()
    policy = {"trust": TrustStore([pki.ca.certificate]), "signed_senders": frozenset({str(merged)})}
    await _intake(topology, pki, publisher, FakeStore(), **policy).accept(body, sender=merged)
    assert len(publisher.sent) == 1


async def test_a_signature_is_checked_even_when_the_sender_need_not_sign(
    topology: Topology, pki: Pki
) -> None:
    """The bus countersigns what it forwards: it must not vouch for a signature nobody checked."""
    finance = OrganId.parse("000.00.02.H99")  # not obliged to sign
    rogue = issue_certificate(pki.other_ca, "Sở Tài chính", str(finance))  # a CA nobody trusts
    tree = parse_untrusted(make_document(str(finance), ["000.00.21.H99"], 73))
    sign_tree(tree, rogue.key, rogue.certificate)
    body = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    publisher = FakePublisher()
    trusted = _intake(topology, pki, publisher, FakeStore(), trust=TrustStore([pki.ca.certificate]))
    with pytest.raises(CertificateError, match="does not chain to a trusted CA"):
        await trusted.accept(body, sender=finance)
    with pytest.raises(SignatureError, match=r"trusts no CA to check it against \(node\.trust\)"):
        await _intake(topology, pki, publisher, FakeStore()).accept(body, sender=finance)
    assert publisher.sent == []
    # Signed by someone else's certificate: forged, obliged to sign or not.
    with pytest.raises(ForgedSenderError, match=r"signed by 000\.00\.21\.H99"):
        await trusted.accept(
            _signed_by(pki, make_document(str(finance), ["000.00.21.H99"], 74), "000.00.21.H99"),
            sender=finance,
        )
    # Signed by itself with a trusted certificate: checked, then delivered with both signatures.
    await trusted.accept(
        _signed_by(pki, make_document(str(finance), ["000.00.21.H99"], 75), str(finance)), sender=finance
    )
    assert len(verify_tree(parse_untrusted(publisher.sent[0][1]), TrustStore([pki.ca.certificate]))) == 2


async def test_a_recipient_never_reads_what_was_not_signed(
    topology: Topology, pki: Pki, document_bytes: bytes
) -> None:
    """Exclusive c14n drops comments: 'V/v phê duyệt<!-- x --> dự án' verifies as the whole subject,
    while a reader of the element's first text node sees only 'V/v phê duyệt'."""
    subject = "V/v phê duyệt dự án"
    document = make_document(str(PROVINCE), ["000.00.21.H99"], 76, subject=subject)
    signed = _signed_by(pki, document, "000.00.00.H99")
    tampered = signed.replace("phê duyệt dự án".encode(), "phê duyệt<!-- x --> dự án".encode())
    assert tampered != signed
    # The signature value alone does not notice: that is the hole.
    tree = parse_untrusted(tampered)
    [signature] = find_signatures(tree.getroot())
    assert verify_signature(tree.getroot(), signature, TrustStore([pki.ca.certificate]))
    with pytest.raises(EnvelopeInvalidError, match=r"do not cover it"):  # every verifier refuses it
        verify_tree(tree, TrustStore([pki.ca.certificate]))
    publisher = FakePublisher()
    with pytest.raises(
        EnvelopeInvalidError, match=r"signatures \(exclusive c14n\) do not cover it"
    ) as caught:
        await _must_sign(topology, pki, publisher).accept(tampered, sender=PROVINCE)
    [problem] = caught.value.problems
    assert problem.code == "unsigned-markup"
    assert problem.path.endswith("/MessageHeader/Subject")
    assert publisher.sent == []


@pytest.mark.parametrize(
    "markup", [b"<!-- x -->", b"<?bus hide?>"], ids=["comment", "processing-instruction"]
)
async def test_comments_and_processing_instructions_are_refused_in_unsigned_envelopes_too(
    topology: Topology, pki: Pki, markup: bytes
) -> None:
    """The bus signs what it forwards with the same c14n: its own signature must not cover less than
    what the recipient reads either."""
    data = make_document(str(PROVINCE), ["000.00.21.H99"], 77)
    publisher = FakePublisher()
    with pytest.raises(EnvelopeInvalidError) as caught:
        await _intake(topology, pki, publisher, FakeStore()).accept(
            data.replace(b"</edXML:Subject>", markup + b"</edXML:Subject>"), sender=PROVINCE
        )
    assert [p.code for p in caught.value.problems] == ["unsigned-markup"]
    assert publisher.sent == []
    await _intake(topology, pki, publisher, FakeStore()).accept(data, sender=PROVINCE)  # without: fine
    assert len(publisher.sent) == 1


async def test_too_many_recipients_are_refused_before_anything_moves(topology: Topology, pki: Pki) -> None:
    home = OrganId.parse("000.00.01.H99")
    codes = [f"000.00.{i % 100:02d}.G{10 + i // 100:02d}" for i in range(11)]  # 11 ministries' units
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(topology, pki, publisher, store, max_recipients=10)
    with pytest.raises(EnvelopeInvalidError, match=r"names 11 recipients; .* at most 10") as caught:
        await intake.accept(make_document(str(home), codes, 78), sender=home)
    assert caught.value.problems[0].code == "too-many-recipients"
    assert publisher.sent == []
    assert store.pending == {}
    accepted = await intake.accept(make_document(str(home), codes[:10], 79), sender=home)
    assert len(accepted.destinations) == 10


async def test_an_unknown_code_of_this_province_is_an_error_not_an_outbound_delivery(
    topology: Topology, pki: Pki
) -> None:
    home = OrganId.parse("000.00.01.H99")
    data = make_document(str(home), ["000.00.21.H99", "000.99.21.H99", "000.00.00.G22"], 80)
    publisher, store = FakePublisher(), FakeStore()
    with pytest.raises(EnvelopeInvalidError, match=r"000\.99\.21\.H99 is a code of this province") as caught:
        await _intake(topology, pki, publisher, store).accept(data, sender=home)
    [problem] = caught.value.problems
    assert (problem.code, problem.path) == (
        "unknown-recipient",
        "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To[2]/OrganId",
    )
    assert publisher.sent == []
    assert store.pending == {}


async def test_copies_times_size_is_capped_too(topology: Topology, pki: Pki) -> None:
    home = OrganId.parse("000.00.01.H99")
    big = make_document(str(home), ["000.00.21.H99", "000.00.22.H99", "000.00.00.G12"], 82, padding=40_000)
    publisher, store = FakePublisher(), FakeStore()
    intake = _intake(topology, pki, publisher, store, max_fanout_bytes=100_000)
    refused = r"3 copies of [\d,]+ bytes .*\(intake\.max_fanout_bytes\)"
    with pytest.raises(EnvelopeInvalidError, match=refused):
        await intake.accept(big, sender=home)
    assert publisher.sent == []
    assert store.pending == {}
    small = make_document(str(home), ["000.00.21.H99", "000.00.22.H99", "000.00.00.G12"], 83)
    assert len((await intake.accept(small, sender=home)).destinations) == 3


async def test_a_national_broadcast_counts_only_this_provinces_copies(topology: Topology, pki: Pki) -> None:
    """Relay-in makes copies only for this province: a ministry writing to 600 units, two of them ours,
    is two copies here, not a refusal."""
    everyone = [f"000.00.{n % 90 + 1:02d}.H{n // 90 + 10:02d}" for n in range(598)]
    body = _signed_by(
        pki,
        make_document("000.00.00.G12", [*everyone, "000.00.21.H99", "000.01.21.H99"], 84),
        "000.00.00.G12",
    )
    publisher = FakePublisher()
    accepted = await _from_axis(topology, pki, publisher).accept_from_axis(body)
    assert [str(d.addressed_to) for d in accepted.destinations] == ["000.00.21.H99", "000.01.21.H99"]
    local = _intake(topology, pki, FakePublisher(), FakeStore(), max_recipients=500)
    with pytest.raises(EnvelopeInvalidError, match="names 600 recipients"):  # from an agency here: refused
        await local.accept(
            make_document("000.00.01.H99", [*everyone, "000.00.21.H99", "000.01.21.H99"], 85),
            sender=OrganId.parse("000.00.01.H99"),
        )
